"""Serves one RPC by the Connect protocol: an adapter on the call runner.

Unary calls take POST (and GET for ``NO_SIDE_EFFECTS`` methods); streams use 5-byte
envelopes and end with an end-of-stream message carrying the status and trailers.
A bidi stream's answers go out as its requests arrive: full duplex over HTTP/2
(granian), and over HTTP/1.1 for a client that reads while it writes (Node's ``http``).
The wire rules live in ``rpckit.http.connect.protocol``; the call's lifecycle in
``rpckit.call``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl

from google.protobuf.message import Message

from rpckit.call import CallRunner
from rpckit.compression import Compression, CompressionRegistry, negotiate
from rpckit.context import Context
from rpckit.encodings import Encoding
from rpckit.errors import Code, RpcError, message_too_large
from rpckit.http.adapter import HttpCall
from rpckit.http.asgi import (
    BodyWriter,
    BridgeOptions,
    Receive,
    Scope,
    Send,
    compress_message,
    encode_response,
    header_list,
    send_error,
)
from rpckit.http.connect.protocol import (
    FLAG_END_STREAM,
    TRAILER_PREFIX,
    end_stream,
    parse_head,
)
from rpckit.http.wire import FLAG_COMPRESSED, Head, envelope
from rpckit.metadata import Metadata
from rpckit.service import MethodKind, MethodSpec
from rpckit.streams import Event

__all__ = ["ConnectEndpoint"]

Handler = Callable[..., Any]


class ConnectEndpoint:
    """The ASGI app for one method: reads the call's head, hands the call to the runner."""

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
        verb = scope["method"]
        options = self.options
        headers = Metadata.from_asgi(scope["headers"])
        query = _query(scope) if verb == "GET" else _NO_QUERY
        head = parse_head(
            verb,
            self.method,
            headers,
            query,
            options.encodings,
            options.compressions,
            require_version=options.require_protocol_version,
        )
        call = HttpCall(
            self.runner, self.method, self.handler, scope, receive, send, head, "connect"
        )
        codec = head.codec
        if codec is None:  # refused before the codec is known: at the HTTP level
            assert head.refusal is not None
            await call.refuse(head.refusal)
        elif self.method.kind is MethodKind.UNARY:
            get = verb == "GET"
            accept = headers.get("accept-encoding") or (
                query.get("compression") if get else head.compression_name
            )
            await self._unary(call, head, _UnaryResponder(send, codec, accept, options), query)
        else:
            accept = headers.get("connect-accept-encoding") or head.compression_name
            await self._stream(call, head, _StreamResponder(send, codec, accept, options))

    def _decode(self, codec: Encoding, data: bytes, compression: Compression | None) -> Any:
        if compression is not None and data:
            data = compression.decompress(data, self.options.max_message_size)
        return codec.decode(data, self.method.input)

    # --- unary -----------------------------------------------------------------------------

    async def _unary(
        self, call: HttpCall, head: Head, responder: _UnaryResponder, query: dict[str, str]
    ) -> None:
        if head.refusal is not None:
            await call.refuse(head.refusal, responder.reject)
            return
        codec, compression = responder.codec, head.compression
        limit = self.options.max_message_size
        get = query is not _NO_QUERY

        async def read() -> Message:
            if not get:
                body = await call.body(limit)
            else:  # nothing to read: the request is in the URL
                body = _get_message(query, limit)
                call.ctx.stats.bytes_in += len(body)
            message: Message = self._decode(codec, body, compression)
            return message

        await call.run(read, responder, read=get)

    # --- streams ---------------------------------------------------------------------------

    async def _stream(self, call: HttpCall, head: Head, responder: _StreamResponder) -> None:
        if head.refusal is not None:
            await call.refuse(head.refusal, responder.reject)
            return
        requests = call.messages(
            call.chunks(),
            responder.codec,
            head,
            self.options.max_message_size,
            final_flag=FLAG_END_STREAM,
            final_error="end-of-stream flag in a request stream",
            encoding_header="connect-content-encoding",
        )
        try:
            await call.run_messages(requests, responder)
        finally:
            await responder.body.abort()  # a no-op once the body is complete
            await requests.aclose()


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
        data = encode_response(self.codec, message, self.options.max_message_size)
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


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return dict(parse_qsl(raw, keep_blank_values=True, encoding="utf-8", errors="surrogateescape"))


_NO_QUERY: dict[str, str] = {}


def _get_message(query: dict[str, str], limit: int) -> bytes:
    """A GET request's message from its query (``message``, ``base64=1``), within the limit."""
    raw = query.get("message", "")
    if query.get("base64") == "1":
        try:
            data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except (binascii.Error, ValueError):
            raise RpcError(Code.INVALID_ARGUMENT, "message is not valid base64") from None
    else:
        data = raw.encode("utf-8", errors="surrogateescape")
    if len(data) > limit:
        raise message_too_large(limit)
    return data
