// A real Connect client (@connectrpc/connect-node, HTTP/1.1) against the streams example served
// with `--interceptor examples.streams.server:upload_auth`, run by tests/interceptors/test_serve.py
// (it lives here to resolve tests/node/node_modules).
//
// Usage: node auth_client.mjs BASE_URL GEN_DIR
//   GEN_DIR: protoc-gen-es output (target=js) for examples/streams/v1/streams.proto
//
// Uploads 3 bytes with no token, a wrong token, the guest token and the demo token, and calls
// GetDog (unprotected) without one; prints one JSON object: {case: {code, message} | result}.

import path from "node:path";
import process from "node:process";
import { pathToFileURL } from "node:url";

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";

const CALL_TIMEOUT_MS = 10_000;

async function* chunks() {
  yield { data: new Uint8Array([1, 2, 3]) };
}

async function attempt(call) {
  try {
    return { result: await call() };
  } catch (error) {
    if (!(error instanceof ConnectError)) throw error;
    return { code: Code[error.code], message: error.rawMessage };
  }
}

async function main() {
  const [baseUrl, genDir] = process.argv.slice(2);
  const generated = path.resolve(genDir, "examples/streams/v1/streams_pb.js");
  const { StreamsService } = await import(pathToFileURL(generated).href);
  const transport = createConnectTransport({ baseUrl, httpVersion: "1.1" });
  const client = createClient(StreamsService, transport);
  const upload = (token) =>
    attempt(async () => {
      const headers = token === null ? {} : { authorization: `Bearer ${token}` };
      const summary = await client.uploadAsByteStream(chunks(), { headers, timeoutMs: CALL_TIMEOUT_MS });
      return { size: Number(summary.size) };
    });
  const result = {
    missing: await upload(null),
    wrong: await upload("not-a-token"),
    guest: await upload("guest-token"),
    demo: await upload("demo-token"),
    getDog: await attempt(async () => {
      const dog = await client.getDog({ index: 1 }, { timeoutMs: CALL_TIMEOUT_MS });
      return { name: dog.name };
    }),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`auth_client: ${error?.stack ?? error}\n`);
    process.exit(1);
  },
);
