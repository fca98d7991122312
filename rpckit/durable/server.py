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

Forks (``PUT`` with ``Stream-Forked-From``) read their source in place: a fork's
``StreamInfo.segments`` name the log streams it inherits and the last log offset it keeps of
each (the fork point), and its own log stream follows them. Reads walk the segments up to
their cuts, then the fork's own log stream (followed live), and protocol offsets carry the
segment, so an offset of the source up to the fork point is the same position on the fork.
Only a sub-offset's part of the next record is copied into the fork's log stream at creation.
A fork counts on its source (``forks``); deleting or expiring a stream that forks still read
soft-deletes it (410 to everything, 409 to a PUT or a fork of it) and keeps its log stream
unended; its last fork's removal removes it, and so up the chain. The inherited records stay
readable as long as the source's log stream is retained (``DurableOptions.retention`` counts
from the source's last append; a fork does not extend it): once gone, reads that need them
answer 410. Locks are taken fork first, then source, never the other way.

Durable methods' streams (``rpckit.durable.calls``) are served too, read-only, at
``{prefix}/{stream id}``: ``method_publisher`` (the ``publish`` hook of ``DurableCalls``)
registers each stream it starts in ``StreamMeta`` (``StreamInfo.method``: the output message
type's full name). They are JSON-mode streams (``application/json``): every item is its
message in the protobuf JSON mapping (rpckit's ``json`` encoding, as the REST routes give it;
the type must be imported in the serving process, else 501). An ok end closes the stream
(``Stream-Closed: true``). An error end (the handler's error, ``cancelled``) is not a close:
the reads give every item before it, and a read from the offset after the last item answers
the error's HTTP status (Connect's mapping: 499 cancelled, 400 invalid_argument, 500
internal...) with ``<code>: <message>`` as text. A lost producer (its lease expired without
an end) answers 503 to live reads (long-poll, and SSE at its start; an SSE response open when
it is lost ends, and its reconnect gets the 503). PUT (409), POST and DELETE (405) are
refused: only the handler writes such a stream, and it is cancelled through the RPC
dialects (``rpckit-stream-cancel``); nor can it be forked. HEAD reads the log for the tail.
The entry is kept the method's retention ttl plus its lease after the start or the last read
through the protocol (``StreamInfo.keep_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
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
    StreamLost,
    StreamNotFound,
)
from rpckit.durable.meta import MemoryMeta, Segment, StreamInfo, StreamMeta
from rpckit.encodings import JsonEncoding
from rpckit.errors import Code, RpcError

__all__ = [
    "DurableOptions",
    "DurableStreamsApp",
    "check_streams",
    "meta_for",
    "method_publisher",
    "mount_durable",
    "open_log",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: A record as read through a stream's lineage, with its protocol offset.
Found = tuple[str, Record]

logger = logging.getLogger("rpckit.durable")
_JSON = JsonEncoding()
#: How long an SSE read of a durable method's stream at its tail waits to learn whether the
#: producer is lost (so that a reconnect after a loss is answered 503, not streamed again).
_PROBE_SECONDS = 0.2

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
        self.meta: StreamMeta = meta_for(log) if meta is None else meta
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
        except StreamLost as error:
            return _error(503, f"{error.message}: it will not go on")
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
        """The path's stream (soft-deleted ones included), or None. A stream past its TTL or
        expiry is removed here (the caller holds ``locked(path)``)."""
        info = await self.meta.get(path)
        if info is not None and not info.deleted and info.expired(self.clock()):
            await self._remove(path, info)
            return await self.meta.get(path)
        return info

    async def _existing(self, path: str) -> StreamInfo:
        info = await self._live(path)
        if info is None:
            raise _Refused(_error(404, f"stream {path} not found"))
        if info.deleted:
            raise _Refused(_error(410, f"stream {path} was deleted (forks still read it)"))
        return info

    async def _remove(self, path: str, info: StreamInfo) -> None:
        """Delete a stream (under ``locked(path)``): soft-deleted while forks read it, else
        forgotten, its log stream ended (live readers stop) and its source released."""
        if info.forks > 0:
            await self.meta.put(path, replace(info, deleted=True))
            return
        if not await self.meta.delete(path):
            return
        if not info.closed:
            # Live readers stop; the path is gone whether or not the lease still holds.
            with contextlib.suppress(RpcError):
                await self.log.end(self._lease(info), End(Code.NOT_FOUND, "stream deleted"))
        if info.source is not None:
            await self._release(*info.source)

    async def _release(self, path: str, log_id: str) -> None:
        """One fork of the stream at ``path`` (log stream ``log_id``) is gone: count it; the
        last fork of a soft-deleted stream removes it (and so on up the chain)."""
        async with self.meta.locked(path):
            info = await self.meta.get(path)
            if info is None or info.log_id != log_id:
                return  # gone already, or another stream at the same path since
            info = replace(info, forks=max(0, info.forks - 1))
            if info.deleted and info.forks == 0:
                await self._remove(path, info)
            else:
                await self.meta.put(path, info)

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
        headers = {p.NEXT_OFFSET: info.next_offset()}
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
        fork = p.parse_fork(
            request.headers.get(p.FORKED_FROM),
            request.headers.get(p.FORK_OFFSET),
            request.headers.get(p.FORK_SUB_OFFSET),
        )
        if fork is not None:
            fork = replace(fork, source=self._source_path(fork.source))
        given_type = request.headers.get("content-type")
        closing = p.parse_bool_header(request.headers.get(p.CLOSED))
        body = await request.body()
        async with self.meta.locked(path):
            existing = await self._live(path)
            if existing is not None:
                return self._put_again(path, existing, given_type, ttl, expires_at, closing, fork)
            if fork is None:
                content_type = p.normalize_content_type(given_type)
                items = self._items(content_type, body, creating=True)
                info = await self._create(content_type, ttl, expires_at, items, closing)
            else:
                info = await self._fork(fork, given_type, ttl, expires_at, body, closing)
            await self.meta.put(path, info)
        headers = self._headers(info)
        headers["Content-Type"] = info.content_type
        headers["Location"] = str(request.url.replace(query=""))
        return _response(201, headers=headers)

    def _source_path(self, source: str) -> str:
        """``Stream-Forked-From`` (a path under the prefix) as a stream's path here."""
        if not self.owns(source):
            raise p.ProtocolError(400, f"{p.FORKED_FROM} {source!r} is not under {self.prefix}")
        return source[len(self.prefix) :]

    def _put_again(
        self,
        path: str,
        existing: StreamInfo,
        given_type: str | None,
        ttl: int | None,
        expires_at: float | None,
        closing: bool,
        fork: p.Fork | None,
    ) -> Response:
        """A PUT at a path that holds a stream: 200 when it asks for the same, else 409."""
        if existing.method is not None:
            return _error(409, _read_only(path))
        if existing.deleted:
            return _error(409, f"stream {path} was deleted and forks still read it")
        content_type = p.normalize_content_type(given_type)
        if fork is not None:
            if given_type is None:
                content_type = existing.content_type
            if ttl is None and expires_at is None:
                ttl, expires_at = existing.ttl, existing.expires_at
        same = (
            existing.content_type == content_type
            and existing.ttl == ttl
            and existing.expires_at == expires_at
            and existing.closed == closing
            and existing.fork == fork
        )
        if not same:
            return _error(409, f"stream {path} exists with another configuration")
        headers = self._headers(existing)
        headers["Content-Type"] = existing.content_type
        return _response(200, headers=headers)

    async def _create(
        self,
        content_type: str,
        ttl: int | None,
        expires_at: float | None,
        items: list[bytes],
        closing: bool,
        **fields: Any,
    ) -> StreamInfo:
        """A new log stream and the ``StreamInfo`` of a stream on it, ``items`` appended."""
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
            **fields,
        )
        if items:
            info = await self._append(info, items)
        if closing:
            await self.log.end(self._lease(info), End())
            info = replace(info, closed=True)
        return info

    async def _fork(
        self,
        fork: p.Fork,
        given_type: str | None,
        ttl: int | None,
        expires_at: float | None,
        body: bytes,
        closing: bool,
    ) -> StreamInfo:
        """A fork of ``fork.source`` (under the fork's lock; takes the source's): it inherits
        the source's segments up to the fork offset, its content type and (unless given) its
        TTL or expiry; a sub-offset's part of the next record is copied into its own log
        stream first. The source counts one more fork."""
        async with self.meta.locked(fork.source):
            source = await self._live(fork.source)
            if source is None:
                raise _Refused(_error(404, f"stream {fork.source} not found"))
            if source.deleted:
                gone = f"stream {fork.source} was deleted: it cannot be forked"
                raise _Refused(_error(409, gone))
            if source.method is not None:
                raise _Refused(_error(409, _read_only(fork.source) + "; nor forked"))
            content_type = source.content_type
            if given_type is not None and p.normalize_content_type(given_type) != content_type:
                raise _Refused(_error(409, f"stream {fork.source} holds {content_type}"))
            if ttl is None and expires_at is None:
                ttl, expires_at = source.ttl, source.expires_at
            tail = source.next_offset()
            offset = tail if fork.offset is None else fork.offset
            position = p.parse_position(offset)
            if offset > tail or position.segment > len(source.segments):
                raise p.ProtocolError(400, f"{p.FORK_OFFSET} {offset!r} is past the source")
            segments = _inherit(source, position)
            items: list[bytes] = []
            if fork.sub_offset > 0:
                following = await self._following(source, offset, fork.sub_offset)
                items = p.cut_at_sub_offset(
                    following, fork.sub_offset, json_mode=p.is_json(content_type)
                )
            items += self._items(content_type, body, creating=True)
            info = await self._create(
                content_type,
                ttl,
                expires_at,
                items,
                closing,
                segments=segments,
                fork=fork,
                source=(fork.source, source.log_id),
            )
            await self.meta.put(fork.source, replace(source, forks=source.forks + 1))
        return info

    async def _following(self, info: StreamInfo, start: str, count: int) -> list[bytes]:
        """The payloads of up to ``count`` data records after ``start`` (one for a binary
        stream: a sub-offset cuts within one record)."""
        limit = count if p.is_json(info.content_type) else 1
        found: list[bytes] = []
        reader = self._lineage(info, start, follow=False)
        async with _closing(reader):
            async for _, record in reader:
                if record.end is not None or len(found) >= limit:
                    break
                found.append(record.data)
        return found

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
            if info.method is not None:
                return _error(405, _read_only(path), {"Allow": "GET, HEAD, OPTIONS"})
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
            if info.method is not None:
                return _error(405, _read_only(path), {"Allow": "GET, HEAD, OPTIONS"})
            await self._remove(path, info)
        return _response(204)

    async def _head(self, path: str, request: Request) -> Response:
        async with self.meta.locked(path):
            info = await self._existing(path)
        if info.method is not None:
            info = await self._method_tail(info)
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
        if info.method is not None:
            self._message_class(path, info.method)  # 501 now, not in the middle of a body
            if offset == p.NOW:
                info = await self._method_tail(info)
        if offset == p.NOW:
            start = info.next_offset()
        elif offset is None or offset == p.BEGINNING:
            start = p.ZERO_OFFSET
        else:
            start = offset
        if live == "sse":
            if info.method is not None:
                await self._probe(path, info, start)
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
        end = records[-1][0] if records else start
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

    def _body(self, info: StreamInfo, records: list[Found]) -> bytes:
        if info.method is not None:
            output = self._message_class("", info.method)
            return p.join_json(_as_json(output, r.data) for _, r in records)
        if p.is_json(info.content_type):
            return p.join_json(r.data for _, r in records)
        return b"".join(r.data for _, r in records)

    async def _lineage(self, info: StreamInfo, start: str, *, follow: bool) -> AsyncIterator[Found]:
        """The stream's records after protocol offset ``start`` with their protocol offsets:
        the inherited segments' (up to each cut), then its own log stream's (``follow``: new
        ones as they come, until its end record)."""
        position = p.parse_position(start)
        depth = len(info.segments)
        if position.segment > depth:
            raise p.ProtocolError(400, f"offset {start!r} is past this stream")
        for index in range(position.segment, depth):
            segment = info.segments[index]
            after = position.log_offset if index == position.segment else None
            if segment.cut is None or (after is not None and after >= segment.cut):
                continue
            rs = self._log_records(segment.log_id, after, False)
            async with _closing(rs):
                async for record in rs:
                    if record.end is not None or record.offset > segment.cut:
                        break
                    yield p.format_offset(index, record.offset), record
        after = position.log_offset if position.segment == depth else None
        own = self._log_records(info.log_id, after, follow)
        async with _closing(own):
            async for record in own:
                yield p.format_offset(depth, record.offset), record

    async def _log_records(
        self, log_id: str, after: str | None, follow: bool
    ) -> AsyncIterator[Record]:
        """``log.read`` with its expired offsets as 410 (an inherited log stream that is gone
        is too: the records a fork inherited from it are)."""
        reader = self.log.read(log_id, START if after is None else after, follow=follow)
        try:
            async with _closing(reader):
                async for record in reader:
                    yield record
        except ExpiredOffset as error:
            raise p.ProtocolError(410, str(error.message)) from error

    async def _catch_up(self, path: str, info: StreamInfo, start: str) -> tuple[list[Found], bool]:
        """The data records after ``start`` and whether the stream's end follows them."""
        records: list[Found] = []
        ended = False
        reader = self._lineage(info, start, follow=False)
        async with _closing(reader):
            async for found in reader:
                end = found[1].end
                if end is not None:
                    if info.method is not None and end.code is not Code.OK:
                        if records:
                            break  # the items first; the error to the read after them
                        raise _Refused(_failed(path, end))
                    ended = True
                    self._check_end(path, end)
                    break
                records.append(found)
        return records, ended

    def _check_end(self, path: str, end: End) -> None:
        if end.code is Code.NOT_FOUND:
            raise _Refused(_error(404, f"stream {path} not found"))

    # Durable methods' streams ------------------------------------------------------------

    def _message_class(self, path: str, name: str) -> type[ProtoMessage]:
        """The output message class of a durable method's stream (501 when this process
        does not know the type)."""
        try:
            return _message_class(name)
        except KeyError:
            unknown = f"stream {path}: its message type {name} is not known to this server"
            raise _Refused(_error(501, unknown)) from None

    async def _method_tail(self, info: StreamInfo) -> StreamInfo:
        """A durable method's stream as the log has it now: its tail, closed once ended ok."""
        tail: str | None = None
        closed = False
        reader = self._log_records(info.log_id, None, False)
        async with _closing(reader):
            async for record in reader:
                if record.end is not None:
                    closed = record.end.code is Code.OK
                    break
                tail = record.offset
        return replace(info, tail=tail, closed=closed)

    async def _probe(self, path: str, info: StreamInfo, start: str) -> None:
        """Before an SSE response on a durable method's stream: its error end, or its lost
        producer, as an error status when nothing precedes it (``_Refused``)."""
        records, ended = await self._catch_up(path, info, start)
        if records or ended:
            return
        reader = self._lineage(info, start, follow=True)
        async with _closing(reader):
            try:
                found = await asyncio.wait_for(anext(reader), timeout=_PROBE_SECONDS)
            except (TimeoutError, StopAsyncIteration):
                return
        end = found[1].end
        if end is not None and end.code is not Code.OK:
            raise _Refused(_failed(path, end))

    async def _wait(self, path: str, info: StreamInfo, start: str) -> tuple[list[Found], bool]:
        """Wait up to the long-poll timeout for the first record after ``start``; then
        everything available."""
        reader = self._lineage(info, start, follow=True)
        async with _closing(reader):
            try:
                first = await asyncio.wait_for(
                    anext(reader), timeout=self.options.long_poll_seconds
                )
            except (TimeoutError, StopAsyncIteration):
                return [], False
        end = first[1].end
        if end is not None:
            if info.method is not None and end.code is not Code.OK:
                raise _Refused(_failed(path, end))
            self._check_end(path, end)
            return [], True
        try:
            more, ended = await self._catch_up(path, info, first[0])
        except _Refused:
            if info.method is None:
                raise
            more, ended = [], False  # an error end right after: the next read answers it
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

    def _data(self, info: StreamInfo, records: list[Found], binary: bool) -> bytes:
        if binary:
            return p.data_event(b"".join(r.data for _, r in records), binary=True)
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
            position = records[-1][0]
            data = self._data(info, records, binary)
        cursor = p.cursor_for(self.clock(), cursor)
        yield data + p.control_event(position, cursor, up_to_date=True, closed=ended)
        if ended:
            return
        reader = self._lineage(info, position, follow=True)
        try:
            async with _closing(reader):
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    try:
                        offset, record = await asyncio.wait_for(anext(reader), remaining)
                    except (TimeoutError, StopAsyncIteration):
                        return
                    if record.end is not None:
                        if record.end.code is Code.OK:
                            yield p.control_event(position, None, up_to_date=True, closed=True)
                        return
                    position = offset
                    cursor = p.cursor_for(self.clock(), cursor)
                    data = self._data(info, [(offset, record)], binary)
                    yield data + p.control_event(position, cursor, up_to_date=True)
        except (p.ProtocolError, RpcError):
            return

    async def _catch_up_quiet(self, info: StreamInfo, start: str) -> tuple[list[Found], bool]:
        try:
            return await self._catch_up("", info, start)
        except (p.ProtocolError, _Refused):
            # A durable method's error end is not a close: the response just ends, and the
            # reconnect is answered the error (``_probe``).
            return [], info.method is None


@contextlib.asynccontextmanager
async def _closing(iterator: AsyncIterator[Any]) -> AsyncIterator[None]:
    """Closes an async iterator (a generator: its ``finally`` runs now, not when collected)."""
    try:
        yield
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()


def _inherit(source: StreamInfo, position: p.Position) -> tuple[Segment, ...]:
    """The segments a fork of ``source`` at ``position`` inherits: the source's before the
    position's segment, and that segment up to the position (never past its own cut)."""
    index = position.segment
    if index < len(source.segments):
        segment = source.segments[index]
        cut = segment.cut
        if cut is not None and (position.log_offset is None or position.log_offset < cut):
            cut = position.log_offset
        return (*source.segments[:index], Segment(segment.log_id, cut))
    return (*source.segments, Segment(source.log_id, position.log_offset))


def _read_only(path: str) -> str:
    return (
        f"stream {path} is a durable method's stream: only its handler writes it "
        "(cancel it through the RPC, rpckit-stream-cancel)"
    )


def _failed(path: str, end: End) -> Response:
    """The answer to a read at a durable method's error end: the code's HTTP status."""
    return _error(
        end.code.http_status, f"stream {path} ended with {end.code.connect_name}: {end.message}"
    )


_classes: dict[str, type[ProtoMessage]] = {}


def _message_class(name: str) -> type[ProtoMessage]:
    """The generated class of message type ``name`` (``KeyError`` when not imported)."""
    found = _classes.get(name)
    if found is None:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(name)
        found = _classes[name] = message_factory.GetMessageClass(descriptor)
    return found


def _as_json(output: type[ProtoMessage], data: bytes) -> bytes:
    try:
        return _JSON.encode(output.FromString(data))
    except DecodeError as error:  # never written by a producer; refused rather than sent
        raise RpcError(Code.DATA_LOSS, f"a record is not a {output.__name__}: {error}") from None


def method_publisher(
    meta: StreamMeta, clock: Callable[[], float] = time.time
) -> Callable[[str, Any], Awaitable[None]]:
    """The ``publish`` hook of ``DurableCalls``: registers each durable method's stream it
    starts in ``meta``, so a ``DurableStreamsApp`` on the same state serves it at
    ``{prefix}/{stream id}``. A failure is logged, not raised (the call goes on; only the
    protocol does not see the stream)."""

    async def publish(stream: str, method: Any) -> None:
        settings = method.durable
        info = StreamInfo(
            log_id=stream,
            content_type="application/json",
            token=0,
            lease_expires_at=0.0,
            touched_at=clock(),
            method=method.output.DESCRIPTOR.full_name,
            keep_seconds=settings.retention.ttl + settings.lease_seconds,
        )
        try:
            await meta.put("/" + stream, info)
        except RpcError as error:
            logger.warning("stream %s: not published to the protocol: %s", stream, error)

    return publish


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


def meta_for(log: StreamLog) -> StreamMeta:
    """The protocol state that goes with ``log``: in the same Redis beside a ``RedisLog``
    (shared by every instance and worker on it, ``rpckit.durable.redis_meta``), else in this
    process (``MemoryMeta``)."""
    client = getattr(log, "client", None)
    if type(log).__module__ == "rpckit.durable.redis" and client is not None:
        module = importlib.import_module("rpckit.durable.redis_meta")
        meta: StreamMeta = module.RedisMeta(client)
        return meta
    return MemoryMeta()
