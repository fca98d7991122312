"""A typed-client transport over the ``rpckit.v1`` WebSocket sub-protocol: every method
shape, bidi included, one WebSocket per call (the ``websockets`` package)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from ssl import SSLContext
from typing import Any, TypeVar

from google.protobuf.message import Message
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from rpckit.client import AsyncClosing, CallOptions, StreamCall, as_async_iterable, request_metadata
from rpckit.encodings import Encoding, EncodingRegistry, encodings
from rpckit.errors import Code, RpcError
from rpckit.http.websocket.protocol import (
    MAX_CONTROL_SIZE,
    parse_server_control,
    start_frame,
    subprotocol,
)
from rpckit.limits import DEFAULT_MAX_MESSAGE_SIZE
from rpckit.service import MethodSpec

__all__ = ["WebSocketTransport"]

I = TypeVar("I", bound=Message)  # noqa: E741 - request type
O = TypeVar("O", bound=Message)  # noqa: E741 - response type

_END = '{"type":"end"}'
_CANCEL = '{"type":"cancel"}'


class WebSocketTransport(AsyncClosing):
    """Calls services over WebSocket: ``WebSocketTransport("http://host:port")``.

    ``encoding`` names the message encoding (``proto``, ``json``...); ``origin`` sets the
    Origin header (the server checks it like a browser's); ``ssl`` is the TLS context for
    ``https://``/``wss://`` URLs (for example ``ssl.create_default_context(cafile=...)`` to
    trust a private CA). Each call opens its own socket.
    """

    def __init__(
        self,
        base_url: str,
        *,
        encoding: str = "proto",
        origin: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        registry: EncodingRegistry = encodings,
        ssl: SSLContext | None = None,
    ) -> None:
        codec = registry.get(encoding)
        if codec is None:
            raise ValueError(f"unknown encoding {encoding!r}; known: {registry.names()}")
        self.codec: Encoding = codec
        url = base_url.rstrip("/")
        if url.startswith("http"):
            url = "ws" + url[4:]
        self.url = url
        self.origin = origin
        self.max_message_size = max_message_size
        if ssl is not None and not url.startswith("wss://"):
            raise ValueError(f"ssl= is for https:// or wss:// URLs, not {base_url!r}")
        self.ssl = ssl

    async def _open(self, method: MethodSpec[Any, Any], options: CallOptions) -> _Call:
        # Passed only when set: websockets gives wss:// URLs the default context by itself.
        tls: dict[str, Any] = {} if self.ssl is None else {"ssl": self.ssl}
        try:
            ws = await connect(
                self.url + method.path,
                subprotocols=[Subprotocol(subprotocol(self.codec.name))],
                origin=None if self.origin is None else self.origin,  # type: ignore[arg-type]
                max_size=self.max_message_size + MAX_CONTROL_SIZE,
                compression=None,
                proxy=None,
                **tls,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise RpcError(
                Code.PERMISSION_DENIED if status == 403 else Code.from_http_status(status),
                f"WebSocket refused with HTTP {status}",
            ) from None
        except OSError as exc:
            raise RpcError(Code.UNAVAILABLE, f"cannot connect to {self.url}: {exc}") from None
        call = _Call(ws, self.codec, method, options)
        await call.send_control(start_frame(request_metadata(options), options.timeout))
        return call

    async def unary(self, method: MethodSpec[I, O], request: I, options: CallOptions) -> O:
        call = await self._open(method, options)
        try:
            await call.send(request)
            await call.send_control(_END)
            response: O = await call.single()
            return response
        finally:
            await call.close()

    def server_stream(
        self, method: MethodSpec[I, O], request: I, options: CallOptions
    ) -> StreamCall[O]:
        return StreamCall(self._stream(method, options, [request]))

    async def client_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        options: CallOptions,
    ) -> O:
        call = await self._open(method, options)
        sender = asyncio.ensure_future(call.send_all(requests))
        try:
            response: O = await call.single()
            return response
        finally:
            await _stop(sender)
            await call.close()

    def bidi_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        options: CallOptions,
    ) -> StreamCall[O]:
        return StreamCall(self._stream(method, options, requests))

    async def _stream(
        self,
        method: MethodSpec[Any, Any],
        options: CallOptions,
        requests: AsyncIterable[Any] | Iterable[Any],
    ) -> AsyncIterator[Any]:
        call = await self._open(method, options)
        sender = asyncio.ensure_future(call.send_all(requests))
        try:
            async for message in call.responses():
                yield message
        finally:
            await _stop(sender)
            await call.close()


async def _stop(task: asyncio.Task[None]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, RpcError):
        await task


class _Call:
    """One call's socket: requests out, responses and the final status in."""

    def __init__(
        self,
        ws: ClientConnection,
        codec: Encoding,
        method: MethodSpec[Any, Any],
        options: CallOptions,
    ) -> None:
        self.ws = ws
        self.codec = codec
        self.method = method
        self.options = options
        self.ended = False

    async def send_control(self, frame: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(frame)

    async def send(self, message: Message) -> None:
        with contextlib.suppress(ConnectionClosed):  # the end frame says why
            await self.ws.send(self.codec.encode(message))

    async def send_all(self, requests: AsyncIterable[Any] | Iterable[Any]) -> None:
        async for message in as_async_iterable(requests):
            await self.send(message)
        await self.send_control(_END)

    async def responses(self) -> AsyncIterator[Any]:
        """Response messages until the server's ``end``; raises its error."""
        response = self.options.response
        while True:
            try:
                frame = await self.ws.recv()
            except ConnectionClosed as exc:
                raise RpcError(
                    Code.UNAVAILABLE, f"the WebSocket closed before the call ended ({exc})"
                ) from None
            if isinstance(frame, bytes):
                yield self.codec.decode(frame, self.method.output)
                continue
            kind, metadata, error = parse_server_control(frame)
            if kind == "headers":
                if response is not None:
                    response.headers.extend(metadata)
                continue
            self.ended = True
            if response is not None:
                response.trailers.extend(metadata)
            if error is not None:
                raise error
            return

    async def single(self) -> Any:
        """The one response of a unary or client-streaming call."""
        result = None
        async for message in self.responses():
            if result is not None:
                raise RpcError(Code.INTERNAL, "more than one response to a unary call")
            result = message
        if result is None:
            raise RpcError(Code.INTERNAL, "the call ended without a response")
        return result

    async def close(self) -> None:
        """Close the socket, cancelling the call first if it has not ended."""
        if not self.ended:
            await self.send_control(_CANCEL)
        with contextlib.suppress(Exception):
            await self.ws.close()
