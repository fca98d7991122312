"""Durable methods: a server stream produced once into the stream log, read by every call.

A call to a ``@durable`` method without a stream id starts a stream: the server makes an id,
creates the log stream (taking its lease) and runs the handler in a task of its own, detached
from the request: a *producer* that appends every item (batched: one append in flight, the
items that arrive meanwhile go in the next) and renews its lease, until the handler ends and its
status is appended as the terminal record. The call that started it, and every later call that
names the stream, is a *reader* of the log from an offset.

Positions are counts: offset ``n`` means "the client has the first ``n`` items"; item ``k``
(from 0) is followed by offset ``k + 1``. A client learns its offset by counting what it
received; SSE events carry ``<stream id>:<offset>`` as their ``id`` so ``EventSource`` resumes
by itself. The response names the stream and where it starts (``rpckit-stream-id``,
``rpckit-stream-offset`` headers / initial metadata).

A reader names a stream by (first match wins): the ``rpckit-stream-id`` and
``rpckit-stream-offset`` request metadata (every dialect and transport), ``Last-Event-ID``
``<id>:<offset>`` (SSE reconnects), or the ``stream`` and ``offset`` query parameters (plain
HTTP, when the request message has no field of that name). ``rpckit-stream-cancel: 1`` with a
stream id cancels the stream first, from any instance, and then reads it to its end.

Ends, as every reader sees them: the handler's status (ok, or its error's code and message);
``cancelled`` when the stream was cancelled; ``unavailable`` when its producer was lost (its
lease expired: the instance died) or its server shut down before the handler finished;
``out_of_range`` when the offset is older than retention (``rpckit-stream-earliest`` says the
oldest offset still retained; HTTP 410 on plain HTTP); ``not_found`` for an unknown stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from rpckit.context import Context
from rpckit.durable.log import End, ExpiredOffset, Lease, LeaseLost, StreamLog
from rpckit.durable.options import (
    CANCEL_HEADER,
    EARLIEST_HEADER,
    FINAL_HEADER,
    OFFSET_HEADER,
    STREAM_HEADER,
    Durability,
    valid_stream_id,
)
from rpckit.errors import Code, RpcError
from rpckit.service import MethodSpec, resolve_stream
from rpckit.status import details_from_status, status_details
from rpckit.streams import Event, aclose
from rpckit.wellknown import encode_stream

__all__ = ["DurableCalls", "Resume", "StreamExpired", "reserved_query", "resume_point"]

log = logging.getLogger("rpckit.durable")

Handler = Callable[..., Any]
#: Told of every stream ``start`` creates, with its method: the Durable Streams protocol's
#: registration (``rpckit.durable.server.method_publisher``).
Publish = Callable[[str, MethodSpec[Any, Any]], Awaitable[None]]

#: How many items a producer may have waiting for their append before it waits itself.
_MAX_PENDING = 1024


class StreamExpired(RpcError):
    """A resume from an offset older than retention: ``out_of_range``, the earliest offset
    still retained in ``earliest`` and in the ``rpckit-stream-earliest`` trailer (plain HTTP
    answers 410 Gone)."""

    http_status = 410

    def __init__(self, stream: str, earliest: int) -> None:
        super().__init__(
            Code.OUT_OF_RANGE,
            f"stream {stream}: offset expired; the earliest offset retained is {earliest}",
            metadata=[(EARLIEST_HEADER, str(earliest))],
        )
        self.earliest = earliest


@dataclass(frozen=True, slots=True)
class Resume:
    """Which stream a call reads, from which offset, and whether it cancels it first."""

    stream: str
    offset: int = 0
    cancel: bool = False


def _offset(value: str, where: str) -> int:
    if not value.isdigit() or len(value) > 18:
        raise RpcError(Code.INVALID_ARGUMENT, f"{where}: the offset must be a count, not {value!r}")
    return int(value)


def _stream_id(value: str, where: str) -> str:
    if not valid_stream_id(value):
        raise RpcError(Code.INVALID_ARGUMENT, f"{where}: malformed stream id {value!r}")
    return value


def resume_point(ctx: Context) -> Resume | None:
    """The stream and offset a call names (see the module's description), or None to start
    a new stream; ``invalid_argument`` for a malformed one."""
    headers = ctx.request_headers
    cancel = (headers.get(CANCEL_HEADER) or "").strip().lower() in ("1", "true")
    stream = headers.get(STREAM_HEADER)
    if stream is not None:
        offset = headers.get(OFFSET_HEADER)
        return Resume(
            _stream_id(stream.strip(), STREAM_HEADER),
            _offset(offset.strip(), OFFSET_HEADER) if offset is not None else 0,
            cancel,
        )
    last = headers.get("last-event-id")
    if last:
        stream, sep, offset = last.strip().rpartition(":")
        if not sep:
            raise RpcError(
                Code.INVALID_ARGUMENT,
                f"Last-Event-ID {last!r} is not a durable stream position (<stream id>:<offset>)",
            )
        return Resume(_stream_id(stream, "Last-Event-ID"), _offset(offset, "Last-Event-ID"))
    if ctx.query:
        fields = ctx.method.input.DESCRIPTOR.fields_by_name
        params = dict(parse_qsl(ctx.query.decode("latin-1"), keep_blank_values=True))
        if "stream" in params and "stream" not in fields:
            offset = params.get("offset") if "offset" not in fields else None
            return Resume(
                _stream_id(params["stream"], "query parameter stream"),
                _offset(offset, "query parameter offset") if offset is not None else 0,
                cancel or params.get("cancel", "") in ("1", "true"),
            )
    if cancel:
        raise RpcError(Code.INVALID_ARGUMENT, f"{CANCEL_HEADER} needs {STREAM_HEADER}")
    return None


def reserved_query(method: MethodSpec[Any, Any]) -> frozenset[str]:
    """The query parameters a durable method's plain-HTTP route takes for itself (those of
    ``stream``, ``offset`` and ``cancel`` the request message has no field for)."""
    if method.durable is None:
        return frozenset()
    fields = method.input.DESCRIPTOR.fields_by_name
    return frozenset(name for name in ("stream", "offset", "cancel") if name not in fields)


class DurableCalls:
    """The durable streams of one process: its log, and the producers it runs."""

    def __init__(self, log: StreamLog, publish: Publish | None = None) -> None:
        self.log = log
        self._publish = publish
        self._producers: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        #: How many handlers have been started (tests and benchmarks read it).
        self.started = 0

    # --- producing ---------------------------------------------------------------------------

    async def start(
        self,
        ctx: Context,
        handler: Handler,
        argument: Any,
        track: Callable[[asyncio.Task[Any]], None],
        untrack: Callable[[asyncio.Task[Any]], None],
    ) -> str:
        """Create a stream and start its producer; the stream's id. ``track`` and
        ``untrack`` register the producer with the server's drain."""
        method = ctx.method
        settings = method.durable
        assert settings is not None
        stream = uuid.uuid4().hex
        lease = await self.log.create(stream, settings.retention, settings.lease_seconds)
        if self._publish is not None:  # served by the Durable Streams protocol too
            await self._publish(stream, method)
        # The handler's own context: the request's metadata and principal, but no deadline,
        # and cancelled only when the stream is (not when the starting client leaves).
        produced = Context(
            method,
            transport=ctx.transport,
            dialect=ctx.dialect,
            request_headers=ctx.request_headers,
            peer=ctx.peer,
            query=ctx.query,
        )
        produced.principal = ctx.principal
        task = asyncio.get_running_loop().create_task(
            self._produce(produced, settings, handler, argument, lease, untrack),
            name=f"rpckit durable {method.path} {stream}",
        )
        self.started += 1
        self._producers[stream] = task
        track(task)
        task.add_done_callback(lambda _: self._producers.pop(stream, None))
        return stream

    async def _produce(
        self,
        ctx: Context,
        settings: Durability,
        handler: Handler,
        argument: Any,
        lease: Lease,
        untrack: Callable[[asyncio.Task[Any]], None],
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        method = ctx.method
        writer = _Writer(self.log, lease)
        why: list[End] = []

        def stop(end: End) -> None:
            if not why:
                why.append(end)
                ctx.cancel()
                task.cancel()

        renewing = asyncio.create_task(self._renew(lease, settings.lease_seconds, stop))
        watching = asyncio.create_task(self._watch_cancel(lease.stream, stop))
        end = End()
        lost = False
        stream: AsyncIterator[Any] | None = None
        messages: AsyncIterator[Any] | None = None
        try:
            stream = await resolve_stream(handler(argument, ctx))
            messages = encode_stream(method, stream)
            output = method.output
            async for item in messages:
                if type(item) is Event:
                    item = item.data
                if not isinstance(item, output):
                    log.error(
                        "%s returned %s, expected %s",
                        method.path,
                        type(item).__qualname__,
                        output.DESCRIPTOR.full_name,
                    )
                    raise RpcError(Code.INTERNAL, "internal error")
                await writer.put(item.SerializeToString())
            await writer.flush()
        except LeaseLost:
            lost = True
        except RpcError as exc:
            end = End(exc.code, exc.message, status_details(exc) or b"")
        except asyncio.CancelledError:
            if not why:  # not a cancel of the stream: the drain (the server shutting down)
                why.append(End(Code.UNAVAILABLE, "the producing server shut down; retry"))
            while task.uncancel():  # the end is still to be written
                pass
            end = why[0]
            lost = end.code is Code.ABORTED
        except Exception:
            log.exception("%s failed", method.path)
            end = End(Code.INTERNAL, "internal error")
        finally:
            renewing.cancel()
            watching.cancel()
            await aclose(messages)
            await aclose(stream)
            untrack(task)
        if why and not lost and end.code is Code.OK:
            # The handler swallowed its cancellation and returned: the stream was still
            # stopped (cancelled, or its lease lost), so it must not read as complete.
            while task.uncancel():
                pass
            end = why[0]
            lost = end.code is Code.ABORTED
        if lost:
            log.warning("%s: stream %s lost its lease; not ended", method.path, lease.stream)
            return
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await writer.flush()
            await self._end(lease, end, settings.lease_seconds)
        except RpcError as exc:  # the log stayed unreachable, or the lease is gone
            log.warning("%s: stream %s could not be ended: %s", method.path, lease.stream, exc)

    async def _end(self, lease: Lease, end: End, lease_seconds: float) -> None:
        """Append the end, retrying a log that is unreachable for a moment while the lease
        may still hold (after that its readers get ``producer lost`` anyway)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + lease_seconds
        pause = 0.05
        while True:
            try:
                await self.log.end(lease, end)
                return
            except LeaseLost:
                raise
            except RpcError as exc:
                if exc.code is not Code.UNAVAILABLE or loop.time() + pause > give_up:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def _renew(self, lease: Lease, seconds: float, stop: Callable[[End], None]) -> None:
        """Renew the lease every third of its time; a lost lease stops the producer."""
        while True:
            await asyncio.sleep(seconds / 3)
            try:
                lease = await self.log.renew(lease, seconds)
            except LeaseLost:
                stop(End(Code.ABORTED, "lease lost"))
                return
            except RpcError as exc:  # the log is unreachable: try again, the lease may hold
                log.warning("stream %s: renewing its lease failed: %s", lease.stream, exc)

    async def _watch_cancel(self, stream: str, stop: Callable[[End], None]) -> None:
        """Stop the producer once anyone, on any instance, cancels the stream."""
        while True:
            try:
                await self.log.cancelled(stream)
            except RpcError as exc:
                log.warning("stream %s: watching for its cancel failed: %s", stream, exc)
                await asyncio.sleep(1.0)
                continue
            stop(End(Code.CANCELLED, "the stream was cancelled"))
            return

    # --- reading -----------------------------------------------------------------------------

    async def read(self, ctx: Context, stream: str, offset: int) -> AsyncIterator[Event[Any]]:
        """The stream's items after ``offset`` as ``Event``s whose ``id`` is
        ``<stream>:<offset after the item>``, then its end: nothing for ok, else its error."""
        output = ctx.method.output
        log_ = self.log
        position = offset
        records = log_.read(stream, log_.position(offset))
        try:
            async for record in records:
                end = record.end
                if end is not None:
                    if end.code is Code.OK:
                        return
                    raise RpcError(
                        end.code,
                        end.message,
                        details_from_status(end.details) if end.details else (),
                    )
                position += 1
                if position == offset + 1 and log_.count(record.offset) != position:
                    # From the start, a log gives what it still has; a gap is refused here.
                    raise ExpiredOffset(stream, log_.position(log_.count(record.offset) - 1))
                yield Event(output.FromString(record.data), id=f"{stream}:{position}")
        except ExpiredOffset as exc:
            raise _final(StreamExpired(stream, log_.count(exc.earliest))) from None
        except RpcError as exc:
            if type(exc) is RpcError and exc.code is Code.UNAVAILABLE:
                raise  # the log unreachable for now: a client may resume elsewhere
            raise _final(exc) from None
        finally:
            await aclose(records)

    async def cancel(self, stream: str) -> None:
        """Cancel a stream from any instance (``not_found`` if there is none)."""
        await self.log.cancel(stream)

    def abandon(self, stream: str) -> None:
        """The client that started a non-detached stream left: cancel it (in the
        background, since the caller is being cancelled itself)."""
        task = asyncio.get_running_loop().create_task(self._quietly_cancel(stream))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _quietly_cancel(self, stream: str) -> None:
        try:
            await self.log.cancel(stream)
        except RpcError as exc:
            log.warning("stream %s: cancelling it failed: %s", stream, exc)

    async def aclose(self, grace: float = 0.0) -> None:
        """Give the producers of this process ``grace`` seconds to finish, stop the rest
        (their streams end ``unavailable``), and release the log."""
        producers = list(self._producers.values())
        if producers and grace > 0:
            await asyncio.wait(producers, timeout=grace)
        for task in producers:
            task.cancel()
        if producers:
            await asyncio.gather(*producers, return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.log.close()


def _final(error: RpcError) -> RpcError:
    """Mark ``error`` as the stream's last word (``rpckit-stream-final: 1``)."""
    error.metadata.append((FINAL_HEADER, "1"))
    return error


class _Writer:
    """Appends a producer's items in batches: one append in flight; items put meanwhile wait
    (at most ``_MAX_PENDING``) and go together in the next one."""

    __slots__ = ("_failed", "_lease", "_log", "_pending", "_task")

    def __init__(self, log_: StreamLog, lease: Lease) -> None:
        self._log = log_
        self._lease = lease
        self._pending: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None

    async def put(self, item: bytes) -> None:
        if self._failed is not None:
            raise self._failed
        self._pending.append(item)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())
        elif len(self._pending) >= _MAX_PENDING:
            await self._wait()

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._log.append(self._lease, batch)
        except BaseException as exc:  # kept for the producer: put and flush raise it
            self._failed = exc
        finally:
            self._task = None

    async def _wait(self) -> None:
        task = self._task
        if task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(task)
        if self._failed is not None:
            raise self._failed

    async def flush(self) -> None:
        """Wait until every item put has been appended (raises what an append raised)."""
        while self._task is not None:
            await self._wait()
        if self._failed is not None:
            raise self._failed
