// connect.html: the streams example called from the browser through connect-web, with the
// client protoc-gen-es generated from streams.proto (build.sh puts it in ../gen). Every call
// below is a typed method of that client: no URLs, no encoding and no stream parsing here.

import { ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";

import { StreamsService } from "../gen/examples/streams/v1/streams_pb";

type Streams = Client<typeof StreamsService>;

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`connect.html has no #${id}`);
  return found as T;
}

const format = element<HTMLSelectElement>("format");
const dogIndex = element<HTMLInputElement>("dog-index");
const dogGet = element<HTMLButtonElement>("dog-get");
const dogResult = element<HTMLOutputElement>("dog-result");
const textInterval = element<HTMLInputElement>("text-interval");
const textStart = element<HTMLButtonElement>("text-start");
const textStop = element<HTMLButtonElement>("text-stop");
const textStatus = element<HTMLOutputElement>("text-status");
const textItems = element<HTMLOListElement>("text-items");
const jsonInterval = element<HTMLInputElement>("json-interval");
const jsonStart = element<HTMLButtonElement>("json-start");
const jsonStatus = element<HTMLOutputElement>("json-status");
const jsonItems = element<HTMLOListElement>("json-items");

/** A client for the format picked on the page (binary protobuf or JSON), over Connect or
 * gRPC-Web. */
function client(): Streams {
  const options = { baseUrl: location.origin, useBinaryFormat: format.value === "binary" };
  // ?protocol=grpc-web: the same calls through connect-web's gRPC-Web transport.
  const grpcWeb = new URLSearchParams(location.search).get("protocol") === "grpc-web";
  const transport = grpcWeb ? createGrpcWebTransport(options) : createConnectTransport(options);
  return createClient(StreamsService, transport);
}

/** "[not_found] no dog 42; there are 10" for a ConnectError, the message otherwise. */
function describe(error: unknown): string {
  return ConnectError.from(error).message;
}

function append(list: HTMLOListElement, text: string): void {
  const item = document.createElement("li");
  item.textContent = text;
  list.append(item);
}

function intervalMs(input: HTMLInputElement): number | undefined {
  return input.value === "" ? undefined : Math.max(0, Number(input.value));
}

// Unary: GetDog. An index of 10 or more comes back as a not_found ConnectError.
dogGet.addEventListener("click", async () => {
  dogResult.textContent = "…";
  dogResult.dataset.state = "pending";
  try {
    const dog = await client().getDog({ index: Number(dogIndex.value) });
    dogResult.textContent = `${dog.name}, age ${dog.age}`;
    dogResult.dataset.state = "ok";
  } catch (error) {
    dogResult.textContent = describe(error);
    dogResult.dataset.state = "error";
  }
});

// Server streaming: TextStream runs until Stop aborts the call.
let textAbort: AbortController | null = null;

textStart.addEventListener("click", async () => {
  textAbort?.abort();
  const abort = new AbortController();
  textAbort = abort;
  textItems.replaceChildren();
  textStart.disabled = true;
  textStop.disabled = false;
  textStatus.textContent = "streaming";
  textStatus.dataset.state = "streaming";
  try {
    const texts = client().textStream(
      { intervalMs: intervalMs(textInterval) },
      { signal: abort.signal },
    );
    for await (const item of texts) {
      append(textItems, item.text);
    }
    textStatus.textContent = "ended";
    textStatus.dataset.state = "ended";
  } catch (error) {
    const stopped = abort.signal.aborted;
    textStatus.textContent = stopped ? "stopped" : describe(error);
    textStatus.dataset.state = stopped ? "stopped" : "error";
  } finally {
    if (textAbort === abort) {
      textAbort = null;
      textStart.disabled = false;
      textStop.disabled = true;
    }
  }
});

textStop.addEventListener("click", () => textAbort?.abort());

// Server streaming: JsonStream sends all ten dogs, then ends.
jsonStart.addEventListener("click", async () => {
  jsonItems.replaceChildren();
  jsonStart.disabled = true;
  jsonStatus.textContent = "streaming";
  jsonStatus.dataset.state = "streaming";
  try {
    for await (const dog of client().jsonStream({ intervalMs: intervalMs(jsonInterval) })) {
      append(jsonItems, `${dog.name}, age ${dog.age}`);
    }
    jsonStatus.textContent = `done: ${jsonItems.children.length} dogs`;
    jsonStatus.dataset.state = "ended";
  } catch (error) {
    jsonStatus.textContent = describe(error);
    jsonStatus.dataset.state = "error";
  } finally {
    jsonStart.disabled = false;
  }
});

document.body.dataset.ready = "true";
