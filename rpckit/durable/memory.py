"""The stream log in one process's memory (``MemoryLog``): for a single instance and tests.

Everything runs on one asyncio event loop, with no lock: no method awaits between reading and
changing a stream's state. Per stream:

- records are kept in a deque of at most ``retention.max_records`` (the oldest go first, and
  the offset of the last one removed is remembered, so a read from before it is refused with
  ``ExpiredOffset``, and a reader that fell behind is too, never skipped forward);
- offsets are the record's sequence number as 16 hex digits (``"-1"`` sorts before them);
- readers wait on an ``asyncio.Event`` that every append (and the end, a lost lease, the
  stream's removal) sets and replaces: no polling;
- a lease is a token and a monotonic deadline; a follower waits at most until that deadline,
  and when it passes with no end the follower ends with ``unavailable`` ("producer lost");
- retention's ttl counts from the last append (or renewal); an expired stream is removed
  when touched and by one timer per log (``sweep_interval``), not one per stream.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from rpckit.durable.log import (
    START,
    End,
    ExpiredOffset,
    Lease,
    LeaseLost,
    Record,
    Retention,
    StreamEnded,
    StreamExists,
    StreamLost,
    StreamNotFound,
)
from rpckit.errors import Code, RpcError

__all__ = ["MemoryLog"]


def _offset(seq: int) -> str:
    return f"{seq:016x}"


def _seq(stream: str, offset: str) -> int:
    """The sequence number an offset stands for (-1 for the start)."""
    if offset == START:
        return -1
    if len(offset) != 16:
        raise RpcError(Code.INVALID_ARGUMENT, f"stream {stream}: malformed offset {offset!r}")
    try:
        return int(offset, 16)
    except ValueError:
        raise RpcError(
            Code.INVALID_ARGUMENT, f"stream {stream}: malformed offset {offset!r}"
        ) from None


@dataclass(slots=True)
class _Stream:
    name: str
    retention: Retention
    token: int
    lease_deadline: float  # time.monotonic()
    touched: float  # time.monotonic() of the last append or renewal
    records: deque[Record] = field(default_factory=deque)
    first_seq: int = 0  # the sequence number of records[0]
    next_seq: int = 0
    ended: bool = False
    gone: bool = False  # removed (ttl, or the log closed)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def expired(self, now: float) -> bool:
        return now - self.touched > self.retention.ttl

    def lease_valid(self, token: int, now: float) -> bool:
        return token == self.token and not self.ended and now < self.lease_deadline

    def push(self, record: Record) -> None:
        self.records.append(record)
        self.next_seq += 1
        while len(self.records) > self.retention.max_records:
            self.records.popleft()
            self.first_seq += 1


class MemoryLog:
    """A ``StreamLog`` in this process (see the module's description)."""

    def __init__(self, *, sweep_interval: float = 1.0) -> None:
        self._streams: dict[str, _Stream] = {}
        self._tokens = itertools.count(1)
        self._sweep_interval = sweep_interval
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    # --- the stream table -------------------------------------------------------------------

    def _get(self, stream: str) -> _Stream | None:
        """The live stream named ``stream``, removing it first when its ttl has passed."""
        state = self._streams.get(stream)
        if state is not None and state.expired(time.monotonic()):
            self._remove(state)
            return None
        return state

    def _remove(self, state: _Stream) -> None:
        if self._streams.get(state.name) is state:
            del self._streams[state.name]
        state.gone = True
        state.wake()

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        for state in [s for s in self._streams.values() if s.expired(now)]:
            self._remove(state)
        self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        if self._sweeper is None and self._streams and not self._closed:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self._sweep_interval, self._sweep)

    def _leased(self, lease: Lease) -> _Stream:
        """The stream ``lease`` may write to, or the reason it may not."""
        state = self._get(lease.stream)
        if state is None:
            raise LeaseLost(lease.stream)
        if state.ended:
            raise StreamEnded(lease.stream)
        if not state.lease_valid(lease.token, time.monotonic()):
            raise LeaseLost(lease.stream)
        return state

    # --- StreamLog ---------------------------------------------------------------------------

    async def create(self, stream: str, retention: Retention, lease_seconds: float) -> Lease:
        if self._closed:
            raise RpcError(Code.UNAVAILABLE, "the stream log is closed")
        if self._get(stream) is not None:
            raise StreamExists(stream)
        now = time.monotonic()
        token = next(self._tokens)
        self._streams[stream] = _Stream(
            name=stream,
            retention=retention,
            token=token,
            lease_deadline=now + lease_seconds,
            touched=now,
        )
        self._schedule_sweep()
        return Lease(stream, token, time.time() + lease_seconds)

    async def renew(self, lease: Lease, lease_seconds: float) -> Lease:
        state = self._get(lease.stream)
        if state is None or not state.lease_valid(lease.token, time.monotonic()):
            raise LeaseLost(lease.stream)
        now = time.monotonic()
        state.lease_deadline = now + lease_seconds
        state.touched = now
        return Lease(lease.stream, lease.token, time.time() + lease_seconds)

    async def append(self, lease: Lease, items: Sequence[bytes]) -> str:
        state = self._leased(lease)
        for item in items:
            state.push(Record(_offset(state.next_seq), bytes(item)))
        if items:
            state.touched = time.monotonic()
            state.wake()
        return _offset(state.next_seq - 1) if state.next_seq else START

    async def end(self, lease: Lease, end: End) -> str:
        state = self._leased(lease)
        offset = _offset(state.next_seq)
        state.push(Record(offset, end=end))
        state.ended = True
        state.touched = time.monotonic()
        state.wake()
        return offset

    async def read(
        self, stream: str, after: str = START, *, follow: bool = True
    ) -> AsyncIterator[Record]:
        state = self._get(stream)
        if state is None:
            raise StreamNotFound(stream)
        position = _seq(stream, after) + 1  # the sequence number of the next record to yield
        while True:
            if position < state.first_seq and (after != START or position > 0):
                raise ExpiredOffset(stream, _offset(state.first_seq - 1))
            position = max(position, state.first_seq)
            while position < state.next_seq:
                record = state.records[position - state.first_seq]
                position += 1
                yield record  # the deque may change meanwhile: indices are recomputed
                if record.end is not None:
                    return
                if position < state.first_seq:
                    raise ExpiredOffset(stream, _offset(state.first_seq - 1))
            if not follow or state.ended:  # ended: a read after the end record reads nothing
                return
            if state.gone:
                raise StreamLost(stream, "lost (expired or closed)")
            remaining = state.lease_deadline - time.monotonic()
            if remaining <= 0:
                raise StreamLost(stream, "producer lost")
            changed = state.changed
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                pass  # the deadline is checked again (a renewal may have moved it)

    def position(self, count: int) -> str:
        return START if count <= 0 else _offset(count - 1)

    def count(self, offset: str) -> int:
        return _seq("", offset) + 1

    async def cancel(self, stream: str) -> None:
        state = self._get(stream)
        if state is None:
            raise StreamNotFound(stream)
        state.cancel_requested.set()

    async def cancelled(self, stream: str) -> None:
        state = self._get(stream)
        if state is None:
            raise StreamNotFound(stream)
        await state.cancel_requested.wait()

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for state in list(self._streams.values()):
            self._remove(state)
