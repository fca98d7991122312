"""What the Durable Streams protocol keeps about a stream that the log does not: its content
type, TTL or expiry, the closed flag, the tail, the writer sequence and the idempotent
producers' states, which log stream holds its records (a stream deleted then created again
at the same path gets a fresh log stream), and for forks the segments inherited from their
source, the source itself and how many forks read a stream (a deleted stream that forks still
read is soft-deleted: 410 until its last fork goes).

A durable method's stream (``rpckit.durable.calls``) is published here too, by the instance
that starts it: ``method`` names its output message type (its log stream holds that type's
protobuf bytes; the protocol serves them as JSON), and ``keep_seconds`` how long the entry
is kept after ``touched_at`` (its start, or its last read through the protocol): a
``MemoryMeta`` sweeps such entries, Redis expires their key.

``StreamMeta`` is the interface; ``MemoryMeta`` keeps it in this process;
``rpckit.durable.redis_meta.RedisMeta`` keeps it in Redis for every instance sharing it.
``StreamInfo.to_json`` / ``StreamInfo.from_json`` are the stored form of one stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Protocol

from rpckit.durable import protocol as p
from rpckit.durable.protocol import Fork, ProducerState

__all__ = ["MemoryMeta", "Segment", "StreamInfo", "StreamMeta"]


@dataclass(frozen=True, slots=True)
class Segment:
    """Records a fork inherits: those of log stream ``log_id`` up to and including the log
    offset ``cut`` (None: none of them)."""

    log_id: str
    cut: str | None


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """One protocol stream. ``tail`` is the log offset of its last data record in its own log
        stream (None: none yet); ``token`` the fencing token of the server's lease on that log
        stream. A fork's ``segments`` are what it inherits (its own log stream is the segment
        after them), ``fork`` what its PUT asked, ``source`` the path and log id of the stream it
        forked; ``forks`` counts the forks that name this stream as their source, ``deleted``
        marks it soft-deleted (deleted or expired while forks still read it). ``method``, on a
    durable method's stream, is the full name of the method's output message type;
    ``keep_seconds`` how long after ``touched_at`` the entry is kept (see the module)."""

    log_id: str
    content_type: str
    token: int
    lease_expires_at: float
    ttl: int | None = None
    expires_at: float | None = None
    touched_at: float = field(default_factory=time.time)
    closed: bool = False
    tail: str | None = None
    stream_seq: str | None = None
    producers: tuple[tuple[str, ProducerState], ...] = ()
    segments: tuple[Segment, ...] = ()
    fork: Fork | None = None
    source: tuple[str, str] | None = None
    forks: int = 0
    deleted: bool = False
    method: str | None = None
    keep_seconds: float | None = None

    def next_offset(self) -> str:
        """The protocol offset after its last record (own, else the last inherited)."""
        if self.tail is not None:
            return p.format_offset(len(self.segments), self.tail)
        for index in range(len(self.segments) - 1, -1, -1):
            if self.segments[index].cut is not None:
                return p.format_offset(index, self.segments[index].cut)
        return p.ZERO_OFFSET

    def expired(self, now: float) -> bool:
        """Past its absolute expiry, or idle for longer than its TTL (reads and writes touch
        a stream; HEAD does not)."""
        if self.expires_at is not None and now >= self.expires_at:
            return True
        return self.ttl is not None and now >= self.touched_at + self.ttl

    def producer(self, producer_id: str) -> ProducerState | None:
        return dict(self.producers).get(producer_id)

    def with_producer(self, producer_id: str, state: ProducerState) -> StreamInfo:
        states = dict(self.producers)
        states[producer_id] = state
        return replace(self, producers=tuple(states.items()))

    def to_json(self) -> bytes:
        """The stored form (JSON): every field, producers and segments as lists."""
        fork = self.fork
        value = {
            "log_id": self.log_id,
            "content_type": self.content_type,
            "token": self.token,
            "lease_expires_at": self.lease_expires_at,
            "ttl": self.ttl,
            "expires_at": self.expires_at,
            "touched_at": self.touched_at,
            "closed": self.closed,
            "tail": self.tail,
            "stream_seq": self.stream_seq,
            "producers": [[k, v.epoch, v.last_seq] for k, v in self.producers],
            "segments": [[s.log_id, s.cut] for s in self.segments],
            "fork": None if fork is None else [fork.source, fork.offset, fork.sub_offset],
            "source": None if self.source is None else list(self.source),
            "forks": self.forks,
            "deleted": self.deleted,
        }
        if self.method is not None:
            value["method"] = self.method
            value["keep_seconds"] = self.keep_seconds
        return json.dumps(value, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> StreamInfo:
        """A ``StreamInfo`` from ``to_json``'s form."""
        value = json.loads(data)
        fork = value["fork"]
        source = value["source"]
        return cls(
            log_id=value["log_id"],
            content_type=value["content_type"],
            token=int(value["token"]),
            lease_expires_at=float(value["lease_expires_at"]),
            ttl=value["ttl"],
            expires_at=value["expires_at"],
            touched_at=float(value["touched_at"]),
            closed=bool(value["closed"]),
            tail=value["tail"],
            stream_seq=value["stream_seq"],
            producers=tuple((k, ProducerState(e, q)) for k, e, q in value["producers"]),
            segments=tuple(Segment(log_id, cut) for log_id, cut in value["segments"]),
            fork=None if fork is None else Fork(fork[0], fork[1], int(fork[2])),
            source=None if source is None else (source[0], source[1]),
            forks=int(value["forks"]),
            deleted=bool(value["deleted"]),
            method=value.get("method"),
            keep_seconds=value.get("keep_seconds"),
        )


class StreamMeta(Protocol):
    """Per-stream protocol state, shared by every instance serving the protocol."""

    def locked(self, path: str) -> AbstractAsyncContextManager[None]:
        """Serialize read-modify-write of one path (an async context manager). Locks on
        different paths nest (the server takes a fork's, then its source's: child before
        parent, never the other way, so they never deadlock)."""
        ...

    async def get(self, path: str) -> StreamInfo | None:
        """The path's stream, or None."""
        ...

    async def put(self, path: str, info: StreamInfo) -> None:
        """Store the path's stream (inside ``locked(path)``: only while the lock holds)."""
        ...

    async def delete(self, path: str) -> bool:
        """Remove the path's entry; whether there was one."""
        ...

    async def close(self) -> None:
        """Release what it holds (connections, memory)."""
        ...


class MemoryMeta:
    """``StreamMeta`` for one process: a dict and a lock per path. Durable methods' entries
    are swept (at most every ``sweep_seconds``, on a ``put``) once ``keep_seconds`` passed."""

    def __init__(self, clock: Callable[[], float] = time.time, sweep_seconds: float = 60.0) -> None:
        self._infos: dict[str, StreamInfo] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}
        self._kept: dict[str, float] = {}  # durable methods' paths: when they may go
        self._swept = clock()
        self._sweep_seconds = sweep_seconds
        self.clock = clock

    @asynccontextmanager
    async def locked(self, path: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(path, asyncio.Lock())
        self._users[path] = self._users.get(path, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[path] -= 1
            if self._users[path] == 0:
                del self._users[path]
                del self._locks[path]

    async def get(self, path: str) -> StreamInfo | None:
        return self._infos.get(path)

    async def put(self, path: str, info: StreamInfo) -> None:
        self._infos[path] = info
        if info.keep_seconds is not None:
            self._kept[path] = info.touched_at + info.keep_seconds
        else:
            self._kept.pop(path, None)
        now = self.clock()
        if now - self._swept >= self._sweep_seconds:
            self._swept = now
            for gone in [k for k, until in self._kept.items() if until <= now]:
                del self._kept[gone]
                self._infos.pop(gone, None)

    async def delete(self, path: str) -> bool:
        self._kept.pop(path, None)
        return self._infos.pop(path, None) is not None

    async def close(self) -> None:
        self._infos.clear()
        self._kept.clear()
