"""ASGI plumbing both bridge dialects share: reading bodies, noticing disconnects,
headers, JSON errors and deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from rpckit.compression import CompressionRegistry, compressions
from rpckit.context import Context
from rpckit.encodings import EncodingRegistry, encodings
from rpckit.errors import Code, RpcError
from rpckit.http.connect import error_json, parse_timeout, request_metadata
from rpckit.metadata import Metadata
from rpckit.service import MethodSpec

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "BridgeOptions",
    "ClientGone",
    "Receive",
    "Scope",
    "Send",
    "body_chunks",
    "call_context",
    "deadline",
    "drained",
    "header_list",
    "read_body",
    "run_until_disconnect",
    "send_error",
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024


@dataclass
class BridgeOptions:
    """Settings every endpoint of one HTTP bridge shares."""

    encodings: EncodingRegistry = field(default_factory=lambda: encodings)
    compressions: CompressionRegistry = field(default_factory=lambda: compressions)
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    #: Responses smaller than this are not worth compressing.
    compress_min_bytes: int = 1024
    #: Refuse Connect requests without ``Connect-Protocol-Version: 1`` (the spec allows both).
    require_protocol_version: bool = False
    #: Set when the server shuts down: open calls end with ``unavailable`` (see ``drained``).
    drain: asyncio.Event = field(default_factory=asyncio.Event)


#: The cancellation message that tells a call the server is draining, not the client gone.
DRAIN = "rpckit: the server is shutting down"


def drained(exc: asyncio.CancelledError) -> RpcError | None:
    """The ``unavailable`` error a call ends with when ``exc`` is a drain, else None.

    Call it in an ``except CancelledError`` block; on a drain it also takes the cancellation
    back, so the call can still write its final record and complete its response.
    """
    if not exc.args or exc.args[0] != DRAIN:
        return None
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    return RpcError(Code.UNAVAILABLE, "the server is shutting down; retry")


def call_context(
    method: MethodSpec[Any, Any], scope: Scope, headers: Metadata, transport: str
) -> Context:
    """The handler's Context for an HTTP request: metadata, peer, Connect-Timeout-Ms deadline."""
    timeout = parse_timeout(headers.get("connect-timeout-ms"))
    client = scope.get("client")
    return Context(
        method,
        transport=transport,
        request_headers=request_metadata(headers),
        peer=f"{client[0]}:{client[1]}" if client else "",
        deadline=None if timeout is None else time.monotonic() + timeout,
    )


class ClientGone(Exception):
    """The client disconnected while the request was being read."""


def header_list(metadata: Metadata, prefix: str = "") -> list[tuple[bytes, bytes]]:
    return [
        ((prefix + k).encode("latin-1"), v.encode("latin-1", errors="replace")) for k, v in metadata
    ]


async def read_body(receive: Receive, limit: int) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body += message.get("body", b"")
        if len(body) > limit:
            raise RpcError(
                Code.RESOURCE_EXHAUSTED, f"request body is larger than the limit of {limit} bytes"
            )
        if not message.get("more_body", False):
            return bytes(body)


async def body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def send_error(
    send: Send, status: int, error: RpcError, headers: list[tuple[bytes, bytes]]
) -> None:
    body = json.dumps(error_json(error), separators=(",", ":")).encode()
    length = (b"content-length", str(len(body)).encode())
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), length, *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def deadline(ctx: Context) -> AsyncIterator[None]:
    """Enforce the call's deadline: on expiry, cancel the work and fail with deadline_exceeded."""
    remaining = ctx.time_remaining()
    if remaining is None:
        yield
        return
    try:
        async with asyncio.timeout(remaining):
            yield
    except TimeoutError:
        ctx.cancel()
        raise RpcError(Code.DEADLINE_EXCEEDED, "deadline exceeded") from None


async def run_until_disconnect(
    work: Coroutine[Any, Any, None], receive: Receive, ctx: Context, drain: asyncio.Event
) -> None:
    """Run ``work`` (which writes a response) until it ends or the client disconnects.

    Only for requests whose body has been read: receive() then reports nothing but the
    disconnect. A disconnect cancels the work and marks the call cancelled. ``drain`` being
    set cancels it with ``DRAIN``, which the work answers by ending its response cleanly.
    """
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_wait_disconnect(receive))
    draining = asyncio.ensure_future(drain.wait())
    try:
        await asyncio.wait([task, watch, draining], return_when=asyncio.FIRST_COMPLETED)
        if draining.done() and not task.done():
            task.cancel(DRAIN)
            await asyncio.wait([task, watch], return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            ctx.cancel()
            task.cancel()
        watch.cancel()
        draining.cancel()
        for waited in (task, watch, draining):
            with contextlib.suppress(asyncio.CancelledError):
                await waited


class BodyWriter:
    """Writes a streamed response body, merging chunks produced while a send is in flight.

    ``write()`` only queues: a writer task sends whatever is pending each time it runs, so a
    fast producer fills few large chunks and a slow one still has each chunk sent as soon as
    it yields control. ``write()`` waits once ``high_water`` bytes are pending (backpressure).
    """

    def __init__(self, send: Send, high_water: int = 64 * 1024) -> None:
        self._send = send
        self._high_water = high_water
        self._pending: list[bytes] = []
        self._size = 0
        self._final = False
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def write(self, data: bytes) -> None:
        """Queue ``data``; waits while too much is pending; raises if sending failed."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        elif self._task.done():
            self._task.result()  # re-raise what stopped the writer
            raise OSError("the response body is already complete")
        self._pending.append(data)
        self._size += len(data)
        self._idle.clear()
        self._wake.set()
        if self._size >= self._high_water:
            self._drained.clear()
            await self._drained.wait()

    async def close(self, last: bytes = b"") -> None:
        """Queue the final chunk and wait until everything has been sent."""
        if self._task is None:
            await self._send({"type": "http.response.body", "body": last, "more_body": False})
            return
        self._pending.append(last)
        self._final = True
        self._wake.set()
        await self._task

    async def flush(self) -> None:
        """Wait until everything queued so far has been handed to the server."""
        if self._task is not None and not self._task.done() and self._pending:
            await self._idle.wait()

    async def abort(self) -> None:
        """Stop the writer without finishing the body (the response is cut off)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                body = b"".join(self._pending)
                final = self._final
                self._pending.clear()
                self._size = 0
                self._drained.set()
                await self._send(
                    {"type": "http.response.body", "body": body, "more_body": not final}
                )
                if final:
                    return
                if not self._pending:
                    self._idle.set()
        finally:
            self._drained.set()  # never leave a writer waiting on a dead task
            self._idle.set()
