// A real @grpc/grpc-js client for the streams example, run by tests/grpc/test_node_client.py.
//
// Usage: node grpc_client.mjs ADDRESS INCLUDE_DIR...
//   ADDRESS      host:port of the server (insecure)
//   INCLUDE_DIR  proto include dirs: the repo's protos/, googleapis-common-protos' site dir,
//                grpc_tools/_proto (google/protobuf/*.proto)
//
// Calls TextStream, JsonStream, UploadAsByteStream and GetDog, checks every item, prints one
// JSON object with what it saw on stdout, and exits non-zero with a message on any mismatch.

import { createHash } from "node:crypto";
import process from "node:process";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const CALL_TIMEOUT_MS = 10_000;
const UPLOAD_SIZE = 1024 * 1024;
const CHUNK_SIZE = 64 * 1024;
const FILENAME = "node.bin";

class Mismatch extends Error {}

function check(condition, message) {
  if (!condition) throw new Mismatch(message);
}

function deadline() {
  return new Date(Date.now() + CALL_TIMEOUT_MS);
}

/** 1 MiB of deterministic bytes: sha256("rpckit-node:" + i) for i = 0, 1, ... concatenated. */
export function payload(size = UPLOAD_SIZE) {
  const blocks = [];
  for (let i = 0; i * 32 < size; i++) {
    blocks.push(createHash("sha256").update(`rpckit-node:${i}`).digest());
  }
  return Buffer.concat(blocks).subarray(0, size);
}

function loadClient(address, includeDirs) {
  const definition = protoLoader.loadSync("examples/streams/v1/streams.proto", {
    keepCase: false,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs,
  });
  const proto = grpc.loadPackageDefinition(definition);
  const Service = proto.examples.streams.v1.StreamsService;
  check(typeof Service === "function", "examples.streams.v1.StreamsService not loaded");
  return new Service(address, grpc.credentials.createInsecure());
}

/** TextStream from 5: read exactly 5 items, then cancel; the call must end CANCELLED. */
function textStream(client) {
  return new Promise((resolve, reject) => {
    const texts = [];
    let cancelled = false;
    let settled = false;
    const finish = (error, value) => {
      if (settled) return;
      settled = true;
      if (error) reject(error);
      else resolve(value);
    };
    const call = client.textStream({ start: 5, intervalMs: 10 }, { deadline: deadline() });
    call.on("data", (item) => {
      if (cancelled) return; // items already in flight when we cancelled
      texts.push(item.text);
      if (texts.length === 5) {
        cancelled = true;
        call.cancel();
      }
    });
    call.on("error", (error) => {
      if (!cancelled) {
        finish(new Mismatch(`TextStream failed before 5 items: ${error.code} ${error.details}`));
        return;
      }
      if (error.code !== grpc.status.CANCELLED) {
        finish(
          new Mismatch(
            `TextStream cancel gave code ${error.code} (${error.details}), want CANCELLED (1)`,
          ),
        );
        return;
      }
      finish(null, { texts, cancelCode: error.code, cancelDetails: error.details });
    });
    call.on("status", (status) => {
      if (status.code === grpc.status.OK) {
        finish(new Mismatch(`TextStream ended OK after ${texts.length} items; it never ends`));
      }
    });
  }).then((result) => {
    const want = [5, 6, 7, 8, 9].map((n) => `Hello, world! ${n}`);
    check(
      JSON.stringify(result.texts) === JSON.stringify(want),
      `TextStream items ${JSON.stringify(result.texts)}, want ${JSON.stringify(want)}`,
    );
    return result;
  });
}

/** JsonStream: exactly ten dogs in order, then OK. */
function jsonStream(client) {
  return new Promise((resolve, reject) => {
    const dogs = [];
    let ended = false;
    let ok = false;
    const call = client.jsonStream({ intervalMs: 1 }, { deadline: deadline() });
    call.on("data", (dog) => dogs.push({ name: dog.name, age: dog.age }));
    call.on("error", (error) =>
      reject(new Mismatch(`JsonStream failed: ${error.code} ${error.details}`)),
    );
    // Resolve once every item has been read ('end') and the call finished OK ('status').
    call.on("end", () => {
      ended = true;
      if (ok) resolve(dogs);
    });
    call.on("status", (status) => {
      if (status.code !== grpc.status.OK) return; // reported by 'error'
      ok = true;
      if (ended) resolve(dogs);
    });
  }).then((dogs) => {
    check(dogs.length === 10, `JsonStream sent ${dogs.length} dogs, want 10`);
    dogs.forEach((dog, i) => {
      check(
        dog.name === `Dog ${i}` && dog.age === i % 10,
        `JsonStream dog ${i} is ${JSON.stringify(dog)}, want {"name":"Dog ${i}","age":${i % 10}}`,
      );
    });
    return dogs;
  });
}

/** UploadAsByteStream: 1 MiB in 64 KiB chunks with a file name; check the summary. */
function uploadAsByteStream(client) {
  const data = payload();
  const sha256 = createHash("sha256").update(data).digest("hex");
  const metadata = new grpc.Metadata();
  metadata.set("content-disposition", `attachment; filename="${FILENAME}"`);
  return new Promise((resolve, reject) => {
    const call = client.uploadAsByteStream(metadata, { deadline: deadline() }, (error, summary) => {
      if (error) reject(new Mismatch(`UploadAsByteStream failed: ${error.code} ${error.details}`));
      else resolve(summary);
    });
    for (let offset = 0; offset < data.length; offset += CHUNK_SIZE) {
      call.write({ data: data.subarray(offset, offset + CHUNK_SIZE) });
    }
    call.end();
  }).then((summary) => {
    const size = Number(summary.size); // uint64: a string with longs: String
    check(size === UPLOAD_SIZE, `UploadAsByteStream size ${summary.size}, want ${UPLOAD_SIZE}`);
    check(
      summary.sha256 === sha256,
      `UploadAsByteStream sha256 ${summary.sha256}, want ${sha256}`,
    );
    check(
      summary.filename === FILENAME,
      `UploadAsByteStream filename ${JSON.stringify(summary.filename)}, want "${FILENAME}"`,
    );
    return { size, sha256: summary.sha256, filename: summary.filename, clientSha256: sha256 };
  });
}

function getDog(client, index) {
  return new Promise((resolve, reject) => {
    client.getDog({ index }, { deadline: deadline() }, (error, dog) => {
      if (error) reject(error);
      else resolve(dog);
    });
  });
}

/** GetDog 3 is Dog 3; GetDog 42 is NOT_FOUND. */
async function getDogs(client) {
  let dog;
  try {
    dog = await getDog(client, 3);
  } catch (error) {
    throw new Mismatch(`GetDog(3) failed: ${error.code} ${error.details}`);
  }
  check(
    dog.name === "Dog 3" && dog.age === 3,
    `GetDog(3) is ${JSON.stringify(dog)}, want {"name":"Dog 3","age":3}`,
  );
  let notFound;
  try {
    const unexpected = await getDog(client, 42);
    throw new Mismatch(`GetDog(42) returned ${JSON.stringify(unexpected)}, want NOT_FOUND`);
  } catch (error) {
    if (error instanceof Mismatch) throw error;
    notFound = { code: error.code, details: error.details };
  }
  check(
    notFound.code === grpc.status.NOT_FOUND,
    `GetDog(42) gave code ${notFound.code} (${notFound.details}), want NOT_FOUND (5)`,
  );
  return { dog: { name: dog.name, age: dog.age }, notFound };
}

async function main() {
  const [address, ...includeDirs] = process.argv.slice(2);
  if (!address || includeDirs.length === 0) {
    throw new Mismatch("usage: node grpc_client.mjs ADDRESS INCLUDE_DIR...");
  }
  const client = loadClient(address, includeDirs);
  try {
    await new Promise((resolve, reject) =>
      client.waitForReady(deadline(), (error) => (error ? reject(error) : resolve())),
    );
    const text = await textStream(client);
    const dogs = await jsonStream(client);
    const upload = await uploadAsByteStream(client);
    const { dog, notFound } = await getDogs(client);
    process.stdout.write(
      `${JSON.stringify({
        text: text.texts,
        cancel: { code: text.cancelCode, details: text.cancelDetails },
        dogs,
        upload,
        dog,
        notFound,
      })}\n`,
    );
  } finally {
    client.close();
  }
}

// A hard stop in case something is stuck outside a deadline.
const watchdog = setTimeout(() => {
  process.stderr.write("grpc_client.mjs: timed out after 50 s\n");
  process.exit(3);
}, 50_000);
watchdog.unref();

main().then(
  () => {
    process.exitCode = 0;
  },
  (error) => {
    const kind = error instanceof Mismatch ? "mismatch" : "error";
    process.stderr.write(`grpc_client.mjs: ${kind}: ${error.stack ?? error}\n`);
    process.exitCode = 1;
  },
);
