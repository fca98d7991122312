// Reads a stream with the official Durable Streams client (`@durable-streams/client`): rpckit
// serves every durable method's stream at <durable-path>/<stream id> as a JSON-mode stream.
// Used by tests/durable/test_method_streams.py. Prints one JSON object per line:
//   item    {item, offset}           one JSON item (the method's output message)
//   closed  {offset}                 the stream ended closed (Stream-Closed)
//   up-to-date {offset}              the read ended without a close (live false)
//   error   {name, status, message}  the read failed (an error end, a lost producer)
// Usage: node durable_client_reader.mjs URL [--live sse|long-poll|false] [--offset OFFSET]
import { stream } from "@durable-streams/client";

const args = process.argv.slice(2);
const url = args[0];
let live = "sse";
let offset;
for (let i = 1; i < args.length; i += 2) {
  if (args[i] === "--live") live = args[i + 1] === "false" ? false : args[i + 1];
  else if (args[i] === "--offset") offset = args[i + 1];
  else throw new Error(`unknown option ${args[i]}`);
}

const out = (fields) => process.stdout.write(`${JSON.stringify(fields)}\n`);
const timer = setTimeout(() => {
  out({ type: "timeout" });
  process.exit(2);
}, 30_000);

try {
  const response = await stream({
    url,
    live,
    offset,
    backoffOptions: { initialDelay: 50, maxDelay: 200, multiplier: 2, maxRetries: 2 },
    onError: () => undefined, // stop and report: no retry beyond the backoff's
  });
  for await (const item of response.jsonStream()) out({ type: "item", item, offset: response.offset });
  if (response.streamClosed) out({ type: "closed", offset: response.offset });
  else out({ type: "up-to-date", offset: response.offset });
} catch (error) {
  out({ type: "error", name: error?.name, status: error?.status, message: String(error?.message ?? error) });
}
clearTimeout(timer);
process.exit(0);
