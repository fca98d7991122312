"""Limits on what one HTTP connection may hold: header, idle and body-progress timeouts, and
requests with ambiguous framing.

- **header timeout**: a connection must deliver a complete request head within this many
  seconds of opening (or of the previous response); otherwise it is closed. On uvicorn a
  protocol subclass (``guarded_protocol``) does it, covering connections that never send a
  byte; on granian its own ``header_read_timeout`` does, once the first byte has arrived.
- **idle timeout**: a keep-alive connection with no request in flight is closed after this
  many seconds (uvicorn's ``timeout_keep_alive``; granian's header timeout covers it).
- **body timeout**: once a request is being read, every piece of its body must follow the
  previous one within this many seconds; a stalled body ends the call with
  ``deadline_exceeded`` (the ASGI ``RequestGuard``, the same on every server).
- **ambiguous framing**: ``Content-Length`` together with ``Transfer-Encoding`` is answered
  400 with ``Connection: close`` (RFC 9112 §6.1), before any handler runs.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import MutableMapping
from typing import Any

from rpckit.errors import Code, RpcError
from rpckit.loops import PerLoop, current_task, weak_loop
from rpckit.serving.options import HttpTimeouts

__all__ = [
    "HttpTimeouts",
    "RequestGuard",
    "ambiguous_framing",
    "guarded_protocol",
    "uvicorn_protocol",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


def ambiguous_framing(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request head carries both Content-Length and Transfer-Encoding."""
    length, chunked = _framing_headers(headers)
    return length and chunked


def _framing_headers(headers: list[tuple[bytes, bytes]]) -> tuple[bool, bool]:
    """Whether the head has Content-Length, and whether it has Transfer-Encoding."""
    length = chunked = False
    for name, _ in headers:
        if len(name) == 14 and name.lower() == b"content-length":
            length = True
        elif len(name) == 17 and name.lower() == b"transfer-encoding":
            chunked = True
    return length, chunked


_AMBIGUOUS = json.dumps(
    {
        "code": Code.INVALID_ARGUMENT.connect_name,
        "message": "a request may not carry both Content-Length and Transfer-Encoding",
    },
    separators=(",", ":"),
).encode()


class RequestGuard:
    """ASGI middleware: refuses ambiguous framing and bounds the wait for each body piece.

    ``loop`` is the event loop the server runs the app on, when known (the servers of
    ``rpckit.serving.http_server`` set it when they start): the body watch then needs no system
    call per request (see ``rpckit.loops.current_task``).
    """

    def __init__(self, app: Any, *, body_timeout: float | None = 30.0) -> None:
        self.app = app
        self.body_timeout = body_timeout
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Starlette-style apps expose ``state`` (the drain event lives there).
        self.state = getattr(app, "state", None)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, chunked = _framing_headers(scope.get("headers", []))
        if length and chunked:
            await _refuse_ambiguous(send)
            return
        bodiless = not (length or chunked) and scope.get("method") in ("GET", "HEAD")
        if self.body_timeout is not None and not bodiless:
            receive = _BodyProgress(receive, self.body_timeout, self.loop)
        await self.app(scope, receive, send)


async def _refuse_ambiguous(send: Any) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_AMBIGUOUS)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": _AMBIGUOUS})


class _BodyProgress:
    """``receive`` with a time limit on each body piece, until the body is complete (after
    that, receive() only reports the disconnect, and may wait as long as the call runs).

    No timer per piece: a waiting receive joins its loop's ``_StallWatch``, whose one timer
    fires at the earliest deadline of all waiting receives (a small body, already read with
    the head, joins and leaves it without the loop ever running in between)."""

    __slots__ = ("_complete", "_loop", "_receive", "_timeout", "deadline", "stalled", "task")

    def __init__(
        self, receive: Any, timeout: float, loop: asyncio.AbstractEventLoop | None
    ) -> None:
        self._receive = receive
        self._timeout = timeout
        self._loop = loop
        self._complete = False
        self.deadline = 0.0
        self.stalled = False
        self.task: asyncio.Task[Any] | None = None

    async def __call__(self) -> Message:
        if self._complete:
            message: Message = await self._receive()
            return message
        task = self.task
        if task is None:
            task = self.task = current_task(self._loop)
        watch = _watches.get(task.get_loop())
        self.stalled = False
        self.deadline = watch.loop.time() + self._timeout
        watch.add(self)
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if not self.stalled:
                raise
            task.uncancel()  # the stall's own cancellation, answered here
            raise RpcError(
                Code.DEADLINE_EXCEEDED,
                f"the request body stalled: no data for {self._timeout:g} s",
            ) from None
        finally:
            watch.waiting.discard(self)
        if message["type"] != "http.request" or not message.get("more_body", False):
            self._complete = True
        return message


class _StallWatch:
    """One loop's waiting body receives, and one timer for the earliest of their deadlines;
    a receive still waiting at its deadline is marked stalled and its task cancelled."""

    __slots__ = ("due", "loop", "timer", "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weak_loop(loop)  # a strong one would keep the loop (its key) alive
        self.waiting: set[_BodyProgress] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.due = math.inf

    def add(self, progress: _BodyProgress) -> None:
        self.waiting.add(progress)
        if progress.deadline < self.due:  # no timer yet, or a shorter timeout than the rest
            self._arm(progress.deadline)

    def _arm(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.due = when
        self.timer = self.loop.call_at(when, self._check)

    def _check(self) -> None:
        self.timer, self.due = None, math.inf
        now = self.loop.time()
        expired = [p for p in self.waiting if p.deadline <= now]
        for progress in expired:
            self.waiting.discard(progress)
            progress.stalled = True
            assert progress.task is not None
            progress.task.cancel()
        if self.waiting:
            self._arm(min(p.deadline for p in self.waiting))


_watches: PerLoop[_StallWatch] = PerLoop(_StallWatch)


def guarded_protocol(base: type[Any], header_timeout: float) -> type[Any]:
    """A uvicorn HTTP protocol class that closes a connection whose request head is not
    complete ``header_timeout`` seconds after it opened (or after the previous response):
    a client trickling headers, or connecting and sending nothing, holds no socket for long.
    """

    class HeaderTimeoutProtocol(base):  # type: ignore[misc]
        # One timer per connection, not one per request: a response only notes when the
        # connection went idle, and the timer, when it fires, re-arms for what is left.
        _header_timer: asyncio.TimerHandle | None = None
        _idle_since = 0.0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._idle_since = self.loop.time()
            self._header_timer = self.loop.call_later(header_timeout, self._header_timeout)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._idle_since = self.loop.time()
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._header_timeout)

        def handle_websocket_upgrade(self, *args: Any) -> None:
            # The timer guards the wait for a request head; an upgraded connection has left
            # that phase for good (the socket now belongs to the WebSocket protocol, whose
            # own limits apply), so the timer ends here rather than cutting the call.
            self._stop_header_timer()
            super().handle_websocket_upgrade(*args)

        def _stop_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            super().connection_lost(exc)

        def _header_timeout(self) -> None:
            self._header_timer = None
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                return  # a request is being answered; its end arms the timer again
            waited = self.loop.time() - self._idle_since
            if waited < header_timeout:
                self._header_timer = self.loop.call_later(
                    header_timeout - waited, self._header_timeout
                )
            elif not self.transport.is_closing():
                self.transport.close()  # no request head arrived in time

    HeaderTimeoutProtocol.__name__ = f"HeaderTimeout{base.__name__}"
    return HeaderTimeoutProtocol


def uvicorn_protocol(parser: str, header_timeout: float) -> type[Any]:
    """uvicorn's protocol class for ``parser`` (``auto``: httptools when installed, else
    h11), with the header timeout."""
    base: type[Any]
    if parser in ("auto", "httptools"):
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        except ImportError:
            if parser == "httptools":
                raise
        else:
            return guarded_protocol(HttpToolsProtocol, header_timeout)
    from uvicorn.protocols.http.h11_impl import H11Protocol

    base = H11Protocol
    return guarded_protocol(base, header_timeout)
