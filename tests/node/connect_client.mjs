// A real Connect client (@connectrpc/connect-node over HTTP/1.1) for the streams example, run
// by tests/http/test_connect_interop.py against `rpckit serve ... --http`.
//
// Usage: node connect_client.mjs BASE_URL GEN_DIR MODE
//   BASE_URL  http://host:port of rpckit's HTTP bridge
//   GEN_DIR   directory with the code protoc-gen-es generated (target=js) for
//             examples/streams/v1/streams.proto and its imports
//   MODE      "binary" (application/proto) or "json" (application/json)
//
// Calls GetDog (found and not_found), TextStream (reads 5 items, then aborts), JsonStream (all
// ten dogs) and UploadAsByteStream (1 MiB in 64 KiB chunks), checks every result, prints one
// JSON object with what it saw on stdout, and exits non-zero with a message on any mismatch.

import { createHash } from "node:crypto";
import path from "node:path";
import process from "node:process";
import { pathToFileURL } from "node:url";

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";

const CALL_TIMEOUT_MS = 10_000;
const WATCHDOG_MS = 60_000;
const UPLOAD_SIZE = 1024 * 1024;
const CHUNK_SIZE = 64 * 1024;
const FILENAME = "node.bin";
const TEXT_START = 5;
const TEXT_COUNT = 5;

class Mismatch extends Error {}

function check(condition, message) {
  if (!condition) throw new Mismatch(message);
}

/** 1 MiB of deterministic bytes: sha256("rpckit-node:" + i) for i = 0, 1, ... concatenated. */
export function payload(size = UPLOAD_SIZE) {
  const blocks = [];
  for (let i = 0; i * 32 < size; i++) {
    blocks.push(createHash("sha256").update(`rpckit-node:${i}`).digest());
  }
  return Buffer.concat(blocks).subarray(0, size);
}

function describe(error) {
  if (error instanceof ConnectError) {
    return { code: Code[error.code], rawMessage: error.rawMessage };
  }
  return { code: null, rawMessage: String(error?.stack ?? error) };
}

async function getDog(client) {
  const dog = await client.getDog({ index: 3 }, { timeoutMs: CALL_TIMEOUT_MS });
  check(dog.name === "Dog 3" && dog.age === 3, `GetDog(3): got ${JSON.stringify(dog)}`);
  let notFound = null;
  try {
    const unexpected = await client.getDog({ index: 42 }, { timeoutMs: CALL_TIMEOUT_MS });
    throw new Mismatch(`GetDog(42): expected NotFound, got ${JSON.stringify(unexpected)}`);
  } catch (error) {
    if (error instanceof Mismatch) throw error;
    notFound = describe(error);
    check(
      error instanceof ConnectError && error.code === Code.NotFound,
      `GetDog(42): expected ConnectError NotFound, got ${JSON.stringify(notFound)}`,
    );
  }
  return { dog: { name: dog.name, age: dog.age }, notFound };
}

/** TextStream from 5: read exactly 5 items, then abort; the call must end as Canceled. */
async function textStream(client) {
  const controller = new AbortController();
  const texts = [];
  let end = null;
  try {
    const stream = client.textStream(
      { start: TEXT_START, intervalMs: 10 },
      { signal: controller.signal, timeoutMs: CALL_TIMEOUT_MS },
    );
    for await (const item of stream) {
      texts.push(item.text);
      if (texts.length === TEXT_COUNT) controller.abort();
      check(texts.length <= TEXT_COUNT + 1, `TextStream: still reading after abort: ${texts}`);
    }
    throw new Mismatch(`TextStream: ended without an error after ${JSON.stringify(texts)}`);
  } catch (error) {
    if (error instanceof Mismatch) throw error;
    end = describe(error);
    check(
      error instanceof ConnectError && error.code === Code.Canceled,
      `TextStream: expected Canceled after abort, got ${JSON.stringify(end)}`,
    );
  }
  const wanted = Array.from({ length: TEXT_COUNT }, (_, i) => `Hello, world! ${TEXT_START + i}`);
  // An item already in flight may arrive before the abort takes effect; only count the first N.
  check(
    JSON.stringify(texts.slice(0, TEXT_COUNT)) === JSON.stringify(wanted),
    `TextStream: got ${JSON.stringify(texts)}`,
  );
  return { texts: texts.slice(0, TEXT_COUNT), end };
}

async function jsonStream(client) {
  const dogs = [];
  for await (const dog of client.jsonStream({ intervalMs: 1 }, { timeoutMs: CALL_TIMEOUT_MS })) {
    dogs.push({ name: dog.name, age: dog.age });
  }
  const wanted = Array.from({ length: 10 }, (_, i) => ({ name: `Dog ${i}`, age: i }));
  check(JSON.stringify(dogs) === JSON.stringify(wanted), `JsonStream: got ${JSON.stringify(dogs)}`);
  return dogs;
}

async function upload(client) {
  const data = payload();
  async function* chunks() {
    for (let offset = 0; offset < data.length; offset += CHUNK_SIZE) {
      yield { data: new Uint8Array(data.subarray(offset, offset + CHUNK_SIZE)) };
    }
  }
  const summary = await client.uploadAsByteStream(chunks(), {
    headers: { "content-disposition": `attachment; filename="${FILENAME}"` },
    timeoutMs: CALL_TIMEOUT_MS,
  });
  const sha256 = createHash("sha256").update(data).digest("hex");
  const result = { size: Number(summary.size), sha256: summary.sha256, filename: summary.filename };
  check(result.size === UPLOAD_SIZE, `UploadAsByteStream: size ${summary.size}`);
  check(result.sha256 === sha256, `UploadAsByteStream: sha256 ${summary.sha256} != ${sha256}`);
  check(result.filename === FILENAME, `UploadAsByteStream: filename ${summary.filename}`);
  return result;
}

async function main() {
  const [baseUrl, genDir, mode] = process.argv.slice(2);
  if (!baseUrl || !genDir || !["binary", "json"].includes(mode)) {
    throw new Mismatch("usage: node connect_client.mjs BASE_URL GEN_DIR binary|json");
  }
  const generated = path.resolve(genDir, "examples/streams/v1/streams_pb.js");
  const { StreamsService } = await import(pathToFileURL(generated).href);
  const transport = createConnectTransport({
    baseUrl,
    httpVersion: "1.1",
    useBinaryFormat: mode === "binary",
  });
  const client = createClient(StreamsService, transport);
  const result = { mode };
  let step = "GetDog";
  try {
    Object.assign(result, await getDog(client));
    step = "TextStream";
    result.textStream = await textStream(client);
    step = "JsonStream";
    result.dogs = await jsonStream(client);
    step = "UploadAsByteStream";
    result.upload = await upload(client);
  } catch (error) {
    if (error instanceof Mismatch) throw error;
    throw new Mismatch(`${step}: unexpected error ${JSON.stringify(describe(error))}`);
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

const watchdog = setTimeout(() => {
  process.stderr.write(`connect_client: watchdog: no result after ${WATCHDOG_MS} ms\n`);
  process.exit(2);
}, WATCHDOG_MS);
watchdog.unref();

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`connect_client: ${error instanceof Mismatch ? error.message : error?.stack}\n`);
    process.exit(1);
  },
);
