// Reads the streams example's SSE routes through the client @hey-api/openapi-ts generated
// from `rpckit openapi` (tests/tools/test_openapi_heyapi.py copies this file next to it):
//   node heyapi_sse.js BASE_URL
// prints one JSON line: the tokens and dogs it read, as their generated types.
import { client } from "./client.gen.js";
import {
  examplesStreamsV1StreamsServiceComplete as complete,
  examplesStreamsV1StreamsServiceJsonStream as jsonStream,
} from "./sdk.gen.js";
import type { ExamplesStreamsV1Dog, ExamplesStreamsV1Token } from "./types.gen.js";

declare const process: { argv: string[] }; // no @types/node in tests/node
const base = process.argv[2];
client.setConfig({ baseUrl: base });
const sse = { Accept: "text/event-stream" };

// The generated stream yields every event's data; the end event's is empty.
async function items<T>(
  open: (kinds: string[]) => Promise<{ stream: AsyncGenerator<T> }>,
  most: number,
): Promise<{ items: T[]; kinds: string[] }> {
  const kinds: string[] = [];
  const { stream } = await open(kinds);
  const out: T[] = [];
  for await (const item of stream) {
    const kind = kinds[kinds.length - 1];
    if (kind === "end" || kind === "error") break;
    out.push(item);
    if (out.length === most) break;
  }
  return { items: out, kinds };
}

const tokens = await items(
  (kinds) =>
    complete({
      query: { prompt: "hello", tokens: 4, intervalMs: 1 },
      headers: sse,
      sseMaxRetryAttempts: 1,
      onSseEvent: (event) => kinds.push(event.event ?? "message"),
    }),
  100,
);
// Typed: a Token's fields, no cast (tsc --strict fails if the stream were unknown).
const words: string[] = tokens.items.map((token) => token.text ?? "");
const indexes: number[] = tokens.items.map((token) => token.index ?? 0); // proto3 omits 0

const dogs = await items(
  (kinds) =>
    jsonStream({
      query: { intervalMs: 1 },
      headers: sse,
      sseMaxRetryAttempts: 1,
      onSseEvent: (event) => kinds.push(event.event ?? "message"),
    }),
  3,
);
const typed: ExamplesStreamsV1Dog[] = dogs.items;
const names: string[] = typed.map((dog) => dog.name ?? "");
const first: ExamplesStreamsV1Token | undefined = tokens.items[0];

console.log(JSON.stringify({ words, indexes, tokenEvents: tokens.kinds, names, first }));
