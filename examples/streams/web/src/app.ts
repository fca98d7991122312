// The streams example's page (index.html): every card calls the service through the typed
// client `rpckit generate --ts` writes from its .proto (gen-ts/, by build.sh): REST routes,
// NDJSON and SSE streams, a durable stream resumed across reloads, uploads with progress,
// resumable downloads and two WebSocket calls, with the messages' own types. No framework:
// each section below is one card, and tells its state in data-* attributes (the browser
// tests' hooks).

import {
  StreamsServiceClient,
  type CompleteRequest,
  type Dog,
  type FileInfo,
  type Token,
} from "../gen-ts/examples/streams/v1/streams.js";
import { DurableStreamsServiceClient } from "../gen-ts/rpckit/v1/durable.js";
import { RpcError, type Interceptor, type ServerStream } from "../gen-ts/rpckit-client.js";

// One client for the page's origin; cards that watch their requests make their own.
const client = new StreamsServiceClient();

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const node = document.getElementById(id);
  if (!node) throw new Error(`no #${id} on the page`);
  return node as T;
};

// A tiny element builder: el("li", { className: "x" }, "text", child).
function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Partial<HTMLElementTagNameMap[K]> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function humanSize(bytes: number | string): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(bytes);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

// Show a state both as a pill's text and as the section's data-state (tests read the latter).
function setState(section: HTMLElement, pill: HTMLElement, state: string, label = state): void {
  section.dataset.state = state;
  pill.textContent = label;
  pill.dataset.state = state;
}

function showError(node: HTMLElement, message: string): void {
  node.textContent = message;
  node.hidden = !message;
}

// "code: message" for the server's errors (RpcError: in-band, HTTP or a lost network).
function errorText(error: unknown): string {
  if (error instanceof RpcError) return `${error.code}: ${error.rawMessage}`;
  return error instanceof Error ? error.message : String(error);
}

// Hex sha256 of a Blob or buffer; crypto.subtle only exists in secure contexts (https, localhost).
async function sha256Hex(data: Blob | ArrayBuffer): Promise<string> {
  if (!globalThis.crypto?.subtle) return "(sha256 needs https or localhost)";
  const buffer = data instanceof Blob ? await data.arrayBuffer() : data;
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// 1. Text stream: client.textStream() yields rpckit.v1.Text items as the NDJSON lines arrive.

function setupTextStream(): void {
  const section = $("text");
  const pill = $("text-status");
  const list = $("text-items");
  const startButton = $<HTMLButtonElement>("text-start");
  const stopButton = $<HTMLButtonElement>("text-stop");
  let controller: AbortController | null = null;

  startButton.addEventListener("click", async () => {
    const current = new AbortController();
    controller = current;
    list.replaceChildren();
    startButton.disabled = true;
    stopButton.disabled = false;
    setState(section, pill, "running");
    try {
      const intervalMs = Number($<HTMLInputElement>("text-interval").value) || 300;
      for await (const item of client.textStream({ intervalMs }, { signal: current.signal })) {
        if (item.text) list.append(el("li", {}, item.text));
        list.scrollTop = list.scrollHeight;
      }
      setState(section, pill, "done", "ended");
    } catch (error) {
      // Stop aborts the request (the client throws `canceled`): the server's producer ends.
      if (current.signal.aborted) setState(section, pill, "stopped");
      else setState(section, pill, "error", `error: ${errorText(error)}`);
    } finally {
      startButton.disabled = false;
      stopButton.disabled = true;
    }
  });

  stopButton.addEventListener("click", () => controller?.abort());
}

// ---------------------------------------------------------------------------------------------
// 2. JSON stream: typed Dog items; the server's in-band {"error": ...} line throws RpcError.

// The items of an NDJSON body, parsed by the generated client's stream reader (a line may be
// split across chunks, a character across two). For the browser tests.
export async function* ndjson(body: ReadableStream<Uint8Array>): AsyncGenerator<unknown, void, undefined> {
  const headers = { "content-type": "application/x-ndjson" };
  const offline = new StreamsServiceClient({
    baseUrl: "http://ndjson.invalid",
    fetch: async () => new Response(body, { headers }),
  });
  yield* offline.jsonStream({});
}

// A little dog face drawn in SVG (no emoji font needed), tinted differently per dog.
function dogFace(n: number): HTMLElement {
  const face = el("span", { className: "face" });
  face.style.setProperty("--hue", String((n * 47 + 20) % 360));
  face.innerHTML = `<svg viewBox="0 0 40 40" aria-hidden="true">
    <ellipse class="ear" cx="9" cy="15" rx="6" ry="10" transform="rotate(25 9 15)"/>
    <ellipse class="ear" cx="31" cy="15" rx="6" ry="10" transform="rotate(-25 31 15)"/>
    <circle class="head" cx="20" cy="22" r="13"/>
    <ellipse class="muzzle" cx="20" cy="28" rx="7.5" ry="5.5"/>
    <circle class="eye" cx="15" cy="20" r="1.8"/><circle class="eye" cx="25" cy="20" r="1.8"/>
    <ellipse class="eye" cx="20" cy="25.5" rx="2.6" ry="1.8"/>
  </svg>`;
  return face;
}

function dogCard(dog: Dog): HTMLElement {
  const n = Number(dog.name?.match(/\d+/)?.[0] ?? 0);
  return el(
    "li",
    { className: "dog" },
    dogFace(n),
    el("strong", { className: "dog-name" }, dog.name ?? "?"),
    el("span", { className: "muted" }, `age ${dog.age ?? 0}`), // proto3 JSON omits zeros
  );
}

function setupDogs(): void {
  const section = $("dogs");
  const pill = $("dogs-status");
  const list = $("dogs-list");
  const errorNode = $("dogs-error");
  const button = $<HTMLButtonElement>("dogs-start");

  button.addEventListener("click", async () => {
    list.replaceChildren();
    showError(errorNode, "");
    button.disabled = true;
    setState(section, pill, "running");
    try {
      const intervalMs = Number($<HTMLInputElement>("dogs-interval").value) || 0;
      for await (const dog of client.jsonStream({ intervalMs })) list.append(dogCard(dog));
      setState(section, pill, "done", `${list.children.length} dogs`);
    } catch (error) {
      showError(errorNode, errorText(error));
      setState(section, pill, "error");
    } finally {
      button.disabled = false;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// 3. Server-sent events: the same stream with framing "sse". When the connection drops (or
// the server says `unavailable`: it is going away), the card reconnects as EventSource would,
// asking for the next number (`start`), so nothing is shown twice or skipped.

const SSE_RETRY_MS = 1000;

function setupSse(): void {
  const section = $("sse");
  const pill = $("sse-status");
  const list = $("sse-events");
  const badge = $("sse-reconnects");
  const errorNode = $("sse-error");
  const startButton = $<HTMLButtonElement>("sse-start");
  const stopButton = $<HTMLButtonElement>("sse-stop");
  let controller: AbortController | null = null; // the current connection's
  let timer: ReturnType<typeof setTimeout> | undefined;
  let lastId: number | null = null;
  let dropped = false; // the connection broke since it was last open
  let reconnects = 0;

  const countReconnect = () => {
    reconnects += 1;
    section.dataset.reconnects = String(reconnects);
    badge.querySelector("b")!.textContent = String(reconnects);
    badge.hidden = false;
  };

  const close = (state: string) => {
    clearTimeout(timer);
    controller?.abort();
    controller = null;
    setState(section, pill, state);
    startButton.disabled = false;
    stopButton.disabled = true;
  };

  const open = async () => {
    const current = new AbortController();
    controller = current;
    const intervalMs = Number($<HTMLInputElement>("sse-interval").value) || 500;
    // Event N carries "Hello, world! N" and id N: from `start` on, ids count up by one.
    const start = lastId === null ? 0 : lastId + 1;
    const stream = client.textStream({ intervalMs, start }, { framing: "sse", signal: current.signal });
    setState(section, pill, dropped ? "reconnecting" : "connecting");
    void stream.headers.then(() => {
      if (current !== controller) return;
      if (dropped) countReconnect();
      dropped = false;
      setState(section, pill, "open");
    });
    try {
      for await (const event of stream) {
        if (current !== controller) return;
        const id = lastId === null ? start : lastId + 1;
        const item = el("li", {}, el("span", { className: "id" }, `#${id}`), event.text ?? "");
        item.dataset.id = String(id);
        lastId = id;
        list.append(item);
        while (list.children.length > 500) list.firstElementChild!.remove();
        list.scrollTop = list.scrollHeight;
      }
      // The stream's clean end (`event: end`).
      if (current === controller) close("ended");
    } catch (error) {
      if (current !== controller) return; // closed, or replaced by a newer connection
      if (error instanceof RpcError && error.code === "unavailable") {
        // A lost connection, a server going away (restarting) or one not back yet.
        dropped = true;
        setState(section, pill, "reconnecting");
        timer = setTimeout(() => current === controller && void open(), SSE_RETRY_MS);
        return;
      }
      showError(errorNode, errorText(error));
      close("error");
    }
  };

  startButton.addEventListener("click", () => {
    list.replaceChildren();
    showError(errorNode, "");
    lastId = null;
    dropped = false;
    reconnects = 0;
    section.dataset.reconnects = "0";
    badge.hidden = true;
    startButton.disabled = true;
    stopButton.disabled = false;
    void open();
  });

  stopButton.addEventListener("click", () => close("closed"));
}

// ---------------------------------------------------------------------------------------------
// D1. Durable completion: one generation, produced once into a stream log on the server; this
// page is a reader of that log from an offset, so a reload or a dead instance loses nothing.
// The generated client reads the stream's id from `rpckit-stream-id`, counts the tokens, and
// after a broken connection asks again with ?stream=<id>&offset=<count> by itself; the card
// keeps {stream, offset} in sessionStorage and, after a reload, reads the same stream again
// with the client's `resume` option.

// sessionStorage key of the unfinished stream: {"stream": id, "offset": tokens received}.
const COMPLETE_KEY = "rpckit-example-complete";
// Resumes in a row, the client's own and the card's, before the card gives up.
const COMPLETE_RETRIES = 5;

// An `unavailable` that ends the stream for good: its producer was lost (the instance running
// the handler died: its lease expired) or shut down. Any other `unavailable` is a moment's
// trouble of the instance reading for us (shutting down, its log unreachable): resume elsewhere.
const STREAM_LOST = /producer lost|producing server/;

interface Reading {
  controller: AbortController;
  stream: ServerStream<Token>;
  requests: number; // how many times the client has asked (more than once: it resumed)
}

function setupComplete(): void {
  const section = $("complete");
  const pill = $("complete-status");
  const output = $("complete-output");
  const info = $("complete-info");
  const errorNode = $("complete-error");
  const startButton = $<HTMLButtonElement>("complete-start");
  const stopButton = $<HTMLButtonElement>("complete-stop");
  const tokensInput = $<HTMLInputElement>("complete-tokens");
  const intervalInput = $<HTMLInputElement>("complete-interval");

  // ?tokens=N&interval_ms=M on the page's URL preset the card's inputs.
  const params = new URLSearchParams(location.search);
  if (params.has("tokens")) tokensInput.value = params.get("tokens")!;
  if (params.has("interval_ms")) intervalInput.value = params.get("interval_ms")!;

  let reading: Reading | null = null; // the stream being read, if any
  let stream: string | null = null; // the stream's id (rpckit-stream-id)
  let offset = 0; // how many of its tokens this page has
  let generation = "";
  let retries = 0;
  let reconnects = 0; // connections opened again after a drop (the client's or the card's)
  let resumes = 0; // the card's own, after an `unavailable` that was not the stream's end
  let gaps = 0; // tokens whose index was not the next one (a gap or a duplicate): stays 0
  let dropped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;

  const data = (name: string, value: string | number | boolean) => {
    section.dataset[name] = String(value);
  };
  const save = () => sessionStorage.setItem(COMPLETE_KEY, JSON.stringify({ stream, offset }));
  const forget = () => sessionStorage.removeItem(COMPLETE_KEY);
  const showInfo = () => {
    const parts = [`stream ${stream}`, `offset ${offset}`];
    if (generation) parts.push(`generation ${generation}`);
    info.textContent = stream ? parts.join(" · ") : "";
  };
  const streaming = () =>
    setState(section, pill, "running", section.dataset.resumed === "true" ? "resumed" : "streaming");

  // Sees every request of the card's streams: a second one of the same stream is the client
  // resuming it after a broken connection.
  const watch: Interceptor = async (request, next) => {
    const current = reading;
    if (current && current.requests++ > 0) {
      dropped = true;
      setState(section, pill, "reconnecting");
    }
    const response = await next(request);
    if (response.ok && current && current === reading) {
      if (dropped) data("reconnects", ++reconnects);
      dropped = false;
      streaming();
    }
    return response;
  };
  const completer = new StreamsServiceClient({ interceptors: [watch] });
  const streams = new DurableStreamsServiceClient();

  const reset = () => {
    output.replaceChildren();
    showError(errorNode, "");
    offset = 0;
    generation = "";
    gaps = 0;
    retries = 0;
    data("tokens", 0);
    data("offset", 0);
    data("gaps", 0);
    data("generation", "");
    delete section.dataset.error;
  };

  // Stops reading (the current request is aborted; its end is ignored).
  const leave = () => {
    const current = reading;
    reading = null;
    current?.controller.abort();
  };

  const finish = (state: string, label: string) => {
    clearTimeout(timer);
    leave();
    forget();
    setState(section, pill, state, label);
    startButton.disabled = false;
    stopButton.disabled = true;
  };

  // After a reading instance's trouble: read on from our offset (through whichever instance
  // gets the request), after a pause that grows with each try.
  const retry = (why: string) => {
    leave();
    dropped = true;
    if (!stream || retries >= COMPLETE_RETRIES) {
      showError(errorNode, why);
      finish("error", "error");
      return;
    }
    retries += 1;
    setState(section, pill, "reconnecting");
    clearTimeout(timer);
    const from = { streamId: stream, offset };
    timer = setTimeout(() => open({}, from), 1000 * retries);
  };

  const render = (token: Token) => {
    const index = token.index ?? 0; // proto3 JSON leaves out zeros
    const count = output.children.length;
    const span = el("span", { className: index === count ? "tok" : "tok gap" }, token.text ?? "");
    span.dataset.index = String(index);
    span.dataset.generation = token.generation ?? "";
    if (index !== count) data("gaps", ++gaps);
    output.append(span);
    output.scrollTop = output.scrollHeight;
    generation = token.generation ?? generation;
  };

  const read = async (current: Reading) => {
    try {
      for await (const token of current.stream) {
        if (current !== reading) return;
        stream = current.stream.streamId ?? stream;
        offset = current.stream.offset;
        render(token);
        retries = 0;
        save();
        data("stream", stream ?? "");
        data("offset", offset);
        data("tokens", output.children.length);
        data("generation", generation);
        stopButton.disabled = false;
        showInfo();
      }
      // The stream's clean end (`event: end`): the generation finished.
      if (current === reading) finish("done", `done · ${output.children.length} tokens`);
    } catch (caught) {
      if (current !== reading) return; // left: aborted on purpose
      const error = caught instanceof RpcError ? caught : new RpcError("unknown", String(caught));
      if (error.code === "canceled" || (error.code as string) === "cancelled") {
        data("error", error.code);
        finish("cancelled", "cancelled");
      } else if (error.code === "unavailable" && !STREAM_LOST.test(error.rawMessage)) {
        // The reading instance's trouble (shutting down, unreachable, or the client's own
        // resumes used up): not the stream's end.
        data("resumes", ++resumes);
        retry(errorText(error));
      } else {
        data("error", error.code);
        showError(errorNode, errorText(error));
        if (error.code === "unavailable") finish("unavailable", "unavailable · producer lost");
        else finish("error", `error · ${error.code}`);
      }
    }
  };

  // Reads a new generation (`request`) or, with `resume`, an existing stream from an offset.
  const open = (request: CompleteRequest, resume?: { streamId: string; offset: number }) => {
    leave();
    const controller = new AbortController();
    const options = { framing: "sse", signal: controller.signal, maxResumes: COMPLETE_RETRIES } as const;
    const current: Reading = {
      controller,
      stream: completer.complete(request, resume ? { ...options, resume } : options),
      requests: 0,
    };
    reading = current;
    void read(current);
  };

  startButton.addEventListener("click", () => {
    forget();
    reset();
    stream = null;
    dropped = false;
    data("stream", "");
    data("resumed", false);
    $("complete-resumed").hidden = true;
    info.textContent = "";
    startButton.disabled = true;
    stopButton.disabled = true; // until the first token names the stream
    setState(section, pill, "connecting");
    open({
      prompt: $<HTMLInputElement>("complete-prompt").value,
      tokens: Number(tokensInput.value) || 60,
      intervalMs: Number(intervalInput.value) || 150,
    });
  });

  // Stop cancels the generation itself (DurableStreamsService.CancelStream, from whichever
  // instance gets the request); the reader then gets the stream's end: `canceled`.
  stopButton.addEventListener("click", async () => {
    if (!stream) return;
    stopButton.disabled = true;
    try {
      await streams.cancelStream({ id: stream });
      if (!reading) finish("cancelled", "cancelled"); // nobody reading: no end to wait for
    } catch (error) {
      showError(errorNode, `stop: ${errorText(error)}`);
      stopButton.disabled = false;
    }
  });

  // An unfinished stream from before a reload: read it again from its start (offset 0 renders
  // the whole text), the same generation going on, not a new one.
  let saved: { stream?: string } | null = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(COMPLETE_KEY) ?? "null");
  } catch {
    forget();
  }
  if (saved?.stream) {
    stream = saved.stream;
    reset();
    data("stream", stream);
    data("resumed", true);
    $("complete-resumed").hidden = false;
    startButton.disabled = true;
    stopButton.disabled = false;
    setState(section, pill, "connecting", "resuming");
    showInfo();
    open({}, { streamId: stream, offset: 0 });
  }
}

// ---------------------------------------------------------------------------------------------
// 4. Upload: client.uploadFileAsFileStream(file) sends the file as the raw body, its name and
// size in headers, with XMLHttpRequest's upload progress (fetch reports none).

function setupUpload(refreshFiles: () => Promise<void>): void {
  const section = $("upload");
  const drop = $("drop");
  const input = $<HTMLInputElement>("file-input");
  const bar = $<HTMLProgressElement>("upload-progress");
  let progressEvents = 0;

  const upload = async (files: File[]) => {
    for (const file of files) {
      progressEvents = 0;
      section.dataset.progressEvents = "0";
      section.dataset.state = "running";
      showError($("upload-error"), "");
      $("upload-result").hidden = true;
      $("upload-transfer").hidden = false;
      $("upload-name").textContent = file.name;
      bar.value = 0;
      try {
        const summary = await client.uploadFileAsFileStream(file, {
          onProgress: (sent, total = file.size) => {
            progressEvents += 1;
            section.dataset.progressEvents = String(progressEvents);
            bar.value = total ? sent / total : 0;
            $("upload-numbers").textContent = `${humanSize(sent)} / ${humanSize(total)}`;
          },
        });
        const size = Number(summary.size ?? 0); // uint64: a string in JSON
        bar.value = 1;
        $("upload-filename").textContent = summary.filename ?? "";
        $("upload-size").textContent = `${humanSize(size)} (${size.toLocaleString()} bytes)`;
        $("upload-sha").textContent = summary.sha256 ?? "";
        $("upload-result").hidden = false;
        section.dataset.state = "done";
      } catch (error) {
        showError($("upload-error"), `${file.name}: ${errorText(error)}`);
        section.dataset.state = "error";
      }
      void refreshFiles();
    }
  };

  // Dragging over the zone must be "accepted" (preventDefault) for a drop to happen.
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    void upload([...(event.dataTransfer?.files ?? [])]);
  });
  input.addEventListener("change", () => {
    void upload([...(input.files ?? [])]);
    input.value = "";
  });
}

// ---------------------------------------------------------------------------------------------
// 5. Downloads: client.downloadFile() with Range/If-Range headers when the connection broke.

// The downloads card's client: no HTTP cache (a listing or a range must be fresh).
const uncached: Interceptor = (request, next) => {
  request.init.cache = "no-store";
  return next(request);
};
const files = new StreamsServiceClient({ interceptors: [uncached] });

class FatalError extends Error {}

interface Progress {
  (received: number, total: number | null, attempt: number, error?: Error): void;
}

// Downloads the file `name` into memory; retries a broken transfer up to `retries` times from
// where it stopped. onProgress(received, total, attempt) is called for every chunk.
export async function resumableDownload(
  name: string,
  { retries = 5, onProgress = (() => {}) as Progress } = {},
): Promise<{ blob: Blob; attempts: number }> {
  let chunks: Uint8Array[] = [];
  let received = 0;
  let total: number | null = null;
  let etag: string | null = null;
  let type = "application/octet-stream";

  for (let attempt = 1; ; attempt += 1) {
    try {
      const headers: Record<string, string> = {};
      if (received > 0) {
        headers["Range"] = `bytes=${received}-`;
        if (etag) headers["If-Range"] = etag; // only resume the very same file
      }
      // An error status throws RpcError (with its HTTP status): the server's answer, final.
      const download = await files.downloadFile({ name }, { headers });
      const response = download.response;
      if (received > 0 && response.status === 200) {
        chunks = []; // the file changed (If-Range failed): the server sent all of it again
        received = 0;
      } else if (received > 0 && response.status !== 206) {
        throw new FatalError(`HTTP ${response.status} to a range request`);
      }
      etag = response.headers.get("ETag") ?? etag;
      type = download.contentType;
      const range = response.headers.get("Content-Range")?.match(/\/(\d+)$/);
      total = range ? Number(range[1]) : (download.size ?? total);

      const reader = download.body.getReader();
      for (;;) {
        const { done, value } = await reader.read(); // rejects when the connection breaks
        if (done) break;
        chunks.push(value);
        received += value.length;
        onProgress(received, total, attempt);
      }
      if (total !== null && received < total) throw new Error("connection closed early");
      return { blob: new Blob(chunks, { type }), attempts: attempt };
    } catch (error) {
      const final = error instanceof FatalError || (error instanceof RpcError && error.status !== undefined);
      if (final || attempt > retries) throw error;
      onProgress(received, total, attempt, error instanceof Error ? error : new Error(String(error)));
      await sleep(Math.min(250 * 2 ** (attempt - 1), 4000)); // back off a little
    }
  }
}

function fileRow(file: FileInfo): HTMLTableRowElement {
  const name = file.name ?? "";
  const url = `/api/files/${encodeURIComponent(name)}`;
  const bar = el("progress", { max: 1, value: 0 });
  const status = el("span", { className: "muted status" });
  const result = el("div", { className: "download-result" });
  const button = el("button", { className: "primary small" }, "Resumable");
  const row = el(
    "tr",
    {},
    el("td", { className: "name" }, name),
    el("td", { className: "num-col" }, humanSize(file.size ?? 0)),
    el("td", {}, el("div", { className: "download" }, button, bar, status), result),
    el("td", {}, el("a", { href: url, download: name }, "Plain link")),
  );
  row.dataset.name = name;
  row.dataset.size = String(file.size ?? 0);
  row.dataset.state = "idle";

  button.addEventListener("click", async () => {
    button.disabled = true;
    row.dataset.state = "running";
    result.replaceChildren();
    try {
      const { blob, attempts } = await resumableDownload(name, {
        onProgress: (received, total, attempt, error) => {
          row.dataset.attempts = String(attempt);
          row.dataset.received = String(received);
          if (error) row.dataset.lastError = error.message;
          bar.value = total ? received / total : 0;
          const note = error ? " · interrupted, resuming…" : attempt > 1 ? ` · attempt ${attempt}` : "";
          status.textContent = `${humanSize(received)}${total ? ` / ${humanSize(total)}` : ""}${note}`;
        },
      });
      const sha = await sha256Hex(blob);
      const link = el("a", { href: URL.createObjectURL(blob), download: name }, `Save ${name}`);
      const tries = attempts > 1 ? ` after ${attempts} attempts` : "";
      status.textContent = `${humanSize(blob.size)} received${tries}`;
      result.append(link, el("code", { className: "sha" }, sha));
      row.dataset.attempts = String(attempts);
      row.dataset.state = "done";
    } catch (error) {
      status.textContent = `failed: ${errorText(error)}`;
      row.dataset.state = "error";
    } finally {
      button.disabled = false;
    }
  });
  return row;
}

function setupDownloads(): () => Promise<void> {
  const section = $("downloads");
  const body = $("files-list");

  const refresh = async () => {
    section.dataset.state = "loading";
    try {
      const { files: listed = [] } = await files.listFiles({}); // sizes: uint64, strings
      // Keep the rows of unchanged files, so a download in progress keeps its row.
      const rows = new Map(
        [...body.children].map((row) => {
          const { name, size } = (row as HTMLElement).dataset;
          return [`${name}:${size}`, row];
        }),
      );
      body.replaceChildren(...listed.map((f) => rows.get(`${f.name}:${f.size ?? 0}`) ?? fileRow(f)));
      const bytes = listed.reduce((sum, f) => sum + Number(f.size ?? 0), 0);
      $("files-summary").textContent = `${listed.length} files · ${humanSize(bytes)}`;
      section.dataset.state = "ready";
    } catch (error) {
      $("files-summary").textContent = `could not list files: ${errorText(error)}`;
      section.dataset.state = "error";
    }
  };

  $("files-refresh").addEventListener("click", () => void refresh());
  void refresh();
  return refresh;
}

// ---------------------------------------------------------------------------------------------
// W1. Chat: a bidi call over one WebSocket (client.chat(): send(), close(), for await).

function line(list: HTMLElement, text: string, who: string): void {
  const item = el("li", { className: who }, text);
  list.append(item);
  item.scrollIntoView({ block: "nearest" });
}

function setupChat(): void {
  const section = $("chat");
  const log = $("chat-log");
  const openButton = $<HTMLButtonElement>("chat-open");
  const closeButton = $<HTMLButtonElement>("chat-close");
  const sendButton = $<HTMLButtonElement>("chat-send");
  const input = $<HTMLInputElement>("chat-input");
  let chat: ReturnType<StreamsServiceClient["chat"]> | null = null;

  openButton.addEventListener("click", async () => {
    const current = client.chat();
    chat = current;
    section.dataset.state = "open";
    openButton.disabled = true;
    closeButton.disabled = false;
    sendButton.disabled = false;
    try {
      for await (const reply of current) line(log, reply.text ?? "", "server");
      section.dataset.state = "closed";
    } catch (error) {
      const canceled = error instanceof RpcError && error.code === "canceled";
      section.dataset.state = canceled ? "closed" : "error";
      if (!canceled) line(log, errorText(error), "error");
    } finally {
      chat = null;
      openButton.disabled = false;
      closeButton.disabled = true;
      sendButton.disabled = true;
    }
  });
  closeButton.addEventListener("click", () => void chat?.close()); // half-close
  $("chat-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value;
    if (!chat) return;
    input.value = "";
    line(log, text, "me");
    await chat.send({ text });
  });
}

// ---------------------------------------------------------------------------------------------
// W2. Upload with server progress: bidi, rpckit.v1.Bytes chunks in, UploadProgress out.

const CHUNK = 64 * 1024;

// bytes in proto3 JSON: base64.
function base64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function setupProgressUpload(): void {
  const section = $("wsupload");
  const bar = $<HTMLProgressElement>("wsupload-bar");
  const status = $("wsupload-status");
  const sha = $("wsupload-sha256");
  $("wsupload-start").addEventListener("click", async () => {
    const file = $<HTMLInputElement>("wsupload-file").files?.[0];
    if (!file) return;
    section.dataset.state = "running";
    section.dataset.reports = "0";
    sha.textContent = "";
    bar.max = file.size;
    bar.value = 0;
    // The example's demo token: examples/streams/run.sh guards both uploads with upload_auth.
    const upload = client.uploadWithProgress({ headers: { authorization: "Bearer demo-token" } });
    const sending = (async () => {
      for (let offset = 0; offset < file.size; offset += CHUNK) {
        const chunk = new Uint8Array(await file.slice(offset, offset + CHUNK).arrayBuffer());
        await upload.send({ data: base64(chunk) });
      }
      await upload.close();
    })();
    sending.catch(() => undefined); // its failure is the call's: the loop below reports it
    try {
      for await (const report of upload) {
        const received = Number(report.received ?? 0); // uint64: a string in JSON
        bar.value = received;
        section.dataset.reports = String(Number(section.dataset.reports) + 1);
        section.dataset.received = String(received);
        status.textContent = `server has ${received} of ${file.size} bytes`;
        if (report.sha256) sha.textContent = report.sha256;
      }
      await sending;
      section.dataset.state = "done";
    } catch (error) {
      status.textContent = errorText(error);
      section.dataset.state = "error";
    }
  });
}

// ---------------------------------------------------------------------------------------------

setupTextStream();
setupDogs();
setupSse();
setupComplete();
setupUpload(setupDownloads());
setupChat();
setupProgressUpload();
document.body.dataset.ready = "true";
document.body.dataset.wsReady = "true";

// The helpers, for anyone who wants them elsewhere (and for the browser tests).
export { sha256Hex };
