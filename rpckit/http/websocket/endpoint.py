"""Serves one RPC per WebSocket (the ``rpckit.v1`` sub-protocol) on Starlette's WebSocket
support: an adapter on the call runner, for every method shape, bidi included.

A reader task takes frames off the socket into a small bounded queue that the handler's
request iterator drains, so a client that sends faster than the handler reads is held back
by the server's flow control; sends wait for the socket (a client that never reads holds
the handler, not memory). Closing the socket or a ``cancel`` frame cancels the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import Any

from google.protobuf.message import Message
from starlette.websockets import WebSocket, WebSocketDisconnect

from rpckit.call import CallRunner, ClientGone
from rpckit.context import Context
from rpckit.encodings import Encoding
from rpckit.errors import Code, RpcError, message_too_large
from rpckit.http.adapter import call_context, checked_size
from rpckit.http.asgi import BridgeOptions, Receive, Scope, Send
from rpckit.http.websocket.protocol import (
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    choose_subprotocol,
    end_frame,
    headers_frame,
    origin_allowed,
    parse_client_control,
    parse_start,
)
from rpckit.http.wire import ONE_REQUEST, Head, request_metadata
from rpckit.service import MethodSpec
from rpckit.streams import Event

__all__ = ["WebSocketCalls", "WebSocketEndpoint"]

log = logging.getLogger("rpckit.http.websocket")

Handler = Callable[..., Any]
#: Request messages decoded ahead of the handler (the rest waits in the server's buffers).
QUEUE_SIZE = 8


class _End:
    """The client half-closed its side."""


_END = _End()


class WebSocketCalls:
    """The WebSocket calls in flight on one bridge, so that shutdown can end them with
    ``unavailable`` (and a proper close) before the server drops their sockets."""

    def __init__(self, runner: CallRunner) -> None:
        self.runner = runner
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    async def close_all(self, wait: float = 2.0) -> None:
        """End every call with ``unavailable`` and wait (at most ``wait`` seconds) for them."""
        tasks = list(self._tasks)
        for task in tasks:
            self.runner.drain.end(task)
        if tasks:
            await asyncio.wait(tasks, timeout=wait)


class WebSocketEndpoint:
    """The ASGI app for one method's WebSocket calls."""

    def __init__(
        self,
        method: MethodSpec[Any, Any],
        handler: Handler,
        options: BridgeOptions,
        runner: CallRunner,
        calls: WebSocketCalls,
        *,
        origins: Sequence[str] = (),
        origin_regex: str | None = None,
    ) -> None:
        self.method = method
        self.handler = handler
        self.options = options
        self.runner = runner
        self.calls = calls
        self.origins = tuple(origins)
        self.origin_regex = origin_regex

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        refusal, chosen = self._handshake(ws.headers.get("origin"), ws.headers.get("host"), scope)
        if refusal is not None:  # before accept: the server answers the handshake with 403
            head = Head(request_metadata(ws.headers.items()), refusal=refusal)
            ctx = call_context(self.method, scope, head, "websocket", "websocket")
            await self.runner.refuse(ctx, refusal, partial(_close_unaccepted, ws))
            return
        codec = self.options.encodings.get(chosen.rsplit(".", 1)[1] if chosen else "json")
        assert codec is not None
        await ws.accept(subprotocol=chosen)
        task = asyncio.current_task()
        assert task is not None
        self.calls._tasks.add(task)
        try:
            await self._serve(ws, scope, codec)
        except (WebSocketDisconnect, ClientGone):
            pass
        finally:
            self.calls._tasks.discard(task)

    def _handshake(
        self, origin: str | None, host: str | None, scope: Scope
    ) -> tuple[RpcError | None, str | None]:
        """The head step of the handshake (no I/O): the refusal of an origin not allowed or of
        sub-protocols that name no encoding of the bridge, else the chosen sub-protocol."""
        scheme = str(scope.get("scheme", "ws"))
        if not origin_allowed(origin, host, self.origins, self.origin_regex, scheme):
            return RpcError(Code.PERMISSION_DENIED, "origin not allowed"), None
        offered = scope.get("subprotocols") or []
        chosen = choose_subprotocol(offered, self.options.encodings.names())
        if offered and chosen is None:
            message = "no supported sub-protocol (rpckit.v1.<encoding>)"
            return RpcError(Code.UNIMPLEMENTED, message), None
        return None, chosen

    async def _serve(self, ws: WebSocket, scope: Scope, codec: Encoding) -> None:
        first = await ws.receive()
        if first["type"] == "websocket.disconnect":
            return
        responder = _Responder(ws, codec, self.options.max_message_size)
        try:
            start = parse_start(first.get("text", first.get("bytes")))
        except RpcError as error:  # a bad first frame: refused before the call starts
            head = Head(request_metadata(ws.headers.items()), refusal=error)
            ctx = call_context(self.method, scope, head, "websocket", "websocket")
            await self.runner.refuse(ctx, error, responder.refuse)
            return
        head = Head(request_metadata(start.headers), timeout=start.timeout)
        ctx = call_context(self.method, scope, head, "websocket", "websocket")
        reader = _Reader(ws, codec, self.method.input, self.options.max_message_size, ctx)
        reader.responder = responder
        reader.start()
        try:
            if self.method.kind.client_streams:
                await self.runner.run(ctx, self.handler, reader.messages(), responder)
            else:
                await self.runner.run(ctx, self.handler, reader.one, responder)
        finally:
            await reader.stop()
        if reader.cancelled and not responder.closed:
            with contextlib.suppress(Exception):
                await ws.close(CLOSE_NORMAL, "cancelled")


async def _close_unaccepted(ws: WebSocket, error: RpcError) -> None:
    """Refuse a WebSocket before accepting it (the client sees HTTP 403)."""
    await ws.close(CLOSE_POLICY, error.message)


class _Reader:
    """Takes the client's frames off the socket: messages into a bounded queue, ``end`` as
    the end of the requests, ``cancel`` and a closed socket as the call's cancellation."""

    def __init__(
        self,
        ws: WebSocket,
        codec: Encoding,
        input_type: type[Message],
        limit: int,
        ctx: Context,
    ) -> None:
        self.ws = ws
        self.codec = codec
        self.input_type = input_type
        self.limit = limit
        self.ctx = ctx
        self.queue: asyncio.Queue[Message | _End | RpcError] = asyncio.Queue(QUEUE_SIZE)
        self.target = asyncio.current_task()
        self.task: asyncio.Task[None] | None = None
        self.responder: _Responder | None = None
        self.cancelled = False

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())
        self.task.add_done_callback(self._reader_done)

    def _reader_done(self, task: asyncio.Task[None]) -> None:
        # A reader that dies of an error it did not expect must not leave the call waiting
        # for requests that will never come: the call is cancelled, like on a closed socket.
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("the WebSocket reader failed; the call is cancelled", exc_info=error)
            self._cancel_call()

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def _cancel_call(self) -> None:
        if self.responder is not None and self.responder.closed:
            return  # the call has ended; this is the client answering the close
        self.ctx.cancel()
        if self.target is not None:
            self.target.cancel()

    async def _run(self) -> None:
        failed = False
        ended = False
        while True:
            frame = await self.ws.receive()
            if frame["type"] == "websocket.disconnect":
                self._cancel_call()
                return
            if failed:
                continue  # the call is already failing; only watch for cancel/close
            text = frame.get("text")
            item: Message | _End | RpcError
            if text is not None:
                try:
                    control = parse_client_control(text)
                except RpcError as error:
                    item = error
                else:
                    if control.type == "cancel":
                        self.cancelled = True
                        self._cancel_call()
                        return
                    item = _END
            else:
                data: bytes = frame.get("bytes") or b""
                if ended:
                    item = RpcError(Code.INVALID_ARGUMENT, "a message after end")
                elif len(data) > self.limit:
                    item = message_too_large(self.limit)
                else:
                    try:
                        self.ctx.stats.bytes_in += len(data)
                        item = self.codec.decode(data, self.input_type)
                    except RpcError as error:
                        item = error
            failed = isinstance(item, RpcError)
            ended = ended or item is _END
            await self.queue.put(item)

    async def messages(self) -> AsyncIterator[Any]:
        """The request messages until ``end``; raises what made the request stream invalid."""
        while True:
            item = await self.queue.get()
            if item is _END:
                return
            if isinstance(item, RpcError):
                raise item
            self.ctx.stats.messages_in += 1
            yield item

    async def one(self) -> Message:
        """The request of a unary or server-streaming call (``end`` may follow or not)."""
        item = await self.queue.get()
        if isinstance(item, RpcError):
            raise item
        if isinstance(item, _End):
            raise RpcError(Code.INVALID_ARGUMENT, ONE_REQUEST)
        return item


class _Responder:
    """Writes the call's answer: a ``headers`` frame, message frames, the ``end`` frame."""

    def __init__(self, ws: WebSocket, codec: Encoding, limit: int) -> None:
        self.ws = ws
        self.codec = codec
        self.limit = limit
        self.started = False
        self.closed = False

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            await self.ws.send(message)
        except (WebSocketDisconnect, OSError, RuntimeError):
            raise ClientGone from None  # the socket is gone or closing

    async def send_headers(self, ctx: Context) -> None:
        if self.started:
            return
        self.started = True
        ctx.mark_headers_sent()
        await self._send({"type": "websocket.send", "text": headers_frame(ctx.response_headers)})

    async def send_stream(self, ctx: Context, stream: AsyncIterator[Any]) -> bool:
        return False

    async def send_message(self, ctx: Context, message: Any, event: Event[Any] | None) -> None:
        data = checked_size(self.codec.encode(message), self.limit)
        if not self.started:
            await self.send_headers(ctx)
        ctx.stats.bytes_out += len(data)
        await self._send({"type": "websocket.send", "bytes": data})

    async def finish(self, ctx: Context, error: RpcError | None) -> None:
        if not self.started:
            await self.send_headers(ctx)
        code = CLOSE_NORMAL
        if error is not None and error.message == message_too_large(self.limit).message:
            code = CLOSE_TOO_BIG
        self.closed = True
        await self._send(
            {"type": "websocket.send", "text": end_frame(error, ctx.response_trailers)}
        )
        await self._send({"type": "websocket.close", "code": code})

    async def refuse(self, error: RpcError) -> None:
        """End a call that could not start (a bad first frame): policy violation."""
        self.closed = True
        await self._send({"type": "websocket.send", "text": end_frame(error, ())})
        await self._send({"type": "websocket.close", "code": CLOSE_POLICY})
