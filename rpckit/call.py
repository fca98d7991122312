"""The call runner: the one owner of a call's lifecycle, on every transport.

A transport adapter decodes its wire into a ``Context`` and the request (a message, a
coroutine function that reads one, or an async iterator of messages that *raises* when the
stream is cut short), then hands the call to ``CallRunner.run`` with a ``Responder`` that
writes to its wire. The runner does the rest, the same way for every transport: the
deadline (from the moment the request arrived), the interceptor chain, calling the handler
by its shape, checking what it returns against the method's output type, and turning every
outcome into one status:

- ``RpcError``: as raised;
- any other exception: ``internal`` / "internal error", the traceback logged, never sent;
- a wrong response type: ``internal`` / "internal error", the expected and actual types logged;
- the deadline: ``deadline_exceeded``;
- drain (the server shutting down): ``unavailable``, before, during or after the body;
- the client gone: ``cancelled`` (nothing can be sent; interceptors still see it).

A request refused before its handler (an unsupported content type, a bad header: the
adapter's head step decides) ends through ``CallRunner.refuse``, so that interceptors, the
access log and metrics see it like any other call, once, with its status.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import CoroutineType
from typing import Any, Protocol, TypeAlias

from google.protobuf.message import Message

from rpckit.context import Context
from rpckit.durable.calls import DurableCalls, resume_point
from rpckit.durable.options import OFFSET_HEADER, STREAM_HEADER
from rpckit.errors import Code, RpcError
from rpckit.interceptors import Interceptor, InterceptorChain, Outcome
from rpckit.loops import current_task
from rpckit.service import MethodSpec, resolve_stream
from rpckit.streams import Event, aclose
from rpckit.wellknown import adapt_requests, encode_stream, file_headers

__all__ = ["CallRunner", "ClientGone", "Drain", "Prepared", "Request", "Responder"]

log = logging.getLogger("rpckit.call")

Handler = Callable[..., Any]
DRAINING = RpcError(Code.UNAVAILABLE, "the server is shutting down; retry")
_outcome = tuple.__new__


class Prepared:
    """A client stream the adapter turns into the handler's argument itself (a raw upload
    as a ``FileStream``/``ByteStream``/``TextStream``): ``make()`` builds it (or returns a
    coroutine that does), inside the call (so its errors map to a status like any other),
    and the handler gets it as is."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


#: What an adapter hands over as the request: the message itself, a function (plain or
#: ``async``) that reads and decodes it (so that reading counts against the deadline and its
#: errors map to a status like any other), or for client streams an async iterator of messages.
Request: TypeAlias = (
    Message | Callable[[], Message | Awaitable[Message]] | AsyncIterator[Any] | Prepared
)


class ClientGone(Exception):
    """The client went away (raised by transports while reading or writing)."""


class Responder(Protocol):
    """What a transport adapter implements to write one call's answer to its wire."""

    async def send_headers(self, ctx: Context) -> None:
        """Send ``ctx.response_headers`` now, if not sent yet."""

    async def send_stream(self, ctx: Context, stream: AsyncIterator[Any]) -> bool:
        """Offered the handler's response stream first: True if the adapter sent it whole
        itself (a file sent from disk), False to have the runner send it message by message."""

    def send_message(self, ctx: Context, message: Any, event: Event[Any] | None) -> Awaitable[None]:
        """One response message (``event`` carries its SSE fields, if the handler gave any);
        an ``async def`` or any function that returns what sends it, to be awaited."""

    async def finish(self, ctx: Context, error: RpcError | None) -> None:
        """End the call: success (after the messages) or ``error``, with the trailers."""


class Drain:
    """The calls in flight on one server, and the switch that ends them at shutdown.

    ``set()`` (called once the grace period is over) cancels every running call so that it
    ends with ``unavailable``; calls that arrive afterwards are refused the same way.
    """

    def __init__(self) -> None:
        #: The tasks of the calls in flight (the runner adds and removes its own).
        self.running: set[asyncio.Task[Any]] = set()
        self._cancelled: set[asyncio.Task[Any]] = set()
        self.started = False

    def is_set(self) -> bool:
        return self.started

    def set(self) -> None:
        """End every call in flight with ``unavailable``."""
        self.started = True
        for task in self.running:
            self._cancelled.add(task)
            task.cancel()

    def __len__(self) -> int:
        return len(self.running)

    def end(self, task: asyncio.Task[Any]) -> None:
        """End one call in flight with ``unavailable`` now (a WebSocket at shutdown, which
        the server would otherwise drop without a status)."""
        if task in self.running:
            self._cancelled.add(task)
            task.cancel()

    def _took(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled by the drain (each cancel is claimed once)."""
        if task in self._cancelled:
            self._cancelled.discard(task)
            return True
        return False


class CallRunner:
    """Runs calls for one server: its interceptors, its drain."""

    def __init__(
        self,
        interceptors: InterceptorChain | list[Interceptor] | tuple[Interceptor, ...] = (),
        durable: DurableCalls | None = None,
    ) -> None:
        self.chain = (
            interceptors
            if isinstance(interceptors, InterceptorChain)
            else InterceptorChain(interceptors)
        )
        self.drain = Drain()
        #: The event loop every call runs on, once the server that runs this runner knows it
        #: (the bridge's ``Lifecycle.serving_on``); None finds the loop per call instead.
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Where ``@durable`` methods' streams go (``rpckit serve`` shares one between its
        #: servers); None makes an in-memory one at the first durable call (one process).
        self.durable: DurableCalls | None = durable

    def durable_calls(self) -> DurableCalls:
        """The durable streams of this runner (an in-memory log unless one was given)."""
        if self.durable is None:
            from rpckit.durable.memory import MemoryLog

            self.durable = DurableCalls(MemoryLog())
        return self.durable

    def current_task(self) -> asyncio.Task[Any]:
        """The task running the current call (see ``current_task``)."""
        return current_task(self.loop)

    async def run(
        self,
        ctx: Context,
        handler: Handler,
        request: Request,
        responder: Responder,
        *,
        owns_task: bool = True,
        task: asyncio.Task[Any] | None = None,
    ) -> Outcome | None:
        """Run one call to its end; its outcome, if an interceptor observes outcomes.

        ``owns_task`` says the current task exists for this call alone (an HTTP request):
        a cancellation (the adapter's disconnect watcher) then ends the call quietly as
        ``cancelled``. Without it (grpcio's handler task) the cancellation propagates.
        ``task`` is the current task, when the adapter has it already.
        """
        ctx.bind_header_sender(responder)
        if task is None:
            task = current_task(self.loop)
        drain = self.drain
        error: RpcError | None = None
        gone = False
        if drain.started:
            error = DRAINING
        else:
            # One body by shape: a unary call is this frame, ``_one`` and ``_single``.
            body = self._call if ctx.method.kind.client_streams else self._one
            remaining = ctx.time_remaining()
            timeout: asyncio.Timeout | None = None
            drain.running.add(task)
            try:
                if remaining is None:
                    await body(ctx, handler, request, responder)
                elif remaining <= 0:
                    raise TimeoutError
                else:
                    async with asyncio.timeout(remaining) as timeout:
                        await body(ctx, handler, request, responder)
            except RpcError as exc:
                error = exc
            except TimeoutError:
                if remaining is not None and (timeout is None or timeout.expired()):
                    ctx.cancel()
                    error = RpcError(Code.DEADLINE_EXCEEDED, "deadline exceeded")
                else:
                    log.exception("%s failed", ctx.method.path)
                    error = RpcError(Code.INTERNAL, "internal error")
            except asyncio.CancelledError:
                if drain._took(task):
                    task.uncancel()
                    error = DRAINING
                else:
                    ctx.cancel()
                    gone = True
                    if not owns_task:
                        self._end(ctx, None, gone=True)
                        raise
                    task.uncancel()
            except ClientGone:
                ctx.cancel()
                gone = True
            except Exception:
                log.exception("%s failed", ctx.method.path)
                error = RpcError(Code.INTERNAL, "internal error")
            finally:
                drain.running.discard(task)
        if gone:
            return self._end(ctx, None, gone=True)
        ctx.mark_finishing()
        try:
            await responder.finish(ctx, error)
        except (ClientGone, asyncio.CancelledError) as exc:
            ctx.cancel()
            if isinstance(exc, asyncio.CancelledError):
                if not owns_task:
                    self._end(ctx, error, gone=True)
                    raise
                task.uncancel()
            return self._end(ctx, error, gone=True)
        except BaseException:
            self._end(ctx, error, gone=False)
            raise
        return self._end(ctx, error, gone=False)

    async def refuse(
        self, ctx: Context, error: RpcError, answer: Callable[[RpcError], Awaitable[None]]
    ) -> Outcome | None:
        """End a call refused before its handler: ``on_start`` runs (so that observers that
        start there see it), ``answer`` writes the refusal as the dialect words it, and
        ``on_end`` gets ``error`` as the outcome (``cancelled`` if the client has gone).

        The refusal is the status whatever ``on_start`` does: an interceptor's rejection
        (or failure) there is not what the client is sent, so it is not what is recorded.
        """
        chain = self.chain
        if chain.starts:
            try:
                await chain.start(ctx)
            except RpcError:
                pass  # the refusal stands: it is what the client gets
            except Exception:
                log.exception("%s: an interceptor's on_start failed", ctx.method.path)
        ctx.mark_finishing()
        try:
            await answer(error)
        except ClientGone:
            ctx.cancel()
            return self._end(ctx, error, gone=True)
        except BaseException:
            self._end(ctx, error, gone=False)
            raise
        return self._end(ctx, error, gone=False)

    def _end(self, ctx: Context, error: RpcError | None, *, gone: bool) -> Outcome | None:
        if not self.chain.ends:
            return None  # nobody looks: building the outcome would be wasted
        stats = ctx.stats
        if gone:
            code, message = Code.CANCELLED, "the client has gone"
        elif error is None:
            code, message = Code.OK, ""
        else:
            code, message = error.code, error.message
        outcome = _outcome(  # the named tuple made as a tuple is (``Outcome(...)`` is slower)
            Outcome,
            (
                code,
                message,
                None if gone else error,
                time.monotonic() - stats.started,
                stats.messages_in,
                stats.messages_out,
                stats.bytes_in,
                stats.bytes_out,
            ),
        )
        self.chain.end(ctx, outcome)
        return outcome

    async def _one(
        self, ctx: Context, handler: Handler, request: Request, responder: Responder
    ) -> None:
        """A call with one request message: interceptors, the request read, the handler,
        its answer sent (one message, or a stream)."""
        chain = self.chain
        if chain.starts:
            await chain.start(ctx)
        if callable(request):
            read: Any = request()
            request = await read if type(read) is CoroutineType else read
        ctx.stats.messages_in += 1
        if chain.requests:
            request = await chain.request(ctx, request)
        if ctx.method.kind.server_streams:
            await self._stream(ctx, handler, request, responder)
        else:
            await self._single(ctx, handler, request, responder)

    async def _call(
        self, ctx: Context, handler: Handler, request: Request, responder: Responder
    ) -> None:
        """A client stream (or a raw upload): interceptors, the handler, its answer."""
        chain = self.chain
        method = ctx.method
        answer = self._stream if method.kind.server_streams else self._single  # bidi: a stream
        if chain.starts:
            await chain.start(ctx)
        if isinstance(request, Prepared):
            prepared = None
            try:
                prepared = request.make()
                if type(prepared) is CoroutineType:  # made by reading (a form's head)
                    prepared = await prepared
                await answer(ctx, handler, prepared, responder)
            finally:
                await aclose(prepared)
            return
        assert isinstance(request, AsyncIterator)
        requests: AsyncIterator[Any] = request
        if chain.requests:
            requests = _intercepted(ctx, chain, request)
        argument = None
        try:
            argument = await adapt_requests(method, requests, ctx.request_headers)
            await answer(ctx, handler, argument, responder)
        finally:
            await aclose(argument)
            await aclose(requests)

    async def _single(
        self, ctx: Context, handler: Handler, argument: Any, responder: Responder
    ) -> None:
        """A call with one response message: the handler's, checked, then sent."""
        method = ctx.method
        result = handler(argument, ctx)
        if type(result) is not CoroutineType and not inspect.isawaitable(result):
            await aclose(result)
            raise _wrong_shape(method, result)
        response = await result
        if type(response) is not method.output:
            response = _checked(method, response)
        if ctx.deadline is not None and time.monotonic() >= ctx.deadline:
            ctx.cancel()  # finished, but too late: the client has given up
            raise RpcError(Code.DEADLINE_EXCEEDED, "deadline exceeded")
        chain = self.chain
        if chain.responses:
            response = _checked(method, await chain.response(ctx, response))
        ctx.stats.messages_out += 1
        ctx.mark_finishing()  # a single answer is the last thing the call sends
        await responder.send_message(ctx, response, None)

    async def _stream(
        self, ctx: Context, handler: Handler, argument: Any, responder: Responder
    ) -> None:
        """A call with a response stream: the handler's messages, each checked and sent."""
        method = ctx.method
        if method.durable is not None:
            await self._durable(ctx, handler, argument, responder)
            return
        chain = self.chain
        stats = ctx.stats
        stream: AsyncIterator[Any] | None = None
        messages: AsyncIterator[Any] | None = None
        try:
            stream = await resolve_stream(handler(argument, ctx))
            if await responder.send_stream(ctx, stream):
                return  # sent whole by the transport (a file, with its own headers)
            ctx.response_headers.extend(file_headers(stream))
            messages = encode_stream(method, stream)
            output = method.output
            intercepted = bool(chain.responses)
            counted = bool(chain.ends)  # the stats are only ever read for the outcome
            send = responder.send_message
            # Per message, every bytecode here counts (the server multiplies it): locals only.
            async for item in messages:
                event: Event[Any] | None = None
                if type(item) is Event:
                    event, item = item, item.data
                if type(item) is not output:
                    item = _checked(method, item)
                if intercepted:
                    item = _checked(method, await chain.response(ctx, item))
                if counted:
                    stats.messages_out += 1
                await send(ctx, item, event)
        finally:
            await aclose(messages)
            await aclose(stream)

    async def _durable(
        self, ctx: Context, handler: Handler, argument: Any, responder: Responder
    ) -> None:
        """A durable method: start its stream (or name one to resume), then read it."""
        durable = self.durable_calls()
        resume = resume_point(ctx)
        started = resume is None
        if resume is None:
            drain = self.drain
            stream = await durable.start(
                ctx, handler, argument, drain.running.add, _untracker(drain)
            )
            offset = 0
        else:
            stream, offset = resume.stream, resume.offset
            if resume.cancel:
                await durable.cancel(stream)
        ctx.response_headers.set(STREAM_HEADER, stream)
        ctx.response_headers.set(OFFSET_HEADER, str(offset))
        chain = self.chain
        stats = ctx.stats
        items = durable.read(ctx, stream, offset)
        try:
            if await responder.send_stream(ctx, items):
                return  # not for messages; offered as every stream is (framing, keep-alive)
            if started:
                await responder.send_headers(ctx)  # the id, before the first item
            async for event in items:
                item = event.data
                if chain.responses:  # the log holds checked items; an interceptor's are checked
                    item = _checked(ctx.method, await chain.response(ctx, item))
                stats.messages_out += 1
                await responder.send_message(ctx, item, event)
        except (asyncio.CancelledError, ClientGone):
            if started and ctx.method.durable is not None and not ctx.method.durable.detach:
                durable.abandon(stream)
            raise
        finally:
            await aclose(items)


def _untracker(drain: Drain) -> Callable[[asyncio.Task[Any]], None]:
    def untrack(task: asyncio.Task[Any]) -> None:
        drain.running.discard(task)
        drain._took(task)

    return untrack


async def _intercepted(
    ctx: Context, chain: InterceptorChain, requests: AsyncIterator[Any]
) -> AsyncIterator[Any]:
    async for message in requests:
        yield await chain.request(ctx, message)


def _checked(method: MethodSpec[Any, Any], value: Any) -> Any:
    """``value`` if it is of the method's output type; otherwise log and fail ``internal``."""
    if isinstance(value, method.output):
        return value
    log.error(
        "%s returned %s, expected %s",
        method.path,
        "None" if value is None else type(value).__qualname__,
        method.output.DESCRIPTOR.full_name,
    )
    raise RpcError(Code.INTERNAL, "internal error")


def _wrong_shape(method: MethodSpec[Any, Any], result: object) -> RpcError:
    log.error(
        "%s: the handler must be an async def returning %s, but it returned %s",
        method.path,
        method.output.DESCRIPTOR.full_name,
        type(result).__qualname__,
    )
    return RpcError(Code.INTERNAL, "internal error")
