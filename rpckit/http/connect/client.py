"""A typed-client transport that speaks the Connect protocol over HTTP/1.1 (httpx).

Pick the encoding per client (``proto``, ``json``, ``cbor``, ``msgpack`` or a registered
one); it works against rpckit's bridge and any other Connect server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from contextlib import AsyncExitStack
from typing import TypeVar
from urllib.parse import urlencode

import httpx
from google.protobuf.message import Message

from rpckit.client import AsyncClosing, CallOptions, StreamCall, as_async_iterable, request_metadata
from rpckit.compression import Compression, CompressionRegistry, compressions
from rpckit.encodings import Encoding, EncodingRegistry, encodings
from rpckit.errors import Code, RpcError
from rpckit.http.calls import CallErrors, bidi_refused, decode_response, one_request
from rpckit.http.connect.protocol import (
    FLAG_END_STREAM,
    PROTOCOL_VERSION,
    metadata_from_headers,
    parse_end_stream,
)
from rpckit.http.wire import FLAG_COMPRESSED, EnvelopeReader, envelope, error_from_json
from rpckit.limits import DEFAULT_MAX_MESSAGE_SIZE
from rpckit.service import Idempotency, MethodSpec

__all__ = ["ConnectTransport"]

I = TypeVar("I", bound=Message)  # noqa: E741 - request type
O = TypeVar("O", bound=Message)  # noqa: E741 - response type


class ConnectTransport(AsyncClosing):
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
        self._owned = client is None
        self.client = client or httpx.AsyncClient(timeout=httpx.Timeout(None))

    async def close(self) -> None:
        """Close the HTTP client if this transport created it."""
        if self._owned:
            await self.client.aclose()

    aclose = close

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

    # --- unary -----------------------------------------------------------------------------

    async def unary(self, method: MethodSpec[I, O], request: I, options: CallOptions) -> O:
        """Call a unary method (POST, or GET for NO_SIDE_EFFECTS methods with use_get)."""
        url = self.base_url + method.path
        headers = self._headers(options, streaming=False)
        data, compressed = self._encode(request)
        async with CallErrors.after(options.timeout):
            if self.use_get and method.idempotency is Idempotency.NO_SIDE_EFFECTS:
                query = {"connect": "v1", "encoding": self.codec.name}
                query["message"] = base64.urlsafe_b64encode(data).decode().rstrip("=")
                query["base64"] = "1"
                if compressed and self.compression is not None:
                    query["compression"] = self.compression.name
                get_headers = [(k, v) for k, v in headers if k not in _BODY_HEADERS]
                response = await self.client.get(f"{url}?{urlencode(query)}", headers=get_headers)
            else:
                response = await self.client.post(url, content=data, headers=headers)
        body = response.content
        decompressor = self._decompressor(response.headers.get("content-encoding"))
        if decompressor is not None and body:
            body = decompressor.decompress(body, self.max_message_size)
        leading, trailing = metadata_from_headers(response.headers.multi_items())
        if options.response is not None:
            options.response.headers, options.response.trailers = leading, trailing
        if response.status_code != 200:
            error = _error_body(body, response.status_code)
            error.metadata = trailing.items()
            raise error
        return decode_response(self.codec, body, method.output)

    # --- streams ---------------------------------------------------------------------------

    def server_stream(
        self, method: MethodSpec[I, O], request: I, options: CallOptions
    ) -> StreamCall[O]:
        """Call a server-streaming method; iterate the result for the responses."""
        return StreamCall(self._stream(method, one_request(request), options))

    async def client_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        options: CallOptions,
    ) -> O:
        """Call a client-streaming method; the requests go out as they are produced."""
        responses = self._stream(method, as_async_iterable(requests), options)
        try:
            result = await anext(responses, None)
            if result is None:
                raise RpcError(Code.INTERNAL, "client stream ended without a response")
            if await anext(responses, None) is not None:
                raise RpcError(Code.INTERNAL, "client stream got more than one response")
            return result
        finally:
            await responses.aclose()

    def bidi_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        options: CallOptions,
    ) -> StreamCall[O]:
        """Bidi streaming needs HTTP/2: fails with ``unimplemented``; use gRPC."""
        return StreamCall(bidi_refused(method, "it needs HTTP/2; call it over gRPC"))

    async def _stream(
        self, method: MethodSpec[I, O], requests: AsyncIterable[I], options: CallOptions
    ) -> AsyncGenerator[O, None]:
        headers = self._headers(options, streaming=True)
        loop = asyncio.get_running_loop()
        deadline = None if options.timeout is None else loop.time() + options.timeout
        async with AsyncExitStack() as stack:
            async with CallErrors(deadline):
                response = await stack.enter_async_context(
                    self.client.stream(
                        "POST",
                        self.base_url + method.path,
                        content=self._envelopes(requests),
                        headers=headers,
                    )
                )
            leading, _ = metadata_from_headers(response.headers.multi_items())
            if options.response is not None:
                options.response.headers = leading
            if response.status_code != 200:
                async with CallErrors(deadline):
                    body = await response.aread()
                raise _error_body(body, response.status_code)
            decompressor = self._decompressor(response.headers.get("connect-content-encoding"))
            reader = EnvelopeReader(self.max_message_size)
            chunks = response.aiter_raw()
            while True:
                async with CallErrors(deadline):
                    chunk = await anext(chunks, None)
                if chunk is None:
                    break
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
                    yield decode_response(self.codec, data, method.output)
            reader.close()
            raise RpcError(Code.INTERNAL, "stream ended without an end-of-stream message")

    async def _envelopes(self, requests: AsyncIterable[Message]) -> AsyncIterator[bytes]:
        async for request in requests:
            data, compressed = self._encode(request)
            yield envelope(data, FLAG_COMPRESSED if compressed else 0)


_BODY_HEADERS = {"content-type", "content-encoding"}


def _error_body(body: bytes, status: int) -> RpcError:
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    return error_from_json(parsed, status)
