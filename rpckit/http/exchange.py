"""One HTTP call written once, run over ``httpx.AsyncClient`` or ``httpx.Client``.

A dialect's client writes each call as an *exchange*: a plain generator that yields what it
needs done and receives the result, free of I/O and of async:

- ``Send(...)``: send the request (a body, or the caller's requests encoded one by one as
  they come); receives the ``Answer`` (status and headers);
- ``READ``: the next body chunk (``None`` at the end); ``READ_ALL``: the whole body;
- ``Emit(message)``: hand one response to the caller.

``run_async`` and ``run_sync`` are the only code that touches httpx: both keep the call's
deadline and turn httpx's failures into ``deadline_exceeded`` or ``unavailable``, so the
async and blocking transports of a dialect share every wire rule and every step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Generator, Iterable, Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from rpckit.client import as_async_iterable, as_iterable
from rpckit.errors import Code, RpcError
from rpckit.http.calls import CallErrors

__all__ = [
    "READ",
    "READ_ALL",
    "Answer",
    "Emit",
    "Exchange",
    "Send",
    "run_async",
    "run_sync",
    "single",
    "single_sync",
]

Headers = list[tuple[str, str]]


@dataclass(slots=True)
class Send:
    """Send the request: ``content``, or ``requests`` (the caller's messages, sync or async)
    each turned into body bytes by ``encode`` as it comes. ``first``, if set, is called with
    the first request (None if there is none) before anything is sent and gives more headers
    (a file upload's content type rides on its first chunk)."""

    method: str
    url: str
    headers: Headers
    content: bytes | None = None
    requests: AsyncIterable[Any] | Iterable[Any] | None = None
    encode: Callable[[Any], bytes] | None = None
    first: Callable[[Any], Headers] | None = None
    #: Read the body as httpx decodes it (Content-Encoding undone) rather than raw.
    decoded: bool = False


@dataclass(slots=True)
class Answer:
    """The response head."""

    status: int
    headers: Headers = field(default_factory=list)


@dataclass(slots=True)
class Emit:
    """One response message for the caller."""

    message: Any


class _Op:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


READ = _Op("READ")
READ_ALL = _Op("READ_ALL")

#: A call as a generator of operations (see the module's docstring).
Exchange = Generator[Send | _Op | Emit, Any, None]


def _errors(exc: BaseException) -> RpcError | None:
    if isinstance(exc, httpx.TimeoutException):
        return RpcError(Code.DEADLINE_EXCEEDED, "deadline exceeded")
    if isinstance(exc, httpx.TransportError):
        return RpcError(Code.UNAVAILABLE, f"connection failed: {exc}")
    return None


# --- async -------------------------------------------------------------------------------


async def _encoded_async(
    first: Any, rest: AsyncIterator[Any], encode: Callable[[Any], bytes], pending: bool
) -> AsyncIterator[bytes]:
    if pending:
        yield encode(first)
    async for item in rest:
        yield encode(item)


async def _body_async(op: Send) -> tuple[Headers, Any]:
    if op.requests is None:
        return op.headers, op.content
    assert op.encode is not None
    source = aiter(as_async_iterable(op.requests))
    headers, first, pending = op.headers, None, False
    if op.first is not None:
        first = await anext(source, None)
        pending = first is not None
        headers = headers + op.first(first)
    return headers, _encoded_async(first, source, op.encode, pending)


async def run_async(
    client: httpx.AsyncClient,
    exchange: Exchange,
    timeout: float | None,  # noqa: ASYNC109 - the call's deadline, kept inside
) -> AsyncIterator[Any]:
    """Run ``exchange`` over ``client``: the messages it emits, within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    async with AsyncExitStack() as stack:
        response: httpx.Response | None = None
        chunks: AsyncIterator[bytes] | None = None
        value: Any = None
        try:
            while True:
                try:
                    op = exchange.send(value)
                except StopIteration:
                    return
                value = None
                if isinstance(op, Emit):
                    yield op.message
                elif isinstance(op, Send):
                    headers, content = await _body_async(op)
                    request = client.build_request(
                        op.method, op.url, headers=headers, content=content
                    )
                    async with CallErrors(deadline):
                        sent = await client.send(request, stream=True)
                    stack.push_async_callback(sent.aclose)
                    response = sent
                    chunks = sent.aiter_bytes() if op.decoded else sent.aiter_raw()
                    value = Answer(sent.status_code, sent.headers.multi_items())
                elif op is READ:
                    assert chunks is not None, "READ before Send"
                    async with CallErrors(deadline):
                        value = await anext(chunks, None)
                else:
                    assert response is not None, "READ_ALL before Send"
                    async with CallErrors(deadline):
                        value = await response.aread()
        finally:
            exchange.close()


async def single(responses: AsyncIterator[Any], what: str) -> Any:
    """The one message a unary or client-streaming call answers (``internal`` otherwise)."""
    try:
        result = await anext(responses, None)
        if result is None:
            raise RpcError(Code.INTERNAL, f"{what} ended without a response message")
        if await anext(responses, None) is not None:
            raise RpcError(Code.INTERNAL, f"{what} got more than one response message")
        return result
    finally:
        await responses.aclose()  # type: ignore[attr-defined]  # an async generator


# --- blocking ----------------------------------------------------------------------------


def _encoded_sync(
    first: Any, rest: Iterator[Any], encode: Callable[[Any], bytes], pending: bool
) -> Iterator[bytes]:
    if pending:
        yield encode(first)
    for item in rest:
        yield encode(item)


def _body_sync(op: Send) -> tuple[Headers, Any]:
    if op.requests is None:
        return op.headers, op.content
    assert op.encode is not None
    if isinstance(op.requests, AsyncIterable):
        raise TypeError("a blocking streaming call takes an iterable of requests, not an async one")
    source = iter(as_iterable(op.requests))
    headers, first, pending = op.headers, None, False
    if op.first is not None:
        first = next(source, None)
        pending = first is not None
        headers = headers + op.first(first)
    return headers, _encoded_sync(first, source, op.encode, pending)


@contextmanager
def _within(deadline: float | None) -> Iterator[None]:
    try:
        yield
    except httpx.HTTPError as exc:
        error = _errors(exc)
        if error is None:
            raise
        late = deadline is not None and time.monotonic() >= deadline
        if error.code is Code.UNAVAILABLE and late:
            error = RpcError(Code.DEADLINE_EXCEEDED, "deadline exceeded")
        raise error from None
    if deadline is not None and time.monotonic() > deadline:
        raise RpcError(Code.DEADLINE_EXCEEDED, "deadline exceeded")


def _timeout(deadline: float | None) -> httpx.Timeout | None:
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise RpcError(Code.DEADLINE_EXCEEDED, "deadline exceeded")
    return httpx.Timeout(remaining)


def run_sync(client: httpx.Client, exchange: Exchange, timeout: float | None) -> Iterator[Any]:
    """Run ``exchange`` over a blocking ``client``: the messages it emits. The deadline
    bounds every read (httpx's read timeout is the time left when the call starts) and is
    checked after each one."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with ExitStack() as stack:
        response: httpx.Response | None = None
        chunks: Iterator[bytes] | None = None
        value: Any = None
        try:
            while True:
                try:
                    op = exchange.send(value)
                except StopIteration:
                    return
                value = None
                if isinstance(op, Emit):
                    yield op.message
                elif isinstance(op, Send):
                    headers, content = _body_sync(op)
                    limit = _timeout(deadline)
                    request = client.build_request(
                        op.method,
                        op.url,
                        headers=headers,
                        content=content,
                        timeout=httpx.USE_CLIENT_DEFAULT if limit is None else limit,
                    )
                    with _within(deadline):
                        response = client.send(request, stream=True)
                    stack.callback(response.close)
                    chunks = response.iter_bytes() if op.decoded else response.iter_raw()
                    value = Answer(response.status_code, response.headers.multi_items())
                elif op is READ:
                    assert chunks is not None, "READ before Send"
                    with _within(deadline):
                        value = next(chunks, None)
                else:
                    assert response is not None, "READ_ALL before Send"
                    with _within(deadline):
                        value = response.read()
        finally:
            exchange.close()


def single_sync(responses: Iterator[Any], what: str) -> Any:
    """``single`` for blocking calls."""
    try:
        result = next(responses, None)
        if result is None:
            raise RpcError(Code.INTERNAL, f"{what} ended without a response message")
        if next(responses, None) is not None:
            raise RpcError(Code.INTERNAL, f"{what} got more than one response message")
        return result
    finally:
        close = getattr(responses, "close", None)
        if close is not None:
            close()
