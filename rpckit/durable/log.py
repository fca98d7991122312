"""The stream log every durable stream is written to and read from: the interface the
backends implement (in-memory for one process, Redis Streams for many instances), free of I/O.

A stream is an append-only sequence of records under one id. Offsets are opaque strings,
strictly increasing in string order within a stream (``"-1"`` is the start, before the first
record). A producer holds a lease with a fencing token; every append names its token, and an
append with a token that is no longer the stream's current one is refused, so a producer that
lost its lease can never write again. The end of a stream is a terminal record: ok, or an
error (code, message, details), after which nothing can be appended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from rpckit.errors import Code, RpcError

__all__ = [
    "START",
    "End",
    "ExpiredOffset",
    "Lease",
    "LeaseLost",
    "Record",
    "Retention",
    "StreamEnded",
    "StreamExists",
    "StreamLog",
    "StreamLost",
    "StreamNotFound",
]

#: The offset before the first record: reading from it reads everything retained.
START = "-1"


@dataclass(frozen=True, slots=True)
class Retention:
    """How long a stream is kept after its last append (seconds) and how many records at
    most (the oldest go first; reading from an offset they held is ``ExpiredOffset``)."""

    ttl: float = 3600.0
    max_records: int = 100_000


@dataclass(frozen=True, slots=True)
class End:
    """The terminal record: ``code`` OK for a complete stream, else the error's code,
    message and serialized details (``google.rpc.Status`` bytes, empty without details)."""

    code: Code = Code.OK
    message: str = ""
    details: bytes = b""

    def error(self) -> RpcError | None:
        """The error this end stands for, or None for a complete stream."""
        if self.code is Code.OK:
            return None
        return RpcError(self.code, self.message)


@dataclass(frozen=True, slots=True)
class Record:
    """One record as read: its offset and either a payload (an encoded item) or the end."""

    offset: str
    data: bytes = b""
    end: End | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """A producer's right to append: the stream, its fencing token and when it expires
    (``time.time()`` seconds)."""

    stream: str
    token: int
    expires_at: float = field(compare=False)


class LeaseLost(RpcError):
    """An append or renewal with a token that is no longer the stream's (``aborted``)."""

    def __init__(self, stream: str) -> None:
        super().__init__(Code.ABORTED, f"stream {stream}: the producer's lease was lost")


class StreamLost(RpcError):
    """A followed stream ended without its terminal record: its producer's lease expired
    (``producer lost``) or the stream vanished from the log (``unavailable``). Final: reading
    it again gives the same answer, unlike a log that is unreachable for a moment."""

    def __init__(self, stream: str, why: str) -> None:
        super().__init__(Code.UNAVAILABLE, f"stream {stream}: {why}")


class ExpiredOffset(RpcError):
    """A read from an offset older than what is retained (``out_of_range``; HTTP 410).
    ``earliest`` is the oldest offset still available: the offset to read after to get every
    record still retained (the offset of the last record retention removed)."""

    def __init__(self, stream: str, earliest: str) -> None:
        super().__init__(
            Code.OUT_OF_RANGE, f"stream {stream}: offset expired; the earliest is {earliest}"
        )
        self.earliest = earliest


class StreamNotFound(RpcError):
    """No stream with this id (never created, or gone with its retention): ``not_found``."""

    def __init__(self, stream: str) -> None:
        super().__init__(Code.NOT_FOUND, f"stream {stream} not found")


class StreamExists(RpcError):
    """``create`` with an id that is already a stream (``already_exists``)."""

    def __init__(self, stream: str) -> None:
        super().__init__(Code.ALREADY_EXISTS, f"stream {stream} already exists")


class StreamEnded(RpcError):
    """An append or a second end after the terminal record (``failed_precondition``)."""

    def __init__(self, stream: str) -> None:
        super().__init__(Code.FAILED_PRECONDITION, f"stream {stream} has ended")


class StreamLog(Protocol):
    """What a backend offers. Every method is safe to call from any instance at once."""

    async def create(self, stream: str, retention: Retention, lease_seconds: float) -> Lease:
        """Create ``stream`` and give its first lease (``StreamExists`` if the id exists).
        Fencing tokens are unique per log, also across a stream that expired and was
        created again, so a stale producer of the old one cannot write to the new one."""
        ...

    async def renew(self, lease: Lease, lease_seconds: float) -> Lease:
        """Extend a lease (and the stream's retention ttl); ``LeaseLost`` if its token is no
        longer current or it has expired: an expired lease is never revived."""
        ...

    async def append(self, lease: Lease, items: Sequence[bytes]) -> str:
        """Append items in order (one round trip for the batch); the offset of the last.
        ``LeaseLost`` on a stale or expired token (or a stream that is gone);
        ``StreamEnded`` after the end. No items: the stream's last offset."""
        ...

    async def end(self, lease: Lease, end: End) -> str:
        """Append the terminal record (once: ``StreamEnded`` the second time); its offset.
        The lease ends with it."""
        ...

    def read(
        self, stream: str, after: str = START, *, follow: bool = True
    ) -> AsyncIterator[Record]:
        """Records after offset ``after`` in order, then (``follow``) new ones as they are
        appended, until the terminal record (yielded last). ``ExpiredOffset`` when ``after``
        is older than what is retained, ``StreamNotFound`` for an unknown id. A producer whose
        lease expires without an end makes the reader end with ``unavailable``, as does a
        stream that vanishes while followed (its backend lost it); never a silent clean end.
        Records removed by retention while a reader is behind: ``ExpiredOffset``."""
        ...

    def position(self, count: int) -> str:
        """The offset after the first ``count`` records of any stream (``START`` for 0):
        where a reader that has ``count`` records resumes. Durable methods publish counts,
        so a client learns its offset by counting the items it received."""
        ...

    def count(self, offset: str) -> int:
        """How many records a stream has up to and including ``offset`` (0 for ``START``):
        the inverse of ``position``; ``RpcError`` ``invalid_argument`` for a malformed one."""
        ...

    async def cancel(self, stream: str) -> None:
        """Ask the producer to stop (from any instance); ``cancelled(stream)`` sees it.
        ``StreamNotFound`` for an unknown id."""
        ...

    async def cancelled(self, stream: str) -> None:
        """Returns once someone has called ``cancel(stream)``."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
