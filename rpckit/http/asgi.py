"""ASGI plumbing every bridge dialect shares: reading bodies, noticing disconnects,
headers and JSON errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from google.protobuf.message import Message

from rpckit.call import ClientGone
from rpckit.compression import Compression
from rpckit.context import Context
from rpckit.encodings import Encoding
from rpckit.errors import Code, RpcError, message_too_large
from rpckit.http.options import BridgeOptions
from rpckit.http.wire import error_json
from rpckit.loops import PerLoop, weak_loop
from rpckit.metadata import Metadata

__all__ = [
    "BodyWriter",
    "BridgeOptions",
    "ClientGone",
    "DisconnectWatch",
    "Receive",
    "Scope",
    "Send",
    "body_chunks",
    "compress_message",
    "encode_response",
    "header_list",
    "read_body",
    "refuse_websocket",
    "send_error",
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: Seconds a call runs before a task starts watching for its client to leave.
WATCH_DELAY = 0.002


def encode_response(codec: Encoding, message: Message, limit: int) -> bytes:
    """A response message encoded for a stream, refused over the size limit."""
    data = codec.encode(message)
    if len(data) > limit:
        raise RpcError(
            Code.RESOURCE_EXHAUSTED,
            f"response message of {len(data)} bytes is larger than the limit",
        )
    return data


def compress_message(
    ctx: Context, data: bytes, compression: Compression | None, min_bytes: int
) -> tuple[bytes, bool]:
    """One stream message, compressed if the call compresses and the handler did not turn
    it off for this message; below ``min_bytes`` only when the handler chose compression.
    Whether it was compressed comes second (the frame's flag)."""
    if (
        ctx.take_compress_next()  # first: the per-message switch resets for every message
        and compression is not None
        and (ctx.response_compression is not None or len(data) >= min_bytes)
    ):
        return compression.compress(data), True
    return data, False


def header_list(metadata: Metadata, prefix: str = "") -> list[tuple[bytes, bytes]]:
    return [
        ((prefix + k).encode("latin-1"), v.encode("latin-1", errors="replace")) for k, v in metadata
    ]


async def read_body(receive: Receive, limit: int) -> bytes:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    first: bytes = message.get("body", b"")
    if len(first) > limit:
        raise message_too_large(limit)
    if not message.get("more_body", False):
        return bytes(first)  # the usual small body, in one piece: no copy (bytes is bytes)
    body = bytearray(first)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body += message.get("body", b"")
        if len(body) > limit:
            raise message_too_large(limit)
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


async def refuse_websocket(scope: Scope, send: Send, status: int, error: RpcError) -> None:
    """Answer a WebSocket handshake the app does not serve with an HTTP error (no upgrade).

    The one place an ASGI app that gets a ``websocket`` scope it has no endpoint for answers
    it: with the denial-response extension (uvicorn, granian) the client gets ``status`` and a
    JSON error body; without it, a close before accepting (the server says 403). Returning
    without either makes uvicorn log an error and answer 500.
    """
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})
        return
    body = json.dumps(error_json(error), separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


class DisconnectWatch:
    """Notices the client leaving once the request body has been read, and cancels the call.

    One task per call, started when the body is complete (``receive()`` then reports nothing
    but the disconnect): the call's own task runs the handler; the runner answers the
    cancellation by ending the call as ``cancelled``. The task only starts once the call has
    run for ``WATCH_DELAY`` to twice that: quick calls, most unary ones, never pay for it (a
    client that left meanwhile is still noticed, since the server keeps its disconnect for
    receive()). No timer per call either: one ``_Sweeper`` per event loop starts the tasks.
    """

    __slots__ = ("_ctx", "_generation", "_receive", "_task", "target")

    def __init__(self, receive: Receive, ctx: Context, target: asyncio.Task[Any]) -> None:
        self._receive = receive
        self._ctx = ctx
        #: The call's task (``CallRunner.current_task()``; hand it on to ``run(task=...)``).
        self.target = target
        self._task: asyncio.Task[None] | None = None
        self._generation: set[DisconnectWatch] | None = None

    def start(self) -> None:
        """Begin watching (the body must have been read)."""
        if self._generation is None and self._task is None:
            _sweepers.get(self.target.get_loop()).add(self)

    def stop(self) -> None:
        """Stop watching: the call is over."""
        if self._generation is not None:
            self._generation.discard(self)
            self._generation = None
        if self._task is not None:
            self._task.cancel()

    def _spawn(self) -> None:
        self._generation = None
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if self._ctx.finishing:
            return  # the answer is complete or nearly so: nothing left to cancel
        self._ctx.cancel()
        self.target.cancel()


class _Sweeper:
    """Starts the watch task of every call that has run for ``WATCH_DELAY`` or more.

    Calls join the young generation; each tick (every ``WATCH_DELAY`` while calls are
    waiting, none while the loop is idle) starts the old generation's tasks and ages the
    young one. A call that ends first only leaves its set: no timer is made or cancelled.
    """

    __slots__ = ("loop", "old", "timer", "young")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weak_loop(loop)  # a strong one would keep the loop (its key) alive
        self.young: set[DisconnectWatch] = set()
        self.old: set[DisconnectWatch] = set()
        self.timer: asyncio.TimerHandle | None = None

    def add(self, watch: DisconnectWatch) -> None:
        self.young.add(watch)
        watch._generation = self.young
        if self.timer is None:
            self.timer = self.loop.call_later(WATCH_DELAY, self._tick)

    def _tick(self) -> None:
        due, self.old, self.young = self.old, self.young, set()
        for watch in due:
            watch._spawn()
        self.timer = self.loop.call_later(WATCH_DELAY, self._tick) if self.old else None


_sweepers: PerLoop[_Sweeper] = PerLoop(_Sweeper)


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
        # The events and the writer task are made by the first write(): a response that
        # never streams (a unary answer, an early error) costs nothing here.
        self._wake: asyncio.Event
        self._drained: asyncio.Event
        self._idle: asyncio.Event
        self._task: asyncio.Task[None] | None = None

    async def write(self, data: bytes) -> None:
        """Queue ``data``; waits while too much is pending; raises if sending failed."""
        if self._task is None:
            self._wake, self._drained, self._idle = (
                asyncio.Event(),
                asyncio.Event(),
                asyncio.Event(),
            )
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
