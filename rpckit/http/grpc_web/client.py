"""A typed-client transport that speaks gRPC-Web over HTTP/1.1 (httpx).

Binary (``application/grpc-web+<codec>``) or base64 text (``application/grpc-web-text``)
bodies, ``proto`` or ``json`` (or any registered) encoding; unary, server-streaming and
client-streaming calls (the request body is streamed). Bidi needs HTTP/2: ``unimplemented``.
Works against rpckit's bridge and any gRPC-Web server or proxy (Envoy, grpcwebproxy).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterable, Iterable
from typing import Any, TypeVar
from urllib.parse import unquote

import httpx
from google.protobuf.message import Message

from rpckit.client import (
    AsyncClosing,
    CallOptions,
    Closing,
    StreamCall,
    StreamCallSync,
    as_async_iterable,
    as_iterable,
    request_metadata,
)
from rpckit.compression import Compression, CompressionRegistry, compressions
from rpckit.encodings import Encoding, EncodingRegistry, encodings
from rpckit.errors import Code, RpcError
from rpckit.http.calls import bidi_refused, bidi_refused_sync, decode_response, one_request
from rpckit.http.exchange import (
    READ,
    READ_ALL,
    Emit,
    Exchange,
    Send,
    run_async,
    run_sync,
    single,
    single_sync,
)
from rpckit.http.grpc_web.protocol import (
    FLAG_COMPRESSED,
    FLAG_TRAILER,
    Base64Decoder,
    encode_grpc_timeout,
    parse_trailers,
    response_metadata,
    status_from_trailers,
)
from rpckit.http.wire import EnvelopeReader, envelope
from rpckit.limits import DEFAULT_MAX_MESSAGE_SIZE
from rpckit.metadata import Metadata
from rpckit.service import MethodSpec

__all__ = ["GrpcWebTransport", "GrpcWebTransportSync"]

I = TypeVar("I", bound=Message)  # noqa: E741 - request type
O = TypeVar("O", bound=Message)  # noqa: E741 - response type

_BODY = "response body"
_MAX_REASON = 4096


class _GrpcWebCalls:
    """What both gRPC-Web transports share: settings, and each call as an exchange."""

    def __init__(
        self,
        base_url: str,
        encoding: str,
        text: bool,
        max_message_size: int,
        encodings: EncodingRegistry,
        compressions: CompressionRegistry,
    ) -> None:
        codec = encodings.get(encoding)
        if codec is None:
            raise ValueError(f"unknown encoding {encoding!r}; known: {encodings.names()}")
        self.codec: Encoding = codec
        self.text = text
        self.base_url = base_url.rstrip("/")
        self.max_message_size = max_message_size
        self.compressions = compressions
        self.content_type = f"application/grpc-web{'-text' if text else ''}+{codec.name}"

    def _headers(self, options: CallOptions) -> list[tuple[str, str]]:
        headers = [
            ("content-type", self.content_type),
            ("accept", self.content_type),
            ("x-grpc-web", "1"),
            ("x-user-agent", "rpckit-grpc-web"),
            ("grpc-accept-encoding", ",".join(["identity", *self.compressions.names()])),
        ]
        if options.timeout is not None:
            headers.append(("grpc-timeout", encode_grpc_timeout(options.timeout)))
        headers += request_metadata(options)
        return headers

    def _frame(self, request: Message) -> bytes:
        data = envelope(self.codec.encode(request))
        return base64.b64encode(data) if self.text else data

    def _call(
        self,
        method: MethodSpec[Any, Any],
        requests: AsyncIterable[Any] | Iterable[Any],
        options: CallOptions,
    ) -> Exchange:
        url = self.base_url + method.path
        send = Send("POST", url, self._headers(options), requests=requests, encode=self._frame)
        answer = yield send
        pairs = answer.headers
        headers = Metadata(pairs)
        if "grpc-status" in headers:  # trailers-only: the headers are the trailers
            if options.response is not None:
                options.response.trailers = response_metadata(pairs)
            message = headers.get("grpc-message")
            if message is not None:
                headers["grpc-message"] = unquote(message)
            error = status_from_trailers(headers)
            if error is not None:
                raise error
            return
        if options.response is not None:
            options.response.headers = response_metadata(pairs)
        if answer.status != 200:
            body = yield READ_ALL
            raise _http_error(answer.status, body)
        decompressor = self._decompressor(headers.get("grpc-encoding"))
        reader = EnvelopeReader(self.max_message_size, body=_BODY)
        decoder = Base64Decoder(body=_BODY) if self.text else None
        while (chunk := (yield READ)) is not None:
            for flags, data in _malformed_as_internal(reader, decoder, chunk):
                if flags & FLAG_TRAILER:
                    trailers = _trailers(data)
                    if options.response is not None:
                        options.response.trailers = response_metadata(trailers)
                    error = status_from_trailers(trailers)
                    if error is not None:
                        raise error
                    return
                if flags & FLAG_COMPRESSED:
                    if decompressor is None:
                        raise RpcError(Code.INTERNAL, "compressed frame without grpc-encoding")
                    data = decompressor.decompress(data, self.max_message_size)
                yield Emit(decode_response(self.codec, data, method.output))
        raise RpcError(Code.INTERNAL, "gRPC-Web response ended without trailers")

    def _decompressor(self, name: str | None) -> Compression | None:
        if name is None or name == "identity":
            return None
        compression = self.compressions.get(name)
        if compression is None:
            raise RpcError(Code.INTERNAL, f"server used unknown grpc-encoding {name!r}")
        return compression


_WHAT = "gRPC-Web call"
_NO_BIDI = "gRPC-Web cannot carry it; call it over gRPC or WebSocket"


class GrpcWebTransport(_GrpcWebCalls, AsyncClosing):
    """Calls services over gRPC-Web.

    ``encoding`` names the codec (``proto``, ``json``...), ``text`` selects the base64
    ``application/grpc-web-text`` variant (what browsers without binary streams use). Pass
    ``client`` to share an ``httpx.AsyncClient``; otherwise the transport owns one (close it,
    or use ``async with``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.AsyncClient | None = None,
        encoding: str = "proto",
        text: bool = False,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        encodings: EncodingRegistry = encodings,
        compressions: CompressionRegistry = compressions,
    ) -> None:
        super().__init__(base_url, encoding, text, max_message_size, encodings, compressions)
        self._owned = client is None
        self.client = client or httpx.AsyncClient(timeout=httpx.Timeout(None))

    async def aclose(self) -> None:
        """Close the HTTP client if this transport created it."""
        if self._owned:
            await self.client.aclose()

    async def unary(self, method: MethodSpec[I, O], request: I, options: CallOptions) -> O:
        """Call a unary method: one request frame out, one message and the trailers back."""
        exchange = self._call(method, one_request(request), options)
        result: O = await single(run_async(self.client, exchange, options.timeout), _WHAT)
        return result

    def server_stream(
        self, method: MethodSpec[I, O], request: I, options: CallOptions
    ) -> StreamCall[O]:
        """Call a server-streaming method; iterate the result for the responses."""
        exchange = self._call(method, one_request(request), options)
        return StreamCall(run_async(self.client, exchange, options.timeout))

    async def client_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        options: CallOptions,
    ) -> O:
        """Call a client-streaming method; the requests go out as they are produced."""
        exchange = self._call(method, as_async_iterable(requests), options)
        result: O = await single(run_async(self.client, exchange, options.timeout), _WHAT)
        return result

    def bidi_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        options: CallOptions,
    ) -> StreamCall[O]:
        """gRPC-Web has no bidi streams: fails with ``unimplemented``; use gRPC or WebSocket."""
        return StreamCall(bidi_refused(method, _NO_BIDI))


class GrpcWebTransportSync(_GrpcWebCalls, Closing):
    """``GrpcWebTransport`` for blocking clients (``*ClientSync``), over ``httpx.Client``."""

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.Client | None = None,
        encoding: str = "proto",
        text: bool = False,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        encodings: EncodingRegistry = encodings,
        compressions: CompressionRegistry = compressions,
    ) -> None:
        super().__init__(base_url, encoding, text, max_message_size, encodings, compressions)
        self._owned = client is None
        self.client = client or httpx.Client(timeout=httpx.Timeout(None))

    def close(self) -> None:
        """Close the HTTP client if this transport created it."""
        if self._owned:
            self.client.close()

    def unary(self, method: MethodSpec[I, O], request: I, options: CallOptions) -> O:
        """Call a unary method: one request frame out, one message and the trailers back."""
        exchange = self._call(method, [request], options)
        result: O = single_sync(run_sync(self.client, exchange, options.timeout), _WHAT)
        return result

    def server_stream(
        self, method: MethodSpec[I, O], request: I, options: CallOptions
    ) -> StreamCallSync[O]:
        """Call a server-streaming method; iterate the result for the responses."""
        exchange = self._call(method, [request], options)
        return StreamCallSync(run_sync(self.client, exchange, options.timeout))

    def client_stream(
        self, method: MethodSpec[I, O], requests: Iterable[I], options: CallOptions
    ) -> O:
        """Call a client-streaming method; the requests go out as they are produced."""
        exchange = self._call(method, as_iterable(requests), options)
        result: O = single_sync(run_sync(self.client, exchange, options.timeout), _WHAT)
        return result

    def bidi_stream(
        self, method: MethodSpec[I, O], requests: Iterable[I], options: CallOptions
    ) -> StreamCallSync[O]:
        """gRPC-Web has no bidi streams: fails with ``unimplemented``; use gRPC or WebSocket."""
        return StreamCallSync(bidi_refused_sync(method, _NO_BIDI))


def _malformed_as_internal(
    reader: EnvelopeReader, decoder: Base64Decoder | None, chunk: bytes
) -> list[tuple[int, bytes]]:
    """The frames a response chunk completes; a malformed body is the server's fault."""
    try:
        return list(reader.feed(decoder.feed(chunk) if decoder is not None else chunk))
    except RpcError as error:
        if error.code is Code.INVALID_ARGUMENT:
            raise RpcError(Code.INTERNAL, error.message) from None
        raise


def _http_error(status: int, body: bytes) -> RpcError:
    """A non-200 answer without ``grpc-status``: the code from the HTTP status (as gRPC maps
    it), with the server's one-line reason when its body is a JSON error."""
    reason = f"HTTP {status}"
    try:
        parsed = json.loads(body[:_MAX_REASON]) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        reason += f": {parsed['message']}"
    return RpcError(Code.from_http_status(status), reason)


def _trailers(data: bytes) -> Metadata:
    try:
        return parse_trailers(data)
    except RpcError as error:
        raise RpcError(Code.INTERNAL, f"malformed gRPC-Web trailers: {error.message}") from None
