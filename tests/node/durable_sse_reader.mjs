// A reader of an rpckit durable stream with the `eventsource` npm package (the EventSource of
// browsers, for Node): it reconnects by itself after a transport error, sending Last-Event-ID.
// Used by tests/durable/test_cluster.py. Prints one JSON object per line, each with `t` (the
// wall clock, seconds since the epoch) and `type`:
//   connect  {status, upstream, stream, offset, lastEventId}  a response arrived (X-Upstream
//            is the instance nginx routed it to)
//   item     {id, data}                                       an event without a name
//   end      {}                                               `event: end`: a clean end
//   error    {data}                                           `event: error` (the stream's end)
//   transport-error {message, code, readyState}               EventSource's own error event
//   closed / timeout                                          the reader stops
// Usage: node durable_sse_reader.mjs URL [--avoid HOST:PORT] [--seconds N]
//   --avoid: while no response has been kept, a response from that upstream is dropped and
//            asked again (up to 20 times): the reader is placed on another instance.
import { EventSource } from "eventsource";

const args = process.argv.slice(2);
const url = args[0];
let avoid = null;
let seconds = 60;
for (let i = 1; i < args.length; i += 2) {
  if (args[i] === "--avoid") avoid = args[i + 1];
  else if (args[i] === "--seconds") seconds = Number(args[i + 1]);
  else throw new Error(`unknown option ${args[i]}`);
}

const out = (fields) => process.stdout.write(`${JSON.stringify({ t: Date.now() / 1000, ...fields })}\n`);
let kept = 0;
let source;

function finish(fields) {
  out(fields);
  source?.close();
  process.exit(0);
}

async function fetchLogged(input, init) {
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(input, init);
    const upstream = response.headers.get("x-upstream");
    const last = upstream ? upstream.split(",").pop().trim() : null;
    if (avoid !== null && kept === 0 && last === avoid && attempt < 20) {
      await response.body?.cancel();
      continue;
    }
    kept += 1;
    const headers = init?.headers ?? {};
    out({
      type: "connect",
      status: response.status,
      upstream: last,
      stream: response.headers.get("rpckit-stream-id"),
      offset: response.headers.get("rpckit-stream-offset"),
      lastEventId: headers["Last-Event-ID"] ?? headers["last-event-id"] ?? null,
    });
    return response;
  }
}

source = new EventSource(url, { fetch: fetchLogged });
source.addEventListener("message", (event) => {
  out({ type: "item", id: event.lastEventId, data: JSON.parse(event.data) });
});
source.addEventListener("end", () => finish({ type: "end" }));
source.addEventListener("error", (event) => {
  if (event.data !== undefined) {
    let data = event.data;
    try {
      data = JSON.parse(data);
    } catch {}
    finish({ type: "error", data });
    return;
  }
  out({ type: "transport-error", message: event.message ?? null, code: event.code ?? null, readyState: source.readyState });
  if (source.readyState === EventSource.CLOSED) finish({ type: "closed" });
});
setTimeout(() => finish({ type: "timeout" }), seconds * 1000);
