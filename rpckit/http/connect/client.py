"""A typed-client transport that speaks the Connect protocol over HTTP/1.1 (httpx).

Pick the encoding per client (``proto``, ``json``, ``cbor``, ``msgpack`` or a registered
one); it works against rpckit's bridge and any other Connect server.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import AsyncIterable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlencode

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
from rpckit.http.connect.protocol import (
    FLAG_END_STREAM,
    PROTOCOL_VERSION,
    metadata_from_headers,
    parse_end_stream,
)
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
from rpckit.http.wire import FLAG_COMPRESSED, EnvelopeReader, envelope, error_from_json
from rpckit.limits import DEFAULT_MAX_MESSAGE_SIZE
from rpckit.metadata import Metadata
from rpckit.service import Idempotency, MethodSpec

__all__ = ["ConnectTransport", "ConnectTransportSync"]

I = TypeVar("I", bound=Message)  # noqa: E741 - request type
O = TypeVar("O", bound=Message)  # noqa: E741 - response type


class _ConnectCalls:
    """What both Connect transports share: settings, and each call as an exchange."""

    def __init__(
        self,
        base_url: str,
        encoding: str,
        compression: str | None,
        use_get: bool,
        encodings: EncodingRegistry,
        compressions: CompressionRegistry,
        max_message_size: int,
    ) -> None:
        codec = encodings.get(encoding)
        if codec is None:
            raise ValueError(f"unknown encoding {encoding!r}; known: {encodings.names()}")
        self.codec: Encoding = codec
        self.compression: Compression | None = None
        if compression is not None and compression != "identity":
            self.compression = compressions.get(compression)
            if self.compression is None:
                raise ValueError(f"unknown compression {compression!r}")
        self.compressions = compressions
        self.base_url = base_url.rstrip("/")
        self.use_get = use_get
        self.max_message_size = max_message_size

    # --- requests --------------------------------------------------------------------------

    def _headers(self, options: CallOptions, *, streaming: bool) -> list[tuple[str, str]]:
        codec = self.codec.name
        content_type = f"application/connect+{codec}" if streaming else f"application/{codec}"
        headers = [
            ("content-type", content_type),
            ("connect-protocol-version", PROTOCOL_VERSION),
        ]
        accepted = ", ".join(self.compressions.names())
        if accepted:
            key = "connect-accept-encoding" if streaming else "accept-encoding"
            headers.append((key, accepted))
        elif not streaming:
            headers.append(("accept-encoding", "identity"))
        if self.compression is not None:
            key = "connect-content-encoding" if streaming else "content-encoding"
            headers.append((key, self.compression.name))
        if options.timeout is not None:
            headers.append(("connect-timeout-ms", str(max(1, math.ceil(options.timeout * 1000)))))
        headers += request_metadata(options)
        return headers

    def _encode(self, message: Message) -> tuple[bytes, bool]:
        data = self.codec.encode(message)
        if self.compression is not None:
            return self.compression.compress(data), True
        return data, False

    def _decompressor(self, name: str | None) -> Compression | None:
        if name is None or name == "identity":
            return None
        compression = self.compressions.get(name)
        if compression is None:
            raise RpcError(Code.INTERNAL, f"server used unknown compression {name!r}")
        return compression

    # --- the calls, written once (rpckit.http.exchange) ----------------------------------

    def _unary_exchange(
        self, method: MethodSpec[Any, Any], request: Message, options: CallOptions
    ) -> Exchange:
        url = self.base_url + method.path
        headers = self._headers(options, streaming=False)
        data, compressed = self._encode(request)
        if self.use_get and method.idempotency is Idempotency.NO_SIDE_EFFECTS:
            query = {"connect": "v1", "encoding": self.codec.name}
            query["message"] = base64.urlsafe_b64encode(data).decode().rstrip("=")
            query["base64"] = "1"
            if compressed and self.compression is not None:
                query["compression"] = self.compression.name
            get_headers = [(k, v) for k, v in headers if k not in _BODY_HEADERS]
            answer = yield Send("GET", f"{url}?{urlencode(query)}", get_headers)
        else:
            answer = yield Send("POST", url, headers, content=data)
        body = yield READ_ALL
        pairs = Metadata(answer.headers)
        decompressor = self._decompressor(pairs.get("content-encoding"))
        if decompressor is not None and body:
            body = decompressor.decompress(body, self.max_message_size)
        leading, trailing = metadata_from_headers(answer.headers)
        if options.response is not None:
            options.response.headers, options.response.trailers = leading, trailing
        if answer.status != 200:
            error = _error_body(body, answer.status)
            error.metadata = trailing.items()
            raise error
        yield Emit(decode_response(self.codec, body, method.output))

    def _stream_exchange(
        self,
        method: MethodSpec[Any, Any],
        requests: AsyncIterable[Any] | Iterable[Any],
        options: CallOptions,
    ) -> Exchange:
        headers = self._headers(options, streaming=True)
        url = self.base_url + method.path
        answer = yield Send("POST", url, headers, requests=requests, encode=self._envelope)
        leading, _ = metadata_from_headers(answer.headers)
        if options.response is not None:
            options.response.headers = leading
        if answer.status != 200:
            body = yield READ_ALL
            raise _error_body(body, answer.status)
        encoding = Metadata(answer.headers).get("connect-content-encoding")
        decompressor = self._decompressor(encoding)
        reader = EnvelopeReader(self.max_message_size)
        while (chunk := (yield READ)) is not None:
            for flags, data in reader.feed(chunk):
                if flags & FLAG_END_STREAM:
                    error, trailers = parse_end_stream(data)
                    if options.response is not None:
                        options.response.trailers = trailers
                    if error is not None:
                        raise error
                    return
                if flags & FLAG_COMPRESSED:
                    if decompressor is None:
                        raise RpcError(Code.INTERNAL, "compressed message without encoding")
                    data = decompressor.decompress(data, self.max_message_size)
                yield Emit(decode_response(self.codec, data, method.output))
        reader.close()
        raise RpcError(Code.INTERNAL, "stream ended without an end-of-stream message")

    def _envelope(self, request: Message) -> bytes:
        data, compressed = self._encode(request)
        return envelope(data, FLAG_COMPRESSED if compressed else 0)


class ConnectTransport(_ConnectCalls, AsyncClosing):
    """Calls services over the Connect protocol.

    ``encoding`` names the codec, ``compression`` compresses requests, ``use_get`` sends
    ``NO_SIDE_EFFECTS`` unary calls as cacheable GETs. Pass ``client`` to share an
    ``httpx.AsyncClient``; otherwise the transport owns one (close it, or use ``async with``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        encoding: str = "proto",
        compression: str | None = None,
        use_get: bool = False,
        client: httpx.AsyncClient | None = None,
        encodings: EncodingRegistry = encodings,
        compressions: CompressionRegistry = compressions,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        super().__init__(
            base_url, encoding, compression, use_get, encodings, compressions, max_message_size
        )
        self._owned = client is None
        self.client = client or httpx.AsyncClient(timeout=httpx.Timeout(None))

    async def close(self) -> None:
        """Close the HTTP client if this transport created it."""
        if self._owned:
            await self.client.aclose()

    aclose = close

    async def unary(self, method: MethodSpec[I, O], request: I, options: CallOptions) -> O:
        """Call a unary method (POST, or GET for NO_SIDE_EFFECTS methods with use_get)."""
        exchange = self._unary_exchange(method, request, options)
        result: O = await single(run_async(self.client, exchange, options.timeout), "unary call")
        return result

    def server_stream(
        self, method: MethodSpec[I, O], request: I, options: CallOptions
    ) -> StreamCall[O]:
        """Call a server-streaming method; iterate the result for the responses."""
        exchange = self._stream_exchange(method, one_request(request), options)
        return StreamCall(run_async(self.client, exchange, options.timeout))

    async def client_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        options: CallOptions,
    ) -> O:
        """Call a client-streaming method; the requests go out as they are produced."""
        exchange = self._stream_exchange(method, as_async_iterable(requests), options)
        responses = run_async(self.client, exchange, options.timeout)
        result: O = await single(responses, "client stream")
        return result

    def bidi_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        options: CallOptions,
    ) -> StreamCall[O]:
        """Bidi streaming needs HTTP/2: fails with ``unimplemented``; use gRPC."""
        return StreamCall(bidi_refused(method, "it needs HTTP/2; call it over gRPC"))


class ConnectTransportSync(_ConnectCalls, Closing):
    """``ConnectTransport`` for blocking clients (``*ClientSync``), over ``httpx.Client``."""

    def __init__(
        self,
        base_url: str,
        *,
        encoding: str = "proto",
        compression: str | None = None,
        use_get: bool = False,
        client: httpx.Client | None = None,
        encodings: EncodingRegistry = encodings,
        compressions: CompressionRegistry = compressions,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        super().__init__(
            base_url, encoding, compression, use_get, encodings, compressions, max_message_size
        )
        self._owned = client is None
        self.client = client or httpx.Client(timeout=httpx.Timeout(None))

    def close(self) -> None:
        """Close the HTTP client if this transport created it."""
        if self._owned:
            self.client.close()

    def unary(self, method: MethodSpec[I, O], request: I, options: CallOptions) -> O:
        """Call a unary method (POST, or GET for NO_SIDE_EFFECTS methods with use_get)."""
        exchange = self._unary_exchange(method, request, options)
        result: O = single_sync(run_sync(self.client, exchange, options.timeout), "unary call")
        return result

    def server_stream(
        self, method: MethodSpec[I, O], request: I, options: CallOptions
    ) -> StreamCallSync[O]:
        """Call a server-streaming method; iterate the result for the responses."""
        exchange = self._stream_exchange(method, [request], options)
        return StreamCallSync(run_sync(self.client, exchange, options.timeout))

    def client_stream(
        self, method: MethodSpec[I, O], requests: Iterable[I], options: CallOptions
    ) -> O:
        """Call a client-streaming method; the requests go out as they are produced."""
        exchange = self._stream_exchange(method, as_iterable(requests), options)
        responses = run_sync(self.client, exchange, options.timeout)
        result: O = single_sync(responses, "client stream")
        return result

    def bidi_stream(
        self, method: MethodSpec[I, O], requests: Iterable[I], options: CallOptions
    ) -> StreamCallSync[O]:
        """Bidi streaming needs HTTP/2: fails with ``unimplemented``; use gRPC."""
        return StreamCallSync(bidi_refused_sync(method, "it needs HTTP/2; call it over gRPC"))


_BODY_HEADERS = {"content-type", "content-encoding"}


def _error_body(body: bytes, status: int) -> RpcError:
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    return error_from_json(parsed, status)
