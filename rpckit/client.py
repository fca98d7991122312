"""What typed clients share across transports: call options, response metadata, stream calls.

A generated ``*Client`` class turns each method into one call on a ``Transport``;
``rpckit.grpc.GrpcTransport`` is one, the HTTP bridge's clients (``rpckit.http``) are
others, and ``rpckit.interceptors.intercept(transport, [...])`` puts client interceptors
around any of them.

The blocking side mirrors it: a generated ``*ClientSync`` calls a ``TransportSync``
(``GrpcTransportSync``, ``ConnectTransportSync``, ``GrpcWebTransportSync``,
``RestTransportSync``); streams are ``StreamCallSync`` iterators with ``close()``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

from google.protobuf.message import Message

from rpckit.durable.options import FINAL_HEADER, OFFSET_HEADER, STREAM_HEADER
from rpckit.errors import Code, RpcError
from rpckit.metadata import Metadata, MetadataLike
from rpckit.service import MethodSpec
from rpckit.streams import aclose

__all__ = [
    "AsyncClosing",
    "CallOptions",
    "Closing",
    "ResponseMetadata",
    "Resuming",
    "ResumingSync",
    "StreamCall",
    "StreamCallSync",
    "Transport",
    "TransportSync",
    "as_async_iterable",
    "as_iterable",
    "request_metadata",
]

I = TypeVar("I", bound=Message)  # noqa: E741 - request type
O = TypeVar("O", bound=Message)  # noqa: E741 - response type
T = TypeVar("T")


@dataclass(slots=True)
class ResponseMetadata:
    """Filled in by a call: the response headers, then the trailers once the call ends."""

    headers: Metadata = field(default_factory=Metadata)
    trailers: Metadata = field(default_factory=Metadata)


@dataclass(frozen=True, slots=True)
class CallOptions:
    """Per-call settings: timeout in seconds, request metadata, where to put response metadata."""

    timeout: float | None = None
    metadata: MetadataLike | None = None
    response: ResponseMetadata | None = None


class AsyncClosing:
    """``async with`` support for anything with an ``aclose()``."""

    async def aclose(self) -> None:
        """Release what this object holds."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class StreamCall(AsyncClosing, Generic[T]):
    """The responses of a streaming call: iterate them; ``aclose()`` (or leaving
    ``async with``) cancels the call if it is still running."""

    def __init__(self, responses: AsyncIterator[T]) -> None:
        self._responses = responses

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        return await self._responses.__anext__()

    async def aclose(self) -> None:
        """Cancel the call if it is still running."""
        await aclose(self._responses)


class Transport(Protocol):
    """How a typed client reaches a server; one implementation per wire protocol."""

    async def unary(self, method: MethodSpec[I, O], request: I, options: CallOptions) -> O: ...

    def server_stream(
        self, method: MethodSpec[I, O], request: I, options: CallOptions
    ) -> StreamCall[O]: ...

    async def client_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        options: CallOptions,
    ) -> O: ...

    def bidi_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        options: CallOptions,
    ) -> StreamCall[O]: ...


async def _from_iterable(items: Iterable[T]) -> AsyncIterator[T]:
    for item in items:
        yield item


def as_async_iterable(items: AsyncIterable[T] | Iterable[T]) -> AsyncIterable[T]:
    """Accept either kind of iterable where a stream of requests is expected; anything else
    (one message, say) is a TypeError at once, the same on every transport."""
    if isinstance(items, AsyncIterable):
        return items
    if not isinstance(items, Iterable):
        raise TypeError(
            f"a streaming call takes an iterable or async iterable of requests, not a "
            f"{type(items).__name__}; pass [request] for a single one"
        )
    return _from_iterable(items)


def request_metadata(options: CallOptions) -> list[tuple[str, str]]:
    """The request metadata of a call as ordered pairs."""
    return Metadata(options.metadata).items() if options.metadata else []


class Closing:
    """``with`` support for anything with a ``close()``: the blocking ``AsyncClosing``."""

    def close(self) -> None:
        """Release what this object holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class StreamCallSync(Closing, Generic[T]):
    """The responses of a streaming call of a blocking client: iterate them; ``close()``
    (or leaving ``with``) cancels the call if it is still running."""

    def __init__(self, responses: Iterator[T], cancel: Callable[[], None] | None = None) -> None:
        self._responses = responses
        self._cancel = cancel

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> T:
        return next(self._responses)

    def close(self) -> None:
        """Cancel the call if it is still running."""
        close = getattr(self._responses, "close", None)
        try:
            if close is not None:
                close()
        finally:
            if self._cancel is not None:
                self._cancel()


class TransportSync(Protocol):
    """How a blocking typed client (``*ClientSync``) reaches a server."""

    def unary(self, method: MethodSpec[I, O], request: I, options: CallOptions) -> O: ...

    def server_stream(
        self, method: MethodSpec[I, O], request: I, options: CallOptions
    ) -> StreamCallSync[O]: ...

    def client_stream(
        self, method: MethodSpec[I, O], requests: Iterable[I], options: CallOptions
    ) -> O: ...

    def bidi_stream(
        self, method: MethodSpec[I, O], requests: Iterable[I], options: CallOptions
    ) -> StreamCallSync[O]: ...

    def close(self) -> None:
        """Release what the transport holds (a generated ``*ClientSync`` calls it on exit)."""


def as_iterable(items: Iterable[T]) -> Iterable[T]:
    """The requests of a blocking streaming call: an iterable (not an async one, not one
    message), else a TypeError at once, the same on every blocking transport."""
    if isinstance(items, AsyncIterable) or not isinstance(items, Iterable):
        raise TypeError(
            f"a blocking streaming call takes an iterable of requests, not a "
            f"{type(items).__name__}; pass [request] for a single one"
        )
    return items


class _Resume:
    """What ``Resuming`` and ``ResumingSync`` remember across the attempts of one stream:
    the stream id, the offset (items received) and the resumes in a row without an item."""

    def __init__(self, options: CallOptions, attempts: int) -> None:
        self.options = options
        self.attempts = attempts
        self.given = Metadata(options.metadata) if options.metadata else Metadata()
        self.stream = self.given.get(STREAM_HEADER)
        self.offset = int(self.given.get(OFFSET_HEADER) or 0)
        self.fruitless = 0
        self.response = ResponseMetadata()

    def next_options(self) -> CallOptions:
        """The options of the next attempt: the stream and offset named once known."""
        metadata = self.given.without(frozenset({STREAM_HEADER, OFFSET_HEADER}))
        if self.stream is not None:
            metadata.set(STREAM_HEADER, self.stream)
            metadata.set(OFFSET_HEADER, str(self.offset))
        given = self.options.response
        self.response = given if given is not None else ResponseMetadata()
        self.response.headers = Metadata()
        return CallOptions(timeout=self.options.timeout, metadata=metadata, response=self.response)

    def received(self) -> None:
        """One item arrived."""
        if self.stream is None:
            self.stream = self.response.headers.get(STREAM_HEADER)
        self.offset += 1
        self.fruitless = 0

    def delay(self, exc: RpcError) -> float:
        """How long to wait before resuming after ``exc``; raises it when not resumable."""
        if self.stream is None:
            self.stream = self.response.headers.get(STREAM_HEADER)
        final = any(key == FINAL_HEADER for key, _ in exc.metadata)
        if exc.code is not Code.UNAVAILABLE or final or self.stream is None:
            raise exc
        self.fruitless += 1
        if self.fruitless > self.attempts:
            raise exc
        return min(0.05 * 2.0**self.fruitless, 2.0)  # back off, then resume


class Resuming:
    """A ``Transport`` that resumes durable server streams after a transport error: it keeps
    the stream id the server named (``rpckit-stream-id``) and counts the items received, and
    when the call fails with ``unavailable`` that is not the stream's own end (no
    ``rpckit-stream-final`` trailer), calls again naming the stream and that offset, on the
    same transport (behind a proxy: any instance). ``attempts`` bounds the resumes in a row
    that bring no item. Everything else passes through unchanged.

    ``StreamsServiceClient(Resuming(ConnectTransport(...)))``
    """

    def __init__(self, transport: Transport, *, attempts: int = 5) -> None:
        self.transport = transport
        self.attempts = attempts

    async def unary(self, method: MethodSpec[I, O], request: I, options: CallOptions) -> O:
        return await self.transport.unary(method, request, options)

    def server_stream(
        self, method: MethodSpec[I, O], request: I, options: CallOptions
    ) -> StreamCall[O]:
        return StreamCall(self._resumed(method, request, options))

    async def client_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        options: CallOptions,
    ) -> O:
        return await self.transport.client_stream(method, requests, options)

    def bidi_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        options: CallOptions,
    ) -> StreamCall[O]:
        return self.transport.bidi_stream(method, requests, options)

    async def _resumed(
        self, method: MethodSpec[I, O], request: I, options: CallOptions
    ) -> AsyncIterator[O]:
        state = _Resume(options, self.attempts)
        while True:
            call = self.transport.server_stream(method, request, state.next_options())
            try:
                async for item in call:
                    state.received()
                    yield item
                return
            except RpcError as exc:
                await asyncio.sleep(state.delay(exc))
            finally:
                await call.aclose()


class ResumingSync(Closing):
    """``Resuming`` for blocking clients: wraps a ``TransportSync`` the same way.

    ``StreamsServiceClientSync(ResumingSync(ConnectTransportSync(...)))``
    """

    def __init__(self, transport: TransportSync, *, attempts: int = 5) -> None:
        self.transport = transport
        self.attempts = attempts

    def close(self) -> None:
        """Close the wrapped transport."""
        close: Any = getattr(self.transport, "close", None)
        if close is not None:
            close()

    def unary(self, method: MethodSpec[I, O], request: I, options: CallOptions) -> O:
        return self.transport.unary(method, request, options)

    def server_stream(
        self, method: MethodSpec[I, O], request: I, options: CallOptions
    ) -> StreamCallSync[O]:
        return StreamCallSync(self._resumed(method, request, options))

    def client_stream(
        self, method: MethodSpec[I, O], requests: Iterable[I], options: CallOptions
    ) -> O:
        return self.transport.client_stream(method, requests, options)

    def bidi_stream(
        self, method: MethodSpec[I, O], requests: Iterable[I], options: CallOptions
    ) -> StreamCallSync[O]:
        return self.transport.bidi_stream(method, requests, options)

    def _resumed(self, method: MethodSpec[I, O], request: I, options: CallOptions) -> Iterator[O]:
        state = _Resume(options, self.attempts)
        while True:
            call = self.transport.server_stream(method, request, state.next_options())
            try:
                for item in call:
                    state.received()
                    yield item
                return
            except RpcError as exc:
                time.sleep(state.delay(exc))
            finally:
                call.close()
