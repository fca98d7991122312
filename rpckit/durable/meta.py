"""What the Durable Streams protocol keeps about a stream that the log does not: its content
type, TTL or expiry, the closed flag, the tail, the writer sequence and the idempotent
producers' states, and which log stream holds its records (a stream deleted then created again
at the same path gets a fresh log stream).

``StreamMeta`` is the interface; ``MemoryMeta`` keeps it in this process. A Redis
implementation keeps one hash per stream path under the log's hash tag
(``rpckit:{<log id>}:meta``, with a path index key) and swaps whole ``StreamInfo`` values with
WATCH/MULTI, so ``update`` stays a compare-and-set.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Protocol

from rpckit.durable.protocol import ProducerState

__all__ = ["MemoryMeta", "StreamInfo", "StreamMeta"]


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """One protocol stream. ``tail`` is the log offset of its last data record (None: no data
    yet); ``token`` the fencing token of the server's lease on the log stream."""

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


class StreamMeta(Protocol):
    """Per-stream protocol state, shared by every instance serving the protocol."""

    def locked(self, path: str) -> AbstractAsyncContextManager[None]:
        """Serialize read-modify-write of one path (an async context manager)."""
        ...

    async def get(self, path: str) -> StreamInfo | None: ...

    async def put(self, path: str, info: StreamInfo) -> None: ...

    async def delete(self, path: str) -> bool:
        """Remove the path's entry; whether there was one."""
        ...

    async def close(self) -> None: ...


class MemoryMeta:
    """``StreamMeta`` for one process: a dict and a lock per path."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._infos: dict[str, StreamInfo] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}
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

    async def delete(self, path: str) -> bool:
        return self._infos.pop(path, None) is not None

    async def close(self) -> None:
        self._infos.clear()
