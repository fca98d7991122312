"""What typed clients share across transports: call options, response metadata, stream calls.

A generated ``*Client`` class turns each method into one call on a ``Transport``;
``rpckit.grpc.GrpcTransport`` is one, the HTTP bridge's clients (``rpckit.http``) are
others, and ``rpckit.interceptors.intercept(transport, [...])`` puts client interceptors
around any of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, Protocol, Self, TypeVar

from google.protobuf.message import Message

from rpckit.metadata import Metadata, MetadataLike
from rpckit.service import MethodSpec
from rpckit.streams import aclose

__all__ = [
    "AsyncClosing",
    "CallOptions",
    "ResponseMetadata",
    "StreamCall",
    "Transport",
    "as_async_iterable",
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
