// rpckit-ws.js: call rpckit methods over WebSocket from a page, without a bundler.
// Shipped with rpckit (rpckit/web/rpckit-ws.js) and served by the bridge at
// /_rpckit/rpckit-ws.js. The sub-protocol is described in rpckit's README ("WebSocket").
//
//   import { call } from "/_rpckit/rpckit-ws.js";
//   const chat = call("/examples.streams.v1.StreamsService/Chat");   // JSON by default
//   chat.send({ text: "hi" });
//   chat.end();                                  // half-close: no more requests
//   for await (const reply of chat) console.log(reply.text);
//
// Messages are plain JSON objects (the protobuf JSON mapping) by default. With connect-es /
// protoc-gen-es types, pass encode/decode, e.g. for binary protobuf:
//   call(path, { encoding: "proto", encode: (m) => toBinary(ChatMessageSchema, m),
//                decode: (b) => fromBinary(ChatMessageSchema, b) })

const PREFIX = "rpckit.v1.";
const HIGH_WATER = 256 * 1024; // bytes buffered by the socket before send() waits

/** The error a call ended with: a gRPC code name ("not_found"...), message, details, metadata. */
export class RpcError extends Error {
  constructor(code, message, details = [], metadata = {}) {
    super(message ? `[${code}] ${message}` : `[${code}]`);
    this.name = "RpcError";
    this.code = code;
    this.rawMessage = message;
    this.details = details;
    this.metadata = metadata;
  }
}

function socketUrl(path, base) {
  const url = new URL(path, base ?? globalThis.location?.href);
  url.protocol = url.protocol === "https:" ? "wss:" : url.protocol === "http:" ? "ws:" : url.protocol;
  return url.href;
}

/**
 * Start one call. `path` is "/<package>.<Service>/<Method>" (relative to the page, or to
 * options.baseUrl). Options: encoding ("json" | "proto" | another registered encoding),
 * encode/decode (message <-> bytes), headers ({name: value | [values]}), timeoutMs, signal.
 * Returns a Call: send(), end(), cancel(), async iteration over the responses, and the
 * promises headers, trailers and done (resolves on success, rejects with RpcError).
 */
export function call(path, options = {}) {
  return new Call(path, options);
}

/** Unary and client-stream helper: send the requests, half-close, resolve the one response. */
export async function unary(path, requests, options = {}) {
  const c = call(path, options);
  for (const request of Array.isArray(requests) ? requests : [requests]) await c.send(request);
  c.end();
  let result;
  for await (const message of c) result = message;
  return result;
}

export class Call {
  constructor(path, options) {
    const encoding = options.encoding ?? "json";
    const text = new TextEncoder();
    const utf8 = new TextDecoder();
    this._encode =
      options.encode ?? (encoding === "json" ? (m) => text.encode(JSON.stringify(m)) : null);
    this._decode =
      options.decode ?? (encoding === "json" ? (b) => JSON.parse(utf8.decode(b)) : null);
    if (!this._encode || !this._decode) throw new Error(`encoding ${encoding} needs encode and decode`);
    this._queue = [];
    this._waiting = null;
    this._ended = false;
    this._error = null;
    let resolveHeaders, resolveTrailers, resolveDone, rejectDone;
    this.headers = new Promise((r) => (resolveHeaders = r));
    this.trailers = new Promise((r) => (resolveTrailers = r));
    this.done = new Promise((resolve, reject) => ((resolveDone = resolve), (rejectDone = reject)));
    this.done.catch(() => {}); // observed through iteration too
    this._resolveHeaders = resolveHeaders;
    const ws = new WebSocket(socketUrl(path, options.baseUrl), [PREFIX + encoding]);
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    this._open = new Promise((resolve, reject) => {
      ws.onopen = () => {
        const start = { type: "start" };
        if (options.headers) start.headers = options.headers;
        if (options.timeoutMs != null) start.timeout_ms = Math.max(0, Math.round(options.timeoutMs));
        ws.send(JSON.stringify(start));
        resolve();
      };
      ws.onerror = () => reject(new RpcError("unavailable", "the WebSocket failed"));
    });
    this._open.catch(() => {});
    ws.onmessage = (event) => {
      if (typeof event.data !== "string") {
        this._push({ message: this._decode(new Uint8Array(event.data)) });
        return;
      }
      const frame = JSON.parse(event.data);
      if (frame.type === "headers") {
        resolveHeaders(frame.headers ?? {});
      } else if (frame.type === "end") {
        this._ended = true;
        resolveHeaders({});
        resolveTrailers(frame.trailers ?? {});
        if (frame.error) {
          const e = frame.error;
          this._finish(new RpcError(e.code, e.message ?? "", e.details ?? [], frame.trailers ?? {}));
        } else {
          this._finish(null);
        }
      }
    };
    ws.onclose = (event) => {
      if (!this._ended) {
        this._ended = true;
        this._finish(new RpcError("unavailable", `the WebSocket closed (${event.code}) before the call ended`));
      }
    };
    this._finish = (error) => {
      this._error = error;
      this._push({ end: true });
      if (error) rejectDone(error);
      else resolveDone();
    };
    if (options.signal) {
      options.signal.addEventListener("abort", () => this.cancel(), { once: true });
    }
  }

  _push(item) {
    this._queue.push(item);
    if (this._waiting) {
      const wake = this._waiting;
      this._waiting = null;
      wake();
    }
  }

  /** Send one request message; waits while the socket has much unsent data (backpressure). */
  async send(message) {
    await this._open;
    if (this._ended) throw this._error ?? new RpcError("failed_precondition", "the call has ended");
    this._ws.send(this._encode(message));
    while (this._ws.bufferedAmount > HIGH_WATER && this._ws.readyState === WebSocket.OPEN) {
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Half-close: no more requests (the server may still answer). */
  async end() {
    await this._open;
    if (this._ws.readyState === WebSocket.OPEN) this._ws.send('{"type":"end"}');
  }

  /** Cancel the call (the server's handler is cancelled); iteration then ends with "canceled". */
  cancel() {
    if (this._ended) return;
    if (this._ws.readyState === WebSocket.OPEN) this._ws.send('{"type":"cancel"}');
    this._ended = true;
    this._finish(new RpcError("canceled", "cancelled by the client"));
    this._ws.close(1000);
  }

  async *[Symbol.asyncIterator]() {
    while (true) {
      if (this._queue.length === 0) await new Promise((r) => (this._waiting = r));
      const item = this._queue.shift();
      if (item.end) {
        if (this._error) throw this._error;
        return;
      }
      yield item.message;
    }
  }
}
