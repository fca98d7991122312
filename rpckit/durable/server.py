"""The Durable Streams protocol (ElectricSQL, PROTOCOL.md 1.0) served over a ``StreamLog``: an
ASGI app answering PUT (create), POST (append, close), DELETE, HEAD and GET (catch-up,
``live=long-poll``, ``live=sse``) for every stream under a path prefix.

Streams written through the protocol are produced by HTTP clients, not by a handler, so the
server holds their lease: creating a stream takes it, every append uses it and renews it,
closing writes the terminal record with it. The lease is long (``lease_seconds``) since an HTTP
producer may stay idle; the fencing token lives in ``StreamMeta`` with the rest of the
protocol's state, so any instance sharing that state can append. Deleting a stream writes a
``not_found`` end to its log stream (live readers stop) and forgets the path; the log stream
itself goes with its retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from rpckit.durable import protocol as p
from rpckit.durable.log import (
    START,
    End,
    ExpiredOffset,
    Lease,
    Record,
    Retention,
    StreamLog,
    StreamNotFound,
)
from rpckit.durable.meta import MemoryMeta, StreamInfo, StreamMeta
from rpckit.errors import Code, RpcError

__all__ = ["DurableOptions", "DurableStreamsApp", "check_streams", "mount_durable", "open_log"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": ", ".join(
        [
            p.NEXT_OFFSET,
            p.UP_TO_DATE,
            p.CURSOR,
            p.CLOSED,
            p.TTL,
            p.EXPIRES_AT,
            p.SSE_ENCODING,
            p.PRODUCER_EPOCH,
            p.PRODUCER_SEQ,
            p.PRODUCER_EXPECTED_SEQ,
            p.PRODUCER_RECEIVED_SEQ,
            "ETag",
            "Location",
        ]
    ),
}
_CACHEABLE = "public, max-age=60, stale-while-revalidate=300"


@dataclass(frozen=True, slots=True)
class DurableOptions:
    """``long_poll_seconds``: how long a long-poll waits before 204; ``sse_seconds``: how
    long an SSE response stays open (the protocol suggests about a minute, for CDN
    collapsing); ``retention``: the log retention of every stream (at least its TTL);
    ``lease_seconds``: the server's lease on each stream, renewed by every append."""

    long_poll_seconds: float = 20.0
    sse_seconds: float = 60.0
    retention: Retention = field(
        default_factory=lambda: Retention(ttl=7 * 24 * 3600.0, max_records=1_000_000)
    )
    lease_seconds: float = 30 * 24 * 3600.0
    max_body: int = 64 * 1024 * 1024


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _response(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Response:
    merged = dict(_SECURITY)
    merged.update(headers or {})
    return Response(body, status_code=status, headers=merged)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    merged = {"Content-Type": "text/plain; charset=utf-8"}
    merged.update(headers or {})
    return _response(status, message.encode(), merged)


def _rfc3339(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


class DurableStreamsApp:
    """The protocol at ``prefix`` (``/v1/stream``): ``{prefix}/{name}`` is a stream."""

    def __init__(
        self,
        log: StreamLog,
        meta: StreamMeta | None = None,
        *,
        prefix: str = "/v1/stream",
        options: DurableOptions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.log = log
        self.meta: StreamMeta = MemoryMeta() if meta is None else meta
        self.prefix = "/" + prefix.strip("/")
        self.options = options or DurableOptions()
        self.clock = clock

    def owns(self, path: str) -> bool:
        return path.startswith(self.prefix + "/") and len(path) > len(self.prefix) + 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self.handle(request)
        await response(scope, receive, send)

    async def aclose(self) -> None:
        await self.meta.close()
        await self.log.close()

    async def handle(self, request: Request) -> Response:
        path = request.url.path[len(self.prefix) :]
        handlers = {
            "PUT": self._put,
            "POST": self._post,
            "DELETE": self._delete,
            "HEAD": self._head,
            "GET": self._get,
        }
        if request.method == "OPTIONS":
            return self._preflight(request)
        handler = handlers.get(request.method)
        if handler is None:
            return _error(405, f"{request.method} is not part of the protocol")
        try:
            return await handler(path, request)
        except p.ProtocolError as error:
            return _error(error.status, error.message)
        except _Refused as refused:
            return refused.response
        except StreamNotFound:
            # The log dropped the stream (its retention passed while idle): so does the path.
            await self.meta.delete(path)
            return _error(404, f"stream {path} not found")
        except RpcError as error:
            return _error(503, f"the stream log refused: {error.message}")

    def _preflight(self, request: Request) -> Response:
        asked = request.headers.get("access-control-request-headers", "")
        return _response(
            204,
            headers={
                "Access-Control-Allow-Methods": "GET, HEAD, PUT, POST, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": asked or "*",
                "Access-Control-Max-Age": "600",
            },
        )

    # State -------------------------------------------------------------------------------

    async def _live(self, path: str) -> StreamInfo | None:
        """The path's stream, or None (never created, deleted, or expired: then forgotten)."""
        info = await self.meta.get(path)
        if info is not None and info.expired(self.clock()):
            await self.meta.delete(path)
            return None
        return info

    async def _existing(self, path: str) -> StreamInfo:
        info = await self._live(path)
        if info is None:
            raise _Refused(_error(404, f"stream {path} not found"))
        return info

    async def _touch(self, path: str, info: StreamInfo) -> StreamInfo:
        touched = replace(info, touched_at=self.clock())
        await self.meta.put(path, touched)
        return touched

    def _lease(self, info: StreamInfo) -> Lease:
        return Lease(info.log_id, info.token, info.lease_expires_at)

    async def _append(self, info: StreamInfo, items: list[bytes]) -> StreamInfo:
        lease = self._lease(info)
        offset = await self.log.append(lease, items)
        renewed = await self.log.renew(lease, self.options.lease_seconds)
        return replace(info, tail=offset, token=renewed.token, lease_expires_at=renewed.expires_at)

    def _items(self, info_type: str, body: bytes, *, creating: bool) -> list[bytes]:
        if p.is_json(info_type):
            if not body and creating:
                return []
            return p.split_json(body, allow_empty=creating)
        return [body] if body else []

    def _headers(self, info: StreamInfo, *, closed_header: bool = True) -> dict[str, str]:
        headers = {p.NEXT_OFFSET: p.from_log_offset(info.tail)}
        if closed_header and info.closed:
            headers[p.CLOSED] = "true"
        return headers

    # PUT ---------------------------------------------------------------------------------

    async def _put(self, path: str, request: Request) -> Response:
        ttl_value = request.headers.get(p.TTL)
        expires_value = request.headers.get(p.EXPIRES_AT)
        if ttl_value is not None and expires_value is not None:
            raise p.ProtocolError(400, "send Stream-TTL or Stream-Expires-At, not both")
        ttl = p.parse_ttl(ttl_value) if ttl_value is not None else None
        expires_at = p.parse_expires_at(expires_value) if expires_value is not None else None
        content_type = p.normalize_content_type(request.headers.get("content-type"))
        closing = p.parse_bool_header(request.headers.get(p.CLOSED))
        body = await request.body()
        items = self._items(content_type, body, creating=True)
        async with self.meta.locked(path):
            existing = await self._live(path)
            if existing is not None:
                same = (
                    existing.content_type == content_type
                    and existing.ttl == ttl
                    and existing.expires_at == expires_at
                    and existing.closed == closing
                )
                if not same:
                    return _error(409, f"stream {path} exists with another configuration")
                headers = self._headers(existing)
                headers["Content-Type"] = existing.content_type
                return _response(200, headers=headers)
            retention = self.options.retention
            if ttl is not None and ttl > retention.ttl:
                retention = Retention(ttl=float(ttl), max_records=retention.max_records)
            log_id = uuid.uuid4().hex
            lease = await self.log.create(log_id, retention, self.options.lease_seconds)
            info = StreamInfo(
                log_id=log_id,
                content_type=content_type,
                token=lease.token,
                lease_expires_at=lease.expires_at,
                ttl=ttl,
                expires_at=expires_at,
                touched_at=self.clock(),
            )
            if items:
                info = await self._append(info, items)
            if closing:
                await self.log.end(self._lease(info), End())
                info = replace(info, closed=True)
            await self.meta.put(path, info)
        headers = self._headers(info)
        headers["Content-Type"] = content_type
        headers["Location"] = str(request.url.replace(query=""))
        return _response(201, headers=headers)

    # POST --------------------------------------------------------------------------------

    async def _post(self, path: str, request: Request) -> Response:
        closing = p.parse_bool_header(request.headers.get(p.CLOSED))
        producer = p.parse_producer(
            request.headers.get(p.PRODUCER_ID),
            request.headers.get(p.PRODUCER_EPOCH),
            request.headers.get(p.PRODUCER_SEQ),
        )
        seq = request.headers.get(p.SEQ)
        body = await request.body()
        if len(body) > self.options.max_body:
            return _error(413, f"the body is above {self.options.max_body} bytes")
        if not body and not closing:
            return _error(400, "an empty body appends nothing")
        content_type = request.headers.get("content-type")
        async with self.meta.locked(path):
            info = await self._existing(path)
            items: list[bytes] = []
            if body:
                if content_type is None:
                    return _error(400, "an append needs a Content-Type")
                if p.normalize_content_type(content_type) != info.content_type:
                    return _error(
                        409, f"stream {path} holds {info.content_type}, not {content_type}"
                    )
                items = self._items(info.content_type, body, creating=False)
            decision: p.ProducerDecision | None = None
            if producer is not None:
                decision = p.decide_producer(info.producer(producer.id), producer)
                refused = self._producer_refusal(info, decision, producer)
                if refused is not None:
                    return refused
            if info.closed:
                if not body and decision is None:
                    info = await self._touch(path, info)
                    return _response(204, headers=self._headers(info))
                return _error(409, f"stream {path} is closed", self._headers(info))
            if seq is not None:
                if info.stream_seq is not None and seq <= info.stream_seq:
                    return _error(
                        409, f"Stream-Seq {seq!r} is not above the last, {info.stream_seq!r}"
                    )
                info = replace(info, stream_seq=seq)
            if items:
                info = await self._append(info, items)
            if closing:
                await self.log.end(self._lease(info), End())
                info = replace(info, closed=True)
            headers = self._headers(info)
            status = 204
            if producer is not None and decision is not None and decision.state is not None:
                info = info.with_producer(producer.id, decision.state)
                headers[p.PRODUCER_EPOCH] = str(decision.state.epoch)
                headers[p.PRODUCER_SEQ] = str(decision.state.last_seq)
                status = 200 if items else 204  # a close-only append writes no data
            await self.meta.put(path, replace(info, touched_at=self.clock()))
        return _response(status, headers=headers)

    def _producer_refusal(
        self, info: StreamInfo, decision: p.ProducerDecision, producer: p.Producer
    ) -> Response | None:
        state = decision.state
        if decision.verdict is p.Verdict.ACCEPT:
            return None
        if decision.verdict is p.Verdict.DUPLICATE:
            assert state is not None
            headers = self._headers(info)
            headers[p.PRODUCER_EPOCH] = str(state.epoch)
            headers[p.PRODUCER_SEQ] = str(state.last_seq)
            return _response(204, headers=headers)
        if decision.verdict is p.Verdict.STALE_EPOCH:
            assert state is not None
            return _error(
                403,
                f"producer {producer.id}: epoch {producer.epoch} is below {state.epoch}",
                {p.PRODUCER_EPOCH: str(state.epoch)},
            )
        if decision.verdict is p.Verdict.GAP:
            expected = 0 if state is None else state.last_seq + 1
            return _error(
                409,
                f"producer {producer.id}: sequence {producer.seq}, expected {expected}",
                {
                    p.PRODUCER_EXPECTED_SEQ: str(expected),
                    p.PRODUCER_RECEIVED_SEQ: str(producer.seq),
                },
            )
        return _error(400, f"producer {producer.id}: a new epoch starts at sequence 0")

    # DELETE, HEAD ------------------------------------------------------------------------

    async def _delete(self, path: str, request: Request) -> Response:
        async with self.meta.locked(path):
            info = await self._existing(path)
            await self.meta.delete(path)
        if not info.closed:
            # Live readers stop; the path is gone whether or not the lease still holds.
            with contextlib.suppress(RpcError):
                await self.log.end(self._lease(info), End(Code.NOT_FOUND, "stream deleted"))
        return _response(204)

    async def _head(self, path: str, request: Request) -> Response:
        info = await self._existing(path)
        headers = self._headers(info)
        headers["Content-Type"] = info.content_type
        headers["Cache-Control"] = "no-store"
        if info.ttl is not None:
            remaining = info.touched_at + info.ttl - self.clock()
            headers[p.TTL] = str(max(0, int(remaining + 0.999)))
        if info.expires_at is not None:
            headers[p.EXPIRES_AT] = _rfc3339(info.expires_at)
        return _response(200, headers=headers)

    # GET ---------------------------------------------------------------------------------

    async def _get(self, path: str, request: Request) -> Response:
        offset = p.parse_offset(request.query_params.getlist("offset"))
        live = request.query_params.get("live")
        if live not in (None, "", "long-poll", "sse"):
            raise p.ProtocolError(400, f"live={live!r}: use long-poll or sse")
        if live and offset is None:
            raise p.ProtocolError(400, f"live={live} needs an offset")
        async with self.meta.locked(path):
            info = await self._existing(path)
            info = await self._touch(path, info)
        if offset == p.NOW:
            start = p.from_log_offset(info.tail)
        elif offset is None or offset == p.BEGINNING:
            start = p.from_log_offset(None)
        else:
            start = offset
        if live == "sse":
            return self._sse(info, start, request.query_params.get("cursor"))
        if offset == p.NOW and live != "long-poll":
            headers = self._headers(info)
            headers.update(
                {
                    "Content-Type": info.content_type,
                    p.UP_TO_DATE: "true",
                    "Cache-Control": "no-store",
                }
            )
            body = p.join_json([]) if p.is_json(info.content_type) else b""
            return _response(200, body, headers)
        records, ended = await self._catch_up(path, info, start)
        if live == "long-poll" and not records and not ended:
            records, ended = await self._wait(path, info, start)
            if not records:
                headers = {
                    p.NEXT_OFFSET: start,
                    p.UP_TO_DATE: "true",
                    p.CURSOR: p.cursor_for(self.clock(), request.query_params.get("cursor")),
                    "Cache-Control": "no-store",
                }
                if ended:
                    headers[p.CLOSED] = "true"
                return _response(204, headers=headers)
        if live == "long-poll" and not records and ended:
            return _response(
                204,
                headers={
                    p.NEXT_OFFSET: start,
                    p.UP_TO_DATE: "true",
                    p.CLOSED: "true",
                    "Cache-Control": "no-store",
                    p.CURSOR: p.cursor_for(self.clock(), request.query_params.get("cursor")),
                },
            )
        end = p.from_log_offset(records[-1].offset) if records else start
        etag = f'"{info.log_id}:{start}:{end}{":c" if ended else ""}"'
        headers = {
            "Content-Type": info.content_type,
            p.NEXT_OFFSET: end,
            p.UP_TO_DATE: "true",
            "ETag": etag,
            "Cache-Control": _CACHEABLE,
        }
        if ended:
            headers[p.CLOSED] = "true"
        if live == "long-poll":
            headers[p.CURSOR] = p.cursor_for(self.clock(), request.query_params.get("cursor"))
        if request.headers.get("if-none-match") == etag:
            return _response(304, headers=headers)
        return _response(200, self._body(info, records), headers)

    def _body(self, info: StreamInfo, records: list[Record]) -> bytes:
        if p.is_json(info.content_type):
            return p.join_json(r.data for r in records)
        return b"".join(r.data for r in records)

    async def _catch_up(self, path: str, info: StreamInfo, start: str) -> tuple[list[Record], bool]:
        """The data records after ``start`` and whether the stream's end follows them."""
        records: list[Record] = []
        ended = False
        reader = self.log.read(info.log_id, self._after(start), follow=False)
        try:
            async for record in reader:
                if record.end is not None:
                    ended = True
                    self._check_end(path, record.end)
                    break
                records.append(record)
        except ExpiredOffset as error:
            raise p.ProtocolError(410, str(error.message)) from error
        finally:
            await _aclose(reader)
        return records, ended

    def _after(self, start: str) -> str:
        log_offset = p.to_log_offset(start)
        return START if log_offset is None else log_offset

    def _check_end(self, path: str, end: End) -> None:
        if end.code is Code.NOT_FOUND:
            raise _Refused(_error(404, f"stream {path} not found"))

    async def _wait(self, path: str, info: StreamInfo, start: str) -> tuple[list[Record], bool]:
        """Wait up to the long-poll timeout for the first record after ``start``; then
        everything available."""
        reader = self.log.read(info.log_id, self._after(start), follow=True)
        try:
            try:
                first = await asyncio.wait_for(
                    anext(reader), timeout=self.options.long_poll_seconds
                )
            except (TimeoutError, StopAsyncIteration):
                return [], False
        except ExpiredOffset as error:
            raise p.ProtocolError(410, str(error.message)) from error
        finally:
            await _aclose(reader)
        if first.end is not None:
            self._check_end(path, first.end)
            return [], True
        more, ended = await self._catch_up(path, info, p.from_log_offset(first.offset))
        return [first, *more], ended

    # SSE ---------------------------------------------------------------------------------

    def _sse(self, info: StreamInfo, start: str, cursor: str | None) -> Response:
        binary = p.sse_binary(info.content_type)
        headers = dict(_SECURITY)
        headers["Cache-Control"] = "no-cache"
        headers["Content-Type"] = "text/event-stream"  # exactly: no charset parameter
        if binary:
            headers[p.SSE_ENCODING] = "base64"
        return StreamingResponse(self._events(info, start, cursor, binary), headers=headers)

    def _data(self, info: StreamInfo, records: list[Record], binary: bool) -> bytes:
        if binary:
            return p.data_event(b"".join(r.data for r in records), binary=True)
        return p.data_event(self._body(info, records), binary=False)

    async def _events(
        self, info: StreamInfo, start: str, cursor: str | None, binary: bool
    ) -> AsyncIterator[bytes]:
        # A data event and its control event go out as one chunk: a reader never sees one
        # without the other.
        deadline = time.monotonic() + self.options.sse_seconds
        position = start
        records, ended = await self._catch_up_quiet(info, position)
        data = b""
        if records:
            position = p.from_log_offset(records[-1].offset)
            data = self._data(info, records, binary)
        cursor = p.cursor_for(self.clock(), cursor)
        yield data + p.control_event(position, cursor, up_to_date=True, closed=ended)
        if ended:
            return
        reader = self.log.read(info.log_id, self._after(position), follow=True)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    record = await asyncio.wait_for(anext(reader), timeout=remaining)
                except (TimeoutError, StopAsyncIteration):
                    return
                if record.end is not None:
                    if record.end.code is Code.OK:
                        yield p.control_event(position, None, up_to_date=True, closed=True)
                    return
                position = p.from_log_offset(record.offset)
                cursor = p.cursor_for(self.clock(), cursor)
                data = self._data(info, [record], binary)
                yield data + p.control_event(position, cursor, up_to_date=True)
        except ExpiredOffset:
            return
        finally:
            await _aclose(reader)

    async def _catch_up_quiet(self, info: StreamInfo, start: str) -> tuple[list[Record], bool]:
        try:
            return await self._catch_up("", info, start)
        except (p.ProtocolError, _Refused):
            return [], True


async def _aclose(iterator: AsyncIterator[Record]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


def mount_durable(front: ASGIApp, durable: DurableStreamsApp) -> ASGIApp:
    """``front`` with ``durable`` answering every HTTP request under its prefix."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and durable.owns(scope.get("path", "")):
            await durable(scope, receive, send)
            return
        await front(scope, receive, send)

    return app


def check_streams(spec: str) -> str | None:
    """Why ``--streams SPEC`` cannot be used (one line), or None."""
    if spec == "memory":
        return None
    if not spec.startswith(("redis://", "rediss://")):
        return f"--streams {spec}: use memory or redis://HOST:PORT/DB"
    try:
        importlib.import_module("rpckit.durable.redis")
    except ImportError as error:
        return f"--streams {spec}: the Redis stream log is not available ({error})"
    return None


def open_log(spec: str | None) -> StreamLog:
    """The stream log ``--streams`` names: ``memory`` (or None) or ``redis://HOST:PORT/DB``."""
    if spec is None or spec == "memory":
        from rpckit.durable.memory import MemoryLog

        return MemoryLog()
    problem = check_streams(spec)
    if problem:
        raise ValueError(problem)
    module = importlib.import_module("rpckit.durable.redis")
    factory = module.RedisLog
    from_url = getattr(factory, "from_url", None)
    log: StreamLog = from_url(spec) if from_url is not None else factory(spec)
    return log
