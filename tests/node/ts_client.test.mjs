// The generated TypeScript client (compiled by tsc) against a real `rpckit serve` of the
// streams example. Run by tests/codegen/test_typescript.py:
//   node --experimental-websocket ts_client.test.mjs <base URL> <compiled dir>
// Prints one line per check; exits non-zero on the first failure.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import net from "node:net";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [base, compiled] = process.argv.slice(2);
const load = (name) => import(pathToFileURL(path.join(compiled, name)).href);
const { StreamsServiceClient } = await load("examples/streams/v1/streams.js");
const { RpcError } = await load("rpckit-client.js");

const seen = [];
const client = new StreamsServiceClient({
  baseUrl: base,
  headers: { "x-from": "ts-client" },
  interceptors: [
    async (req, next) => {
      seen.push(`${req.method.name} ${req.init.method} ${new URL(req.url).pathname}`);
      req.init.headers.set("x-intercepted", "1");
      return next(req);
    },
  ],
});

async function check(name, body) {
  await body();
  console.log(`ok ${name}`);
}

await check("unary GetDog over REST", async () => {
  const dog = await client.getDog({ index: 3 });
  assert.deepEqual(dog, { name: "Dog 3", age: 3 });
  assert.ok(seen.includes("GetDog GET /api/dogs/3"), seen.join("; "));
});

await check("GetDog not_found is an RpcError", async () => {
  const error = await client.getDog({ index: 12 }).then(() => null, (e) => e);
  assert.ok(error instanceof RpcError, String(error));
  assert.equal(error.code, "not_found");
  assert.equal(error.status, 404);
  assert.match(error.rawMessage, /no dog 12/);
});

await check("ListFiles (unary, no request fields)", async () => {
  const list = await client.listFiles({});
  assert.ok(list.files.some((f) => f.name === "hello.txt"));
});

for (const framing of ["ndjson", "sse"]) {
  await check(`JsonStream over ${framing}`, async () => {
    const names = [];
    for await (const dog of client.jsonStream({ intervalMs: 1 }, { framing })) names.push(dog.name);
    assert.deepEqual(names, Array.from({ length: 10 }, (_, i) => `Dog ${i}`));
  });
}

await check("TextStream over SSE yields Text messages", async () => {
  const texts = [];
  for await (const item of client.textStream({ start: 5, intervalMs: 1 }, { framing: "sse" })) {
    texts.push(item.text);
    if (texts.length === 3) break;
  }
  assert.deepEqual(texts, ["Hello, world! 5", "Hello, world! 6", "Hello, world! 7"]);
});

await check("Complete (durable) resumed after a cut connection, no gap", async () => {
  // A TCP proxy that can cut every connection: the client's read fails mid-stream.
  const target = new URL(base);
  const sockets = new Set();
  const proxy = net.createServer((inbound) => {
    const outbound = net.connect(Number(target.port), target.hostname);
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
    }
    inbound.pipe(outbound);
    outbound.pipe(inbound);
  });
  await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  const via = new StreamsServiceClient({ baseUrl: `http://127.0.0.1:${proxy.address().port}` });
  try {
    for (const framing of ["ndjson", "sse"]) {
      const stream = via.complete({ prompt: `cut ${framing}`, tokens: 30, intervalMs: 20 }, { framing });
      const indexes = [];
      const generations = new Set();
      for await (const token of stream) {
        indexes.push(token.index ?? 0);
        generations.add(token.generation);
        if (indexes.length === 8) for (const s of sockets) s.destroy();
      }
      assert.deepEqual(indexes, Array.from({ length: 30 }, (_, i) => i), framing);
      assert.equal(generations.size, 1);
      assert.ok(stream.resumes >= 1, `${framing}: resumed ${stream.resumes} times`);
      assert.ok(stream.streamId, "the stream id was read from rpckit-stream-id");
      assert.equal(stream.offset, 30);
    }
  } finally {
    for (const s of sockets) s.destroy();
    proxy.close();
  }
});

await check("AdoptDogs: a client stream over NDJSON", async () => {
  async function* dogs() {
    for (let i = 1; i <= 3; i++) yield { name: `Rex ${i}`, age: i };
  }
  const summary = await client.adoptDogs(dogs());
  assert.deepEqual(summary, { count: 3, totalAge: 6, names: ["Rex 1", "Rex 2", "Rex 3"] });
  const error = await client.adoptDogs([{ age: 1 }]).then(() => null, (e) => e);
  assert.ok(error instanceof RpcError);
  assert.equal(error.code, "invalid_argument");
});

await check("UploadAsByteStream from a Blob with progress (counting stream)", async () => {
  const data = new Uint8Array(3 * 1024 * 1024).map((_, i) => (i * 7) & 0xff);
  const progress = [];
  const summary = await client.uploadAsByteStream(new Blob([data]), {
    filename: "blob ünï.bin",
    onProgress: (sent, total) => progress.push([sent, total]),
  });
  assert.equal(summary.sha256, createHash("sha256").update(data).digest("hex"));
  assert.equal(summary.size, String(data.length));
  assert.ok(progress.length > 1, `progress events: ${progress.length}`);
  assert.deepEqual(progress.at(-1), [data.length, data.length]);
});

await check("DownloadFile with name, size and progress", async () => {
  let last = 0;
  const download = await client.downloadFile({ name: "hello.txt" }, {
    onProgress: (received) => (last = received),
  });
  assert.equal(download.filename, "hello.txt");
  assert.equal(download.size, 19);
  const text = new TextDecoder().decode(await download.bytes());
  assert.equal(text, "Hello from rpckit!\n");
  assert.equal(last, 19);
  const missing = await client.downloadFile({ name: "nope.txt" }).then(() => null, (e) => e);
  assert.equal(missing?.code, "not_found");
});

await check("Chat: bidi over the WebSocket sub-protocol", async () => {
  const chat = client.chat();
  await chat.send({ text: "hello" });
  await chat.send({ text: "world" });
  await chat.close();
  const answers = [];
  for await (const message of chat) answers.push(message.text);
  assert.deepEqual(answers, ["HELLO", "WORLD"]);
});

await check("timeoutMs ends a stream with deadline_exceeded", async () => {
  const error = await (async () => {
    for await (const _ of client.jsonStream({ intervalMs: 500 }, { timeoutMs: 300 }));
  })().then(() => null, (e) => e);
  assert.equal(error?.code, "deadline_exceeded", String(error));
});

await check("abort mid-stream", async () => {
  const controller = new AbortController();
  const names = [];
  const error = await (async () => {
    for await (const dog of client.jsonStream({ intervalMs: 150 }, { signal: controller.signal })) {
      names.push(dog.name);
      if (names.length === 2) controller.abort();
    }
  })().then(() => null, (e) => e);
  assert.ok(error instanceof RpcError, String(error));
  assert.equal(error.code, "canceled");
  assert.deepEqual(names, ["Dog 0", "Dog 1"]);
});
console.log("ALL OK");
