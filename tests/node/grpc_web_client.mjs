// A real gRPC-Web client (@connectrpc/connect-node's createGrpcWebTransport over HTTP/1.1) for
// the streams example, run by tests/http/test_grpc_web.py against `rpckit serve ... --http`.
//
// Usage: node grpc_web_client.mjs BASE_URL GEN_DIR MODE   (MODE: "binary" or "json")
//
// Calls GetDog (found; not_found with an ErrorInfo detail), TextStream (5 items, then abort),
// JsonStream (ten dogs), UploadAsByteStream (1 MiB in 64 KiB chunks: a client stream) and
// TextStream with a 300 ms deadline, Chat (bidi: answered as its request arrives), and prints one JSON object with what it saw. The Python
// test checks the values; this script only fails on errors it did not expect at all.

import { createHash } from "node:crypto";
import path from "node:path";
import process from "node:process";
import { pathToFileURL } from "node:url";

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";

const CALL_TIMEOUT_MS = 10_000;
const WATCHDOG_MS = 60_000;
const UPLOAD_SIZE = 1024 * 1024;
const CHUNK_SIZE = 64 * 1024;

function payload(size = UPLOAD_SIZE) {
  const blocks = [];
  for (let i = 0; i * 32 < size; i++) {
    blocks.push(createHash("sha256").update(`rpckit-node:${i}`).digest());
  }
  return Buffer.concat(blocks).subarray(0, size);
}

function describe(error) {
  if (!(error instanceof ConnectError)) return { code: null, rawMessage: String(error?.stack ?? error) };
  return {
    code: Code[error.code],
    rawMessage: error.rawMessage,
    details: error.details.map((d) => ({
      type: d.type ?? d.desc?.typeName,
      value: d.value ? Buffer.from(d.value).toString("base64") : null,
    })),
  };
}

async function outcome(promise) {
  try {
    return { ok: await promise };
  } catch (error) {
    return { error: describe(error) };
  }
}

async function main() {
  const [baseUrl, genDir, mode] = process.argv.slice(2);
  const generated = path.resolve(genDir, "examples/streams/v1/streams_pb.js");
  const { StreamsService } = await import(pathToFileURL(generated).href);
  const transport = createGrpcWebTransport({
    baseUrl,
    httpVersion: "1.1",
    useBinaryFormat: mode === "binary",
  });
  const client = createClient(StreamsService, transport);
  const result = { mode };
  const headers = {};
  const dog = await client.getDog(
    { index: 3 },
    { timeoutMs: CALL_TIMEOUT_MS, onHeader: (h) => (headers.type = h.get("content-type")) },
  );
  result.dog = { name: dog.name, age: dog.age };
  result.contentType = headers.type;
  result.notFound = (await outcome(client.getDog({ index: 42 }, { timeoutMs: CALL_TIMEOUT_MS }))).error;

  const controller = new AbortController();
  const texts = [];
  result.abort = (
    await outcome(
      (async () => {
        for await (const item of client.textStream(
          { start: 5, intervalMs: 10 },
          { signal: controller.signal, timeoutMs: CALL_TIMEOUT_MS },
        )) {
          texts.push(item.text);
          if (texts.length === 5) controller.abort();
        }
      })(),
    )
  ).error;
  result.texts = texts.slice(0, 5);

  const dogs = [];
  for await (const d of client.jsonStream({ intervalMs: 1 }, { timeoutMs: CALL_TIMEOUT_MS })) {
    dogs.push({ name: d.name, age: d.age });
  }
  result.dogs = dogs;

  const data = payload();
  async function* chunks() {
    for (let offset = 0; offset < data.length; offset += CHUNK_SIZE) {
      yield { data: new Uint8Array(data.subarray(offset, offset + CHUNK_SIZE)) };
    }
  }
  const summary = await client.uploadAsByteStream(chunks(), {
    headers: { "content-disposition": 'attachment; filename="grpc-web.bin"' },
    timeoutMs: CALL_TIMEOUT_MS,
  });
  result.upload = { size: Number(summary.size), sha256: summary.sha256, filename: summary.filename };

  const slow = [];
  result.deadline = (
    await outcome(
      (async () => {
        for await (const item of client.textStream({ start: 0, intervalMs: 1000 }, { timeoutMs: 300 })) {
          slow.push(item.text);
        }
      })(),
    )
  ).error;
  result.deadlineTexts = slow;
  result.bidi = (
    await outcome(
      (async () => {
        for await (const m of client.chat((async function* () { yield { text: "x" }; })(), {
          timeoutMs: CALL_TIMEOUT_MS,
        })) {
          return m.text;
        }
      })(),
    )
  );
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

const watchdog = setTimeout(() => {
  process.stderr.write(`grpc_web_client: watchdog: no result after ${WATCHDOG_MS} ms\n`);
  process.exit(2);
}, WATCHDOG_MS);
watchdog.unref();

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`grpc_web_client: ${error?.stack ?? error}\n`);
    process.exit(1);
  },
);
