"""Serves one RPC by the gRPC-Web protocol: an adapter on the call runner.

Every call shape: a client stream is one request body of frames (fine for Node and other
non-browser clients); a bidi stream's answers go out as its requests arrive, full duplex
over HTTP/2 (granian) and over HTTP/1.1 for a client that reads while it writes (browsers
cannot: they use the WebSocket transport). The response is always HTTP 200 with the
status in the trailer frame. The wire rules live in ``rpckit.http.grpc_web.protocol``.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

from rpckit.call import CallRunner
from rpckit.compression import Compression, negotiate
from rpckit.context import Context
from rpckit.encodings import Encoding
from rpckit.errors import Code, RpcError
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
)
from rpckit.http.grpc_web.protocol import (
    FLAG_COMPRESSED,
    FLAG_TRAILER,
    Base64Decoder,
    GrpcWebType,
    parse_head,
    trailer_frame,
)
from rpckit.http.wire import envelope
from rpckit.metadata import Metadata
from rpckit.service import MethodSpec
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
        options = self.options
        kind, head = parse_head(
            scope["method"], self.method, headers, options.encodings, options.compressions
        )
        call = HttpCall(
            self.runner, self.method, self.handler, scope, receive, send, head, "grpc-web"
        )
        codec = head.codec
        if kind is None or codec is None:  # refused at the HTTP level
            assert head.refusal is not None
            await call.refuse(head.refusal)
            return
        responder = _Responder(send, kind, codec, headers.get("grpc-accept-encoding"), self)
        if head.refusal is not None:
            await call.refuse(head.refusal, responder.reject)
            return
        chunks = call.chunks()
        requests = call.messages(
            _base64_decoded(chunks) if kind.text else chunks,
            codec,
            head,
            options.max_message_size,
            final_flag=FLAG_TRAILER,
            final_error="trailer frame in a request body",
            encoding_header="grpc-encoding",
        )
        try:
            await call.run_messages(requests, responder)
        finally:
            await responder.body.abort()  # a no-op once the body is complete
            await requests.aclose()


async def _base64_decoded(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A ``grpc-web-text`` body, decoded as it arrives."""
    decoder = Base64Decoder()
    async for chunk in chunks:
        data = decoder.feed(chunk)
        if data:
            yield data
    decoder.close()


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
        chunk = self._encode(envelope(data, FLAG_COMPRESSED if compressed else 0))
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
