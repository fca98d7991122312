"""Serves one RPC by the Connect protocol over HTTP/1.1: an adapter on the call runner.

Unary calls take POST (and GET for ``NO_SIDE_EFFECTS`` methods); streams use 5-byte
envelopes and end with an end-of-stream message carrying the status and trailers.
Bidi streaming needs HTTP/2 and is answered with ``unimplemented``. The wire rules live in
``rpckit.http.connect.protocol``; the call's lifecycle in ``rpckit.call``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl

from google.protobuf.message import Message

from rpckit.call import CallRunner
from rpckit.compression import Compression, CompressionRegistry, negotiate
from rpckit.context import Context
from rpckit.encodings import Encoding, connect_codec
from rpckit.errors import Code, RpcError, message_too_large
from rpckit.http.asgi import (
    BodyWriter,
    BridgeOptions,
    DisconnectWatch,
    Receive,
    Scope,
    Send,
    body_chunks,
    call_context,
    compress_message,
    encode_response,
    header_list,
    read_body,
    send_error,
)
from rpckit.http.connect.protocol import (
    FLAG_END_STREAM,
    PROTOCOL_VERSION,
    TRAILER_PREFIX,
    end_stream,
)
from rpckit.http.wire import FLAG_COMPRESSED, EnvelopeReader, envelope
from rpckit.metadata import Metadata
from rpckit.service import Idempotency, MethodKind, MethodSpec
from rpckit.streams import Event

__all__ = ["ConnectEndpoint"]

Handler = Callable[..., Any]


class ConnectEndpoint:
    """The ASGI app for one method: parses the call and hands it to the runner."""

    def __init__(
        self,
        method: MethodSpec[Any, Any],
        handler: Handler,
        options: BridgeOptions,
        runner: CallRunner | None = None,
    ) -> None:
        self.method = method
        self.handler = handler
        self.options = options
        self.runner = runner if runner is not None else CallRunner()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Metadata.from_asgi(scope["headers"])
        try:
            if scope["method"] == "POST":
                if self.method.kind is MethodKind.UNARY:
                    await self._post(scope, receive, send, headers)
                else:
                    await self._stream(scope, receive, send, headers)
            elif scope["method"] == "GET":
                await self._get(scope, receive, send, headers)
            else:
                raise _Reject(405, Code.UNIMPLEMENTED, "Connect calls use POST (or GET)")
        except _Reject as reject:
            await send_error(send, reject.status, reject.error, reject.headers)

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

    def _context(self, scope: Scope, headers: Metadata, compression: str | None) -> Context:
        version = headers.get("connect-protocol-version")
        if version is not None and version != PROTOCOL_VERSION:
            raise RpcError(
                Code.INVALID_ARGUMENT, f"unsupported connect-protocol-version {version!r}"
            )
        if version is None and self.options.require_protocol_version:
            raise RpcError(Code.INVALID_ARGUMENT, "missing connect-protocol-version header")
        ctx = call_context(self.method, scope, headers, "connect")
        ctx.request_compression = None if compression in (None, "identity") else compression
        return ctx

    def _decode(self, codec: Encoding, data: bytes, compression: Compression | None) -> Any:
        if compression is not None and data:
            data = compression.decompress(data, self.options.max_message_size)
        return codec.decode(data, self.method.input)

    # --- unary -----------------------------------------------------------------------------

    async def _post(self, scope: Scope, receive: Receive, send: Send, headers: Metadata) -> None:
        codec = self._codec(headers.get("content-type"), streaming=False)
        encoding = headers.get("content-encoding")
        accept = headers.get("accept-encoding") or encoding
        responder = _UnaryResponder(send, codec, accept, self.options)
        try:
            ctx = self._context(scope, headers, encoding)
            compression = self._compression(encoding)
        except RpcError as error:
            await responder.reject(error)
            return
        watch = DisconnectWatch(receive, ctx, self.runner.current_task())

        async def read() -> Message:
            body = await read_body(receive, self.options.max_message_size)
            ctx.stats.bytes_in += len(body)
            watch.start()
            message: Message = self._decode(codec, body, compression)
            return message

        try:
            await self.runner.run(ctx, self.handler, read, responder, task=watch.target)
        finally:
            watch.stop()

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
        responder = _UnaryResponder(send, codec, accept, self.options)
        try:
            ctx = self._context(scope, headers, query.get("compression"))
            if query.get("connect", "v1") != "v1":
                raise RpcError(Code.INVALID_ARGUMENT, f"unsupported connect={query['connect']}")
            compression = self._compression(query.get("compression"))
        except RpcError as error:
            await responder.reject(error)
            return

        async def read() -> Message:
            raw = query.get("message", "")
            if query.get("base64") == "1":
                try:
                    data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
                except (binascii.Error, ValueError):
                    raise RpcError(Code.INVALID_ARGUMENT, "message is not valid base64") from None
            else:
                data = raw.encode("utf-8", errors="surrogateescape")
            if len(data) > self.options.max_message_size:
                raise message_too_large(self.options.max_message_size)
            ctx.stats.bytes_in += len(data)
            message: Message = self._decode(codec, data, compression)
            return message

        watch = DisconnectWatch(receive, ctx, self.runner.current_task())
        watch.start()
        try:
            await self.runner.run(ctx, self.handler, read, responder, task=watch.target)
        finally:
            watch.stop()

    # --- streams ---------------------------------------------------------------------------

    async def _stream(self, scope: Scope, receive: Receive, send: Send, headers: Metadata) -> None:
        codec = self._codec(headers.get("content-type"), streaming=True)
        encoding = headers.get("connect-content-encoding")
        responder = _StreamResponder(
            send, codec, headers.get("connect-accept-encoding") or encoding, self.options
        )
        try:
            ctx = self._context(scope, headers, encoding)
            in_compression = self._compression(encoding)
            if self.method.kind is MethodKind.BIDI_STREAM:
                raise RpcError(
                    Code.UNIMPLEMENTED,
                    f"{self.method.name} is a bidi stream: it needs HTTP/2; call it over gRPC",
                )
        except RpcError as error:
            await responder.reject(error)
            return
        requests = self._messages(receive, codec, in_compression, ctx)
        try:
            if self.method.kind is MethodKind.CLIENT_STREAM:
                await self.runner.run(ctx, self.handler, requests, responder)
                return
            watch = DisconnectWatch(receive, ctx, self.runner.current_task())

            async def read() -> Message:
                request: Message | None = await anext(requests, None)
                if request is None:
                    raise RpcError(
                        Code.INVALID_ARGUMENT, "a server-streaming call needs one request"
                    )
                if await anext(requests, None) is not None:
                    raise RpcError(
                        Code.INVALID_ARGUMENT, "a server-streaming call takes one request"
                    )
                watch.start()
                return request

            try:
                await self.runner.run(ctx, self.handler, read, responder, task=watch.target)
            finally:
                watch.stop()
        finally:
            await responder.body.abort()  # a no-op once the body is complete
            await requests.aclose()

    async def _messages(
        self, receive: Receive, codec: Encoding, compression: Compression | None, ctx: Context
    ) -> AsyncGenerator[Any, None]:
        reader = EnvelopeReader(self.options.max_message_size)
        stats = ctx.stats
        # A server stream's one request is counted by the runner, a client stream's here.
        count = 1 if self.method.kind.client_streams else 0
        async for chunk in body_chunks(receive):
            stats.bytes_in += len(chunk)
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
                stats.messages_in += count
                yield codec.decode(data, self.method.input)
        reader.close()


def _response_compression(
    ctx: Context, accept: str | None, compressions: CompressionRegistry
) -> tuple[bool, Compression | None]:
    """Whether the handler chose the response compression, and the compression to use:
    its choice if the client accepts it, else the first the client accepts."""
    chosen = ctx.response_compression
    if chosen is None:
        return False, negotiate(accept, compressions)
    if chosen == "identity":
        return True, None
    accepted = [name.strip() for name in (accept or "").split(",")]
    return True, compressions.get(chosen) if chosen in accepted else None


class _UnaryResponder:
    """A unary Connect answer: the message, or an error, with headers and trailer- headers."""

    def __init__(
        self, send: Send, codec: Encoding, accept: str | None, options: BridgeOptions
    ) -> None:
        self.send = send
        self.codec = codec
        self.accept = accept
        self.options = options

    async def send_headers(self, ctx: Context) -> None:
        """Unary headers travel with the answer; nothing can go out earlier."""

    async def send_stream(self, ctx: Context, stream: AsyncIterator[Any]) -> bool:
        return False

    async def send_message(self, ctx: Context, message: Any, event: Event[Any] | None) -> None:
        data = self.codec.encode(message)
        headers = [(b"content-type", self.codec.content_type.encode())]
        chosen, compression = _response_compression(ctx, self.accept, self.options.compressions)
        if not chosen and len(data) < self.options.compress_min_bytes:
            compression = None
        if compression is not None:
            data = compression.compress(data)
            headers.append((b"content-encoding", compression.name.encode()))
        headers.append((b"content-length", str(len(data)).encode()))
        headers += header_list(ctx.response_headers)
        headers += header_list(ctx.response_trailers, TRAILER_PREFIX)
        ctx.mark_headers_sent()
        ctx.stats.bytes_out += len(data)
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})
        await self.send({"type": "http.response.body", "body": data})

    async def finish(self, ctx: Context, error: RpcError | None) -> None:
        if error is None:
            return
        trailers = Metadata(ctx.response_trailers)
        trailers.extend(error.metadata)
        extra = header_list(ctx.response_headers) + header_list(trailers, TRAILER_PREFIX)
        ctx.mark_headers_sent()
        await send_error(self.send, error.code.http_status, error, extra)

    async def reject(self, error: RpcError) -> None:
        """Refuse a request whose call could not even start (bad headers)."""
        extra = header_list(Metadata(error.metadata), TRAILER_PREFIX)
        await send_error(self.send, error.code.http_status, error, extra)


class _StreamResponder:
    """A Connect response stream: headers once, envelopes, then the end-of-stream message."""

    def __init__(
        self, send: Send, codec: Encoding, accept: str | None, options: BridgeOptions
    ) -> None:
        self.send = send
        self.codec = codec
        self.accept = accept
        self.options = options
        self.body = BodyWriter(send)
        self.started = False
        self.compression: Compression | None = None

    async def send_headers(self, ctx: Context) -> None:
        if self.started:
            return
        self.started = True
        ctx.mark_headers_sent()
        _, self.compression = _response_compression(ctx, self.accept, self.options.compressions)
        headers = [(b"content-type", f"application/connect+{self.codec.name}".encode())]
        if self.compression is not None:
            headers.append((b"connect-content-encoding", self.compression.name.encode()))
        accepted = ", ".join(self.options.compressions.names())
        if accepted:
            headers.append((b"connect-accept-encoding", accepted.encode()))
        headers += header_list(ctx.response_headers)
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})

    async def send_stream(self, ctx: Context, stream: AsyncIterator[Any]) -> bool:
        return False

    async def send_message(self, ctx: Context, message: Any, event: Event[Any] | None) -> None:
        data = encode_response(self.codec, message, self.options.max_message_size)
        if not self.started:
            await self.send_headers(ctx)
        data, compressed = compress_message(
            ctx, data, self.compression, self.options.compress_min_bytes
        )
        frame = envelope(data, FLAG_COMPRESSED if compressed else 0)
        ctx.stats.bytes_out += len(frame)
        await self.body.write(frame)

    async def finish(self, ctx: Context, error: RpcError | None) -> None:
        if not self.started:
            await self.send_headers(ctx)
        await self.body.close(envelope(end_stream(error, ctx.response_trailers), FLAG_END_STREAM))

    async def reject(self, error: RpcError) -> None:
        """End a stream whose call could not even start (bad headers)."""
        self.started = True
        headers = [(b"content-type", f"application/connect+{self.codec.name}".encode())]
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})
        await self.body.close(envelope(end_stream(error, ()), FLAG_END_STREAM))


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
