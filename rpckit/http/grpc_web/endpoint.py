"""Serves one RPC by the gRPC-Web protocol over HTTP/1.1: an adapter on the call runner.

Unary, server-streaming and client-streaming calls (a client stream is one request body of
frames: fine for Node and other non-browser clients). Bidi needs HTTP/2 (or the WebSocket
transport) and is answered with ``unimplemented``. The response is always HTTP 200 with the
status in the trailer frame. The wire rules live in ``rpckit.http.grpc_web.protocol``.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from google.protobuf.message import Message

from rpckit.call import CallRunner
from rpckit.compression import Compression, negotiate
from rpckit.context import Context
from rpckit.encodings import Encoding
from rpckit.errors import Code, RpcError
from rpckit.http.asgi import (
    BodyWriter,
    BridgeOptions,
    DisconnectWatch,
    Receive,
    Scope,
    Send,
    body_chunks,
    compress_message,
    encode_response,
    header_list,
    send_error,
)
from rpckit.http.grpc_web.protocol import (
    FLAG_COMPRESSED,
    FLAG_TRAILER,
    Base64Decoder,
    FrameReader,
    GrpcWebType,
    encode_message,
    frame,
    parse_content_type,
    parse_grpc_timeout,
    request_metadata,
    trailer_frame,
)
from rpckit.metadata import Metadata
from rpckit.service import MethodKind, MethodSpec
from rpckit.status import STATUS_DETAILS_KEY, status_details
from rpckit.streams import Event

__all__ = ["GrpcWebEndpoint"]

Handler = Callable[..., Any]


class GrpcWebEndpoint:
    """The ASGI app for one method's gRPC-Web calls."""

    def __init__(
        self,
        method: MethodSpec[Any, Any],
        handler: Handler,
        options: BridgeOptions,
        runner: CallRunner,
    ) -> None:
        self.method = method
        self.handler = handler
        self.options = options
        self.runner = runner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Metadata.from_asgi(scope["headers"])
        kind = parse_content_type(headers.get("content-type") or "")
        codec = self.options.encodings.get(kind.codec) if kind is not None else None
        if kind is None or codec is None:
            names = ["", *(f"+{name}" for name in self.options.encodings.names())]
            accepted = ", ".join(f"application/grpc-web{name}" for name in names)
            error = RpcError(
                Code.UNIMPLEMENTED,
                f"unsupported content type {headers.get('content-type')!r}; accepted: {accepted}",
            )
            # 415 as gRPC's HTTP/2 spec asks, with the code in grpc-status (gRPC-Web clients
            # read it from a trailers-only answer) and a JSON body, like Connect and the routes.
            status = [
                (b"grpc-status", b"%d" % error.code),
                (b"grpc-message", encode_message(error.message).encode("latin-1", "replace")),
                (b"accept-post", accepted.encode()),
            ]
            await send_error(send, 415, error, status)
            return
        if scope["method"] != "POST":
            error = RpcError(Code.UNIMPLEMENTED, "gRPC-Web calls use POST")
            await send_error(send, 405, error, [(b"allow", b"POST")])
            return
        responder = _Responder(send, kind, codec, headers.get("grpc-accept-encoding"), self)
        try:
            ctx = self._context(scope, headers)
            compression = self._compression(headers.get("grpc-encoding"))
            if self.method.kind is MethodKind.BIDI_STREAM:
                raise RpcError(
                    Code.UNIMPLEMENTED,
                    f"{self.method.name} is a bidi stream: gRPC-Web over HTTP/1.1 cannot carry "
                    "it; call it over gRPC or the WebSocket transport",
                )
        except RpcError as error:
            await responder.reject(error)
            return
        requests = self._messages(receive, kind.text, codec, compression, ctx)
        try:
            if self.method.kind.client_streams:
                await self.runner.run(ctx, self.handler, requests, responder)
                return
            watch = DisconnectWatch(receive, ctx, self.runner.current_task())

            async def read() -> Message:
                request: Message | None = await anext(requests, None)
                if request is None:
                    raise RpcError(Code.INVALID_ARGUMENT, f"{self.method.name} needs one request")
                if await anext(requests, None) is not None:
                    raise RpcError(
                        Code.INVALID_ARGUMENT, f"{self.method.name} takes exactly one request"
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

    def _context(self, scope: Scope, headers: Metadata) -> Context:
        timeout = parse_grpc_timeout(headers.get("grpc-timeout"))
        client = scope.get("client")
        ctx = Context(
            self.method,
            transport="http",
            dialect="grpc-web",
            request_headers=request_metadata(headers),
            peer=f"{client[0]}:{client[1]}" if client else "",
            deadline=None if timeout is None else time.monotonic() + timeout,
        )
        encoding = headers.get("grpc-encoding")
        ctx.request_compression = None if encoding in (None, "identity") else encoding
        return ctx

    def _compression(self, name: str | None) -> Compression | None:
        if name is None or name == "identity":
            return None
        compression = self.options.compressions.get(name)
        if compression is None:
            supported = ", ".join(["identity", *self.options.compressions.names()])
            raise RpcError(
                Code.UNIMPLEMENTED, f"unsupported grpc-encoding {name!r}; supported: {supported}"
            )
        return compression

    async def _messages(
        self,
        receive: Receive,
        text: bool,
        codec: Encoding,
        compression: Compression | None,
        ctx: Context,
    ) -> AsyncGenerator[Any, None]:
        limit = self.options.max_message_size
        reader = FrameReader(limit)
        decoder = Base64Decoder() if text else None
        stats = ctx.stats
        async for chunk in body_chunks(receive):
            stats.bytes_in += len(chunk)
            if decoder is not None:
                chunk = decoder.feed(chunk)
            for flags, data in reader.feed(chunk):
                if flags & FLAG_TRAILER:
                    raise RpcError(Code.INVALID_ARGUMENT, "trailer frame in a request body")
                if flags & FLAG_COMPRESSED:
                    if compression is None:
                        raise RpcError(
                            Code.INVALID_ARGUMENT, "compressed message without grpc-encoding"
                        )
                    data = compression.decompress(data, limit)
                stats.messages_in += 1
                yield codec.decode(data, self.method.input)
        if decoder is not None:
            decoder.close()
        reader.close()


class _Responder:
    """A gRPC-Web response: headers once, message frames, then the trailer frame."""

    def __init__(
        self,
        send: Send,
        kind: GrpcWebType,
        codec: Encoding,
        accept: str | None,
        endpoint: GrpcWebEndpoint,
    ) -> None:
        self.send = send
        self.kind = kind
        self.codec = codec
        self.accept = accept
        self.options = endpoint.options
        self.body = BodyWriter(send)
        self.started = False
        self.compression: Compression | None = None

    def _encode(self, data: bytes) -> bytes:
        return base64.b64encode(data) if self.kind.text else data

    async def send_headers(self, ctx: Context) -> None:
        if self.started:
            return
        self.started = True
        ctx.mark_headers_sent()
        self.compression = self._choose_compression(ctx)
        headers = [(b"content-type", self.kind.content_type().encode())]
        if self.compression is not None:
            headers.append((b"grpc-encoding", self.compression.name.encode()))
        accepted = ",".join(["identity", *self.options.compressions.names()])
        headers.append((b"grpc-accept-encoding", accepted.encode()))
        headers += header_list(ctx.response_headers)
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})

    def _choose_compression(self, ctx: Context) -> Compression | None:
        chosen = ctx.response_compression
        if chosen is None:
            return negotiate(self.accept, self.options.compressions)
        accepted = [name.strip() for name in (self.accept or "").split(",")]
        if chosen == "identity" or chosen not in accepted:
            return None
        return self.options.compressions.get(chosen)

    async def send_stream(self, ctx: Context, stream: AsyncIterator[Any]) -> bool:
        return False

    async def send_message(self, ctx: Context, message: Any, event: Event[Any] | None) -> None:
        data = encode_response(self.codec, message, self.options.max_message_size)
        if not self.started:
            await self.send_headers(ctx)
        data, compressed = compress_message(
            ctx, data, self.compression, self.options.compress_min_bytes
        )
        chunk = self._encode(frame(data, FLAG_COMPRESSED if compressed else 0))
        ctx.stats.bytes_out += len(chunk)
        await self.body.write(chunk)

    async def finish(self, ctx: Context, error: RpcError | None) -> None:
        if not self.started:
            await self.send_headers(ctx)
        await self.body.close(self._encode(_trailers(error, ctx.response_trailers)))

    async def reject(self, error: RpcError) -> None:
        """End a call that could not even start (bad headers): 200 and the trailer frame."""
        self.started = True
        headers = [(b"content-type", self.kind.content_type().encode())]
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})
        await self.body.close(self._encode(_trailers(error, Metadata())))


def _trailers(error: RpcError | None, trailers: Metadata) -> bytes:
    if error is None:
        return trailer_frame(Code.OK, "", trailers)
    pairs = Metadata(trailers)
    pairs.extend(error.metadata)
    details = status_details(error)
    if details is not None:
        pairs[STATUS_DETAILS_KEY] = base64.b64encode(details).decode("ascii")
    return trailer_frame(error.code, error.message, pairs)
