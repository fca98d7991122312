"""Serves one RPC by the Connect protocol over HTTP/1.1, as a small ASGI app.

Unary calls take POST (and GET for ``NO_SIDE_EFFECTS`` methods); streams use 5-byte
envelopes and end with an end-of-stream message carrying the status and trailers.
Bidi streaming needs HTTP/2 and is answered with ``unimplemented``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl

from google.protobuf.message import Message

from rpckit.compression import Compression, negotiate
from rpckit.context import Context
from rpckit.encodings import Encoding, connect_codec
from rpckit.errors import Code, RpcError
from rpckit.http.asgi import (
    BodyWriter,
    BridgeOptions,
    ClientGone,
    Receive,
    Scope,
    Send,
    body_chunks,
    call_context,
    deadline,
    drained,
    header_list,
    read_body,
    run_until_disconnect,
    send_error,
)
from rpckit.http.connect import (
    FLAG_COMPRESSED,
    FLAG_END_STREAM,
    PROTOCOL_VERSION,
    TRAILER_PREFIX,
    EnvelopeReader,
    end_stream,
    envelope,
)
from rpckit.metadata import Metadata
from rpckit.service import Idempotency, MethodKind, MethodSpec, resolve_stream
from rpckit.streams import Event, aclose
from rpckit.wellknown import adapt_requests, encode_stream, file_headers

__all__ = ["ConnectEndpoint"]

Handler = Callable[..., Any]

log = logging.getLogger("rpckit.http")


class ConnectEndpoint:
    """The ASGI app for one method: parses the call, runs the handler, writes the answer."""

    def __init__(self, method: MethodSpec[Any, Any], handler: Handler, options: BridgeOptions):
        self.method = method
        self.handler = handler
        self.options = options

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Metadata(
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        )
        try:
            if scope["method"] == "GET":
                await self._get(scope, receive, send, headers)
            elif scope["method"] == "POST":
                await self._post(scope, receive, send, headers)
            else:
                raise _Reject(405, Code.UNIMPLEMENTED, "Connect calls use POST (or GET)")
        except _Reject as reject:
            await send_error(send, reject.status, reject.error, reject.headers)
        except ClientGone:
            return

    # --- request parsing -------------------------------------------------------------------

    def _codec(self, content_type: str | None, *, streaming: bool) -> Encoding:
        parsed = connect_codec(content_type or "")
        codec = self.options.encodings.get(parsed[0]) if parsed else None
        if parsed is None or codec is None or parsed[1] != streaming:
            prefix = "application/connect+" if streaming else "application/"
            accepted = [prefix + name for name in self.options.encodings.names()]
            raise _Reject(
                415,
                Code.UNIMPLEMENTED,
                f"unsupported content type {content_type!r}; accepted: {', '.join(accepted)}",
                [(b"accept-post", ", ".join(accepted).encode())],
            )
        return codec

    def _compression(self, name: str | None) -> Compression | None:
        if name is None or name == "identity":
            return None
        compression = self.options.compressions.get(name)
        if compression is None:
            supported = ", ".join(["identity", *self.options.compressions.names()])
            raise RpcError(
                Code.UNIMPLEMENTED, f"unsupported compression {name!r}; supported: {supported}"
            )
        return compression

    def _context(self, scope: Scope, headers: Metadata) -> Context:
        version = headers.get("connect-protocol-version")
        if version is not None and version != PROTOCOL_VERSION:
            raise RpcError(
                Code.INVALID_ARGUMENT, f"unsupported connect-protocol-version {version!r}"
            )
        if version is None and self.options.require_protocol_version:
            raise RpcError(Code.INVALID_ARGUMENT, "missing connect-protocol-version header")
        return call_context(self.method, scope, headers, "connect")

    def _decode(self, codec: Encoding, data: bytes, compression: Compression | None) -> Any:
        if compression is not None and data:
            data = compression.decompress(data, self.options.max_message_size)
        return codec.decode(data, self.method.input)

    # --- unary -----------------------------------------------------------------------------

    async def _post(self, scope: Scope, receive: Receive, send: Send, headers: Metadata) -> None:
        if self.method.kind is not MethodKind.UNARY:
            await self._stream(scope, receive, send, headers)
            return
        codec = self._codec(headers.get("content-type"), streaming=False)
        accept = headers.get("accept-encoding")
        try:
            ctx = self._context(scope, headers)
            compression = self._compression(headers.get("content-encoding"))
            body = await read_body(receive, self.options.max_message_size)
            request = self._decode(codec, body, compression)
        except RpcError as error:
            await self._unary_error(send, error, None, accept)
            return
        accept = accept or headers.get("content-encoding")
        await run_until_disconnect(
            self._unary(send, codec, ctx, request, accept), receive, ctx, self.options.drain
        )

    async def _get(self, scope: Scope, receive: Receive, send: Send, headers: Metadata) -> None:
        if (
            self.method.kind is not MethodKind.UNARY
            or self.method.idempotency is not Idempotency.NO_SIDE_EFFECTS
        ):
            raise _Reject(
                405,
                Code.UNIMPLEMENTED,
                f"{self.method.name} has side effects: call it with POST",
                [(b"allow", b"POST")],
            )
        query = _query(scope)
        codec = self._codec(f"application/{query.get('encoding', '')}", streaming=False)
        accept = headers.get("accept-encoding") or query.get("compression")
        try:
            ctx = self._context(scope, headers)
            if query.get("connect", "v1") != "v1":
                raise RpcError(Code.INVALID_ARGUMENT, f"unsupported connect={query['connect']}")
            raw = query.get("message", "")
            if query.get("base64") == "1":
                try:
                    data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
                except (binascii.Error, ValueError):
                    raise RpcError(Code.INVALID_ARGUMENT, "message is not valid base64") from None
            else:
                data = raw.encode("utf-8", errors="surrogateescape")
            if len(data) > self.options.max_message_size:
                raise RpcError(Code.RESOURCE_EXHAUSTED, "message is larger than the limit")
            request = self._decode(codec, data, self._compression(query.get("compression")))
        except RpcError as error:
            await self._unary_error(send, error, None, accept)
            return
        await run_until_disconnect(
            self._unary(send, codec, ctx, request, accept), receive, ctx, self.options.drain
        )

    async def _unary(
        self, send: Send, codec: Encoding, ctx: Context, request: Message, accept: str | None
    ) -> None:
        try:
            async with deadline(ctx):
                response = await self.handler(request, ctx)
            data = codec.encode(response)
        except RpcError as error:
            await self._unary_error(send, error, ctx, accept)
            return
        except asyncio.CancelledError as exc:
            if (shutdown := drained(exc)) is None:
                raise
            await self._unary_error(send, shutdown, ctx, accept)
            return
        except Exception:
            log.exception("%s failed", self.method.path)
            await self._unary_error(send, RpcError(Code.INTERNAL, "internal error"), ctx, accept)
            return
        headers = [(b"content-type", codec.content_type.encode())]
        compression = negotiate(accept, self.options.compressions)
        if compression is not None and len(data) >= self.options.compress_min_bytes:
            data = compression.compress(data)
            headers.append((b"content-encoding", compression.name.encode()))
        headers.append((b"content-length", str(len(data)).encode()))
        headers += header_list(ctx.response_headers)
        headers += header_list(ctx.response_trailers, TRAILER_PREFIX)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _unary_error(
        self, send: Send, error: RpcError, ctx: Context | None, accept: str | None
    ) -> None:
        extra: list[tuple[bytes, bytes]] = []
        if ctx is not None:
            extra += header_list(ctx.response_headers)
            trailers = Metadata(ctx.response_trailers)
            trailers.extend(error.metadata)
            extra += header_list(trailers, TRAILER_PREFIX)
        else:
            extra += header_list(Metadata(error.metadata), TRAILER_PREFIX)
        await send_error(send, error.code.http_status, error, extra)

    # --- streams ---------------------------------------------------------------------------

    async def _stream(self, scope: Scope, receive: Receive, send: Send, headers: Metadata) -> None:
        codec = self._codec(headers.get("content-type"), streaming=True)
        out_compression = negotiate(
            headers.get("connect-accept-encoding") or headers.get("connect-content-encoding"),
            self.options.compressions,
        )
        writer = _StreamWriter(send, codec, out_compression, self.options)
        ctx: Context | None = None
        try:
            ctx = self._context(scope, headers)
            in_compression = self._compression(headers.get("connect-content-encoding"))
            if self.method.kind is MethodKind.BIDI_STREAM:
                raise RpcError(
                    Code.UNIMPLEMENTED,
                    f"{self.method.name} is a bidi stream: it needs HTTP/2; call it over gRPC",
                )
            requests = self._messages(receive, codec, in_compression)
        except RpcError as error:
            await writer.finish(error, ctx)
            return
        assert ctx is not None
        if self.method.kind is MethodKind.CLIENT_STREAM:
            await self._client_stream(writer, ctx, requests)
        else:
            await self._server_stream(writer, ctx, requests, receive)

    async def _messages(
        self, receive: Receive, codec: Encoding, compression: Compression | None
    ) -> AsyncIterator[Any]:
        reader = EnvelopeReader(self.options.max_message_size)
        async for chunk in body_chunks(receive):
            for flags, data in reader.feed(chunk):
                if flags & FLAG_END_STREAM:
                    raise RpcError(Code.INVALID_ARGUMENT, "end-of-stream flag in a request stream")
                if flags & FLAG_COMPRESSED:
                    if compression is None:
                        raise RpcError(
                            Code.INVALID_ARGUMENT,
                            "compressed message without connect-content-encoding",
                        )
                    data = compression.decompress(data, self.options.max_message_size)
                yield codec.decode(data, self.method.input)
        reader.close()

    async def _client_stream(
        self, writer: _StreamWriter, ctx: Context, requests: AsyncIterator[Any]
    ) -> None:
        adapted: object = None
        error: RpcError | None = None
        try:
            async with deadline(ctx):
                adapted = await adapt_requests(self.method, requests, ctx.request_headers)
                response = await self.handler(adapted, ctx)
                await writer.message(response, ctx)
        except RpcError as exc:
            error = exc
        except ClientGone:
            ctx.cancel()
            return
        except Exception:
            log.exception("%s failed", self.method.path)
            error = RpcError(Code.INTERNAL, "internal error")
        finally:
            await aclose(adapted)
            await aclose(requests)
        await writer.finish(error, ctx)

    async def _server_stream(
        self, writer: _StreamWriter, ctx: Context, requests: AsyncIterator[Any], receive: Receive
    ) -> None:
        try:
            request = await anext(requests, None)
            if request is None:
                raise RpcError(Code.INVALID_ARGUMENT, "a server-streaming call needs one request")
            if await anext(requests, None) is not None:
                raise RpcError(Code.INVALID_ARGUMENT, "a server-streaming call takes one request")
        except RpcError as error:
            await writer.finish(error, ctx)
            return
        except ClientGone:
            return
        await run_until_disconnect(
            self._produce(writer, ctx, request), receive, ctx, self.options.drain
        )

    async def _produce(self, writer: _StreamWriter, ctx: Context, request: Any) -> None:
        stream: AsyncIterator[Any] | None = None
        messages: AsyncIterator[Any] | None = None
        error: RpcError | None = None
        try:
            async with deadline(ctx):
                stream = await resolve_stream(self.handler(request, ctx))
                ctx.response_headers.extend(file_headers(stream))
                messages = encode_stream(self.method, stream)
                async for message in messages:
                    if type(message) is Event:
                        message = message.data
                    await writer.message(message, ctx)
        except RpcError as exc:
            error = exc
        except asyncio.CancelledError as exc:
            if (error := drained(exc)) is None:
                await writer.abort()
                raise
        except Exception:
            log.exception("%s failed", self.method.path)
            error = RpcError(Code.INTERNAL, "internal error")
        finally:
            await aclose(messages)
            await aclose(stream)
        await writer.finish(error, ctx)


class _StreamWriter:
    """Writes a Connect response stream: headers once, envelopes, then end-of-stream."""

    def __init__(
        self,
        send: Send,
        codec: Encoding,
        compression: Compression | None,
        options: BridgeOptions,
    ) -> None:
        self.send = send
        self.codec = codec
        self.compression = compression
        self.options = options
        self.body = BodyWriter(send)
        self.started = False

    async def _start(self, ctx: Context | None) -> None:
        self.started = True
        headers = [(b"content-type", f"application/connect+{self.codec.name}".encode())]
        if self.compression is not None:
            headers.append((b"connect-content-encoding", self.compression.name.encode()))
        accepted = ", ".join(self.options.compressions.names())
        if accepted:
            headers.append((b"connect-accept-encoding", accepted.encode()))
        if ctx is not None:
            headers += header_list(ctx.response_headers)
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})

    async def message(self, message: Message, ctx: Context) -> None:
        data = self.codec.encode(message)
        if len(data) > self.options.max_message_size:
            raise RpcError(
                Code.RESOURCE_EXHAUSTED,
                f"response message of {len(data)} bytes is larger than the limit",
            )
        flags = 0
        if self.compression is not None and len(data) >= self.options.compress_min_bytes:
            data = self.compression.compress(data)
            flags = FLAG_COMPRESSED
        if not self.started:
            await self._start(ctx)
        await self.body.write(envelope(data, flags))

    async def finish(self, error: RpcError | None, ctx: Context | None) -> None:
        if not self.started:
            await self._start(ctx)
        trailers = ctx.response_trailers if ctx is not None else Metadata()
        await self.body.close(envelope(end_stream(error, trailers), FLAG_END_STREAM))

    async def abort(self) -> None:
        await self.body.abort()


class _Reject(Exception):
    """A request refused at the HTTP level, before any call starts."""

    def __init__(
        self,
        status: int,
        code: Code,
        message: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = RpcError(code, message)
        self.headers = headers or []


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return dict(parse_qsl(raw, keep_blank_values=True, encoding="utf-8", errors="surrogateescape"))
