"""The stream log on Redis Streams (``RedisLog``): many instances share one Redis (or Redis
Cluster); any of them can produce, read or cancel any stream. Needs ``rpckit[redis]``.

Keys. Everything about one stream lives under one hash tag, so a Redis Cluster shards streams
by id and no command or script ever spans two slots::

    <prefix>:{<id>}:log     the records (a Redis stream, XADD)
    <prefix>:{<id>}:meta    a hash: ttl_ms, max_records, lease_ms, last (entry id), n
                            (records written), trimmed (the last entry id retention
                            removed), ended
    <prefix>:{<id>}:lease   the current fencing token, with the lease's expiry as its PX
    <prefix>:{<id>}:cancel  a small stream: one entry once someone cancelled

Offsets. A Redis entry id ``<ms>-<seq>`` increases, but not in string order ("9-0" > "10-0");
offsets are its two numbers as 16 hex digits each (``%016x-%016x``), which sort as strings in
the same order, and ``"-1"`` (the start) sorts before all of them.

Fencing. ``create`` is one script: the meta hash only if absent (``StreamExists`` otherwise),
then the lease key with PX; the token is the server's clock in microseconds (``TIME``), unique
per stream id even after it expired and was created again, so a stale producer of the old
stream cannot write to the new one. ``append`` and ``end`` are one script each (EVALSHA, one
round trip per batch): refuse a missing stream or a token that is not the lease key's value
(``LeaseLost``: an expired lease is never revived), refuse after the end (``StreamEnded``),
XADD the batch, trim to ``max_records`` and refresh the ttl of every key of the stream
(PEXPIRE; the lease key keeps its own expiry). ``end`` deletes the lease key with the terminal
record. ``renew`` is a script that checks the token, then extends the lease and the ttl.

Retention. ``max_records`` is exact: when the stream is longer, the script reads the ids of
the excess (XRANGE COUNT excess), trims (``XTRIM MAXLEN =``) and keeps the last id removed in
the meta hash. Not ``MAXLEN ~``: approximate trimming removes whole nodes and says not which
ids it removed, and Redis' ``max-deleted-entry-id`` counts XDEL only, not trimming, so an
expired offset could not be told from a valid one. The ttl is the whole stream's: its keys
expire ``ttl`` after the last append or renewal. A read from an offset older than the last id
removed is ``ExpiredOffset`` (``earliest`` is that id); every record carries its number
(field ``n``), and a gap in the numbers while a reader is behind (the records it missed were
trimmed) is ``ExpiredOffset`` too: never a skip.

Reads. A script opens the read (stream exists? ``StreamNotFound``; offset expired?) with the
first page (XRANGE), then pages follow with XRANGE (``follow=False``) or XREAD BLOCK. The
block is bounded to a quarter of the lease (between 10 ms and 2 s); when it times out a
script checks the stream: new records are read, a missing lease with no end record means the
producer was lost (``unavailable``, so noticed within the lease time plus that bound), a
missing meta hash means the stream vanished (``unavailable``).

Cancel. ``cancel`` adds an entry to the stream's cancel stream (in its hash tag);
``cancelled`` waits on it with XREAD BLOCK, so it returns as soon as Redis delivers the entry
(milliseconds on loopback).

Redis lost (killed, restarted without persistence, failed over to a replica that had not the
writes): connection errors become ``unavailable``; after a restart with no data, a follower
finds the stream gone (``unavailable``), a new reader gets ``not_found`` and the producer
``LeaseLost``. Never a silent clean end: only a terminal record ends a read cleanly. With AOF
(``appendfsync always``) a restart keeps the streams, and readers resume from their offsets.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

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
    StreamNotFound,
)
from rpckit.errors import Code, RpcError

__all__ = ["RedisLog", "decode_offset", "encode_offset"]


def encode_offset(entry_id: bytes | str) -> str:
    """A Redis entry id (``<ms>-<seq>``) as an offset that sorts as a string."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return f"{int(ms):016x}-{int(seq):016x}"


def decode_offset(offset: str) -> tuple[int, int]:
    """The (ms, seq) of an offset made by ``encode_offset``; ValueError when it is not one."""
    ms, sep, seq = offset.partition("-")
    if not sep or len(ms) != 16 or len(seq) != 16:
        raise ValueError(f"malformed offset {offset!r}")
    try:
        return int(ms, 16), int(seq, 16)
    except ValueError:
        raise ValueError(f"malformed offset {offset!r}") from None


def _entry_id(pair: tuple[int, int]) -> str:
    return f"{pair[0]}-{pair[1]}"


def _parse_id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


# --- the scripts (KEYS and ARGV as documented above each) -------------------------------------

# KEYS meta, lease; ARGV ttl_ms, max_records, lease_ms -> token (string) or false if it exists
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local t = redis.call('TIME')
local token = t[1] .. string.format('%06d', tonumber(t[2]))
redis.call('HSET', KEYS[1], 'ttl_ms', ARGV[1], 'max_records', ARGV[2], 'lease_ms', ARGV[3],
           'n', 0, 'last', '')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], token, 'PX', ARGV[3])
return token
"""

# The checks shared by append and end: returns the meta fields or a refusal.
_CHECK = """
local m = redis.call('HMGET', KEYS[1], 'ttl_ms', 'max_records', 'ended', 'n', 'last')
if not m[1] then return {'lost'} end
if m[3] then return {'ended'} end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {'lost'} end
local ttl, maxlen, n, last = m[1], m[2], tonumber(m[4]), m[5]
"""

# KEYS meta, lease, log, cancel: exact trimming to max_records (the id of the last record
# removed is kept in meta: reads from before it are refused), then the ttl of every key.
_REFRESH = """
local excess = redis.call('XLEN', KEYS[3]) - tonumber(maxlen)
if excess > 0 then
  local removed = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', excess)
  redis.call('XTRIM', KEYS[3], 'MAXLEN', '=', maxlen)
  redis.call('HSET', KEYS[1], 'trimmed', removed[#removed][1])
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
redis.call('PEXPIRE', KEYS[4], ttl)
"""

# KEYS meta, lease, log, cancel; ARGV token, item... -> {'ok', last id} | {'lost'} | {'ended'}
_APPEND = (
    _CHECK
    + """
for i = 2, #ARGV do
  n = n + 1
  last = redis.call('XADD', KEYS[3], '*', 'n', n, 'p', ARGV[i])
end
redis.call('HSET', KEYS[1], 'n', n, 'last', last)
"""
    + _REFRESH
    + "return {'ok', last}"
)

# KEYS meta, lease, log, cancel; ARGV token, code, message, details -> as _APPEND
_END = (
    _CHECK
    + """
n = n + 1
last = redis.call('XADD', KEYS[3], '*', 'n', n, 'c', ARGV[2], 'm', ARGV[3], 'x', ARGV[4])
redis.call('HSET', KEYS[1], 'n', n, 'last', last, 'ended', 1)
redis.call('DEL', KEYS[2])
"""
    + _REFRESH
    + "return {'ok', last}"
)

# KEYS meta, lease, log, cancel; ARGV token, lease_ms -> 1 | 0
_RENEW = """
local ttl = redis.call('HGET', KEYS[1], 'ttl_ms')
if not ttl or redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
redis.call('PEXPIRE', KEYS[4], ttl)
return 1
"""

# KEYS meta, log; ARGV first (XRANGE start: '-' or '(<id>'), count
#   -> false (no stream) | {lease_ms, id of the last record trimmed, entries, ended}
_OPEN = """
local m = redis.call('HMGET', KEYS[1], 'lease_ms', 'ended', 'trimmed')
local lease_ms = m[1]
if not lease_ms then return false end
return {lease_ms, m[3] or '0-0', redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2]),
        m[2] and 1 or 0}
"""

# KEYS meta, lease, log; ARGV first, count -> {meta exists, lease exists, entries, ended}
_POLL = """
return {redis.call('EXISTS', KEYS[1]), redis.call('EXISTS', KEYS[2]),
        redis.call('XRANGE', KEYS[3], ARGV[1], '+', 'COUNT', ARGV[2]),
        redis.call('HEXISTS', KEYS[1], 'ended')}
"""

# KEYS meta, cancel -> 1 | 0 (no stream)
_CANCEL = """
local ttl = redis.call('HGET', KEYS[1], 'ttl_ms')
if not ttl then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', 1, '*', 'c', 1)
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
"""


def _fields(raw: Any) -> dict[bytes, bytes]:
    """An entry's fields, from a flat list (scripts, RESP2) or a mapping (parsed replies)."""
    if isinstance(raw, dict):
        return {bytes(k): bytes(v) for k, v in raw.items()}
    items = list(raw)
    return {bytes(items[i]): bytes(items[i + 1]) for i in range(0, len(items), 2)}


def _entries(raw: Any) -> list[tuple[tuple[int, int], dict[bytes, bytes]]]:
    return [(_parse_id(entry[0]), _fields(entry[1])) for entry in raw or ()]


def _xread_entries(reply: Any) -> list[tuple[tuple[int, int], dict[bytes, bytes]]]:
    """The entries of an XREAD reply on one stream (RESP2 list or RESP3 mapping)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        (entries,) = reply.values()
        if isinstance(entries, list) and len(entries) == 1 and isinstance(entries[0], list):
            entries = entries[0]  # RESP3 shape in some client versions: [[entries]]
        return _entries(entries)
    return _entries(reply[0][1])


def _record(entry_id: tuple[int, int], fields: dict[bytes, bytes]) -> Record:
    offset = f"{entry_id[0]:016x}-{entry_id[1]:016x}"
    if b"c" in fields:
        end = End(Code(int(fields[b"c"])), fields.get(b"m", b"").decode(), fields.get(b"x", b""))
        return Record(offset, end=end)
    return Record(offset, fields.get(b"p", b""))


class RedisLog:
    """A ``StreamLog`` on Redis Streams (see the module's description). ``client`` must not
    decode responses (payloads are bytes); ``RedisLog.from_url`` makes a suitable one."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "rpckit",
        page: int = 512,
        owned: bool = False,
    ) -> None:
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("RedisLog needs a client with decode_responses=False")
        self._client = client
        self._prefix = prefix
        self._page = page
        self._owned = owned
        self._create = client.register_script(_CREATE)
        self._append = client.register_script(_APPEND)
        self._end = client.register_script(_END)
        self._renew = client.register_script(_RENEW)
        self._open = client.register_script(_OPEN)
        self._poll = client.register_script(_POLL)
        self._cancel = client.register_script(_CANCEL)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "rpckit", **options: Any) -> RedisLog:
        """A log on a client of its own (closed by ``close``), e.g. ``redis://host:6379/0``."""
        return cls(aioredis.Redis.from_url(url, **options), prefix=prefix, owned=True)

    @property
    def client(self) -> aioredis.Redis:
        return self._client

    def keys(self, stream: str) -> tuple[str, str, str, str]:
        """The stream's keys: meta, lease, log, cancel (one hash tag)."""
        base = f"{self._prefix}:{{{stream}}}:"
        return base + "meta", base + "lease", base + "log", base + "cancel"

    async def _call(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await script(keys=list(keys), args=list(args))
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise RpcError(Code.UNAVAILABLE, f"redis: {exc}") from exc

    # --- producing ---------------------------------------------------------------------------

    async def create(self, stream: str, retention: Retention, lease_seconds: float) -> Lease:
        meta, lease, _, _ = self.keys(stream)
        token = await self._call(
            self._create,
            (meta, lease),
            (_ms(retention.ttl), retention.max_records, _ms(lease_seconds)),
        )
        if token is None:
            raise StreamExists(stream)
        return Lease(stream, int(token), time.time() + lease_seconds)

    async def renew(self, lease: Lease, lease_seconds: float) -> Lease:
        renewed = await self._call(
            self._renew, self.keys(lease.stream), (str(lease.token), _ms(lease_seconds))
        )
        if not renewed:
            raise LeaseLost(lease.stream)
        return Lease(lease.stream, lease.token, time.time() + lease_seconds)

    async def append(self, lease: Lease, items: Sequence[bytes]) -> str:
        reply = await self._call(self._append, self.keys(lease.stream), (str(lease.token), *items))
        return self._written(lease, reply)

    async def end(self, lease: Lease, end: End) -> str:
        reply = await self._call(
            self._end,
            self.keys(lease.stream),
            (str(lease.token), int(end.code), end.message, end.details),
        )
        return self._written(lease, reply)

    @staticmethod
    def _written(lease: Lease, reply: Any) -> str:
        status = bytes(reply[0])
        if status == b"ended":
            raise StreamEnded(lease.stream)
        if status != b"ok":
            raise LeaseLost(lease.stream)
        last = bytes(reply[1])
        return encode_offset(last) if last else START

    # --- reading -----------------------------------------------------------------------------

    async def read(
        self, stream: str, after: str = START, *, follow: bool = True
    ) -> AsyncIterator[Record]:
        meta, lease, log, _ = self.keys(stream)
        if after == START:
            last: tuple[int, int] | None = None
        else:
            try:
                last = decode_offset(after)
            except ValueError:
                raise RpcError(
                    Code.INVALID_ARGUMENT, f"stream {stream}: malformed offset {after!r}"
                ) from None
        opened = await self._call(self._open, (meta, log), (_after(last), self._page))
        if opened is None:
            raise StreamNotFound(stream)
        lease_ms, deleted_raw, first_page, ended = opened
        deleted = _parse_id(deleted_raw)  # the last record trimmed
        if last is not None and last < deleted:
            raise ExpiredOffset(stream, encode_offset(_entry_id(deleted)))
        block_ms = min(max(int(lease_ms) // 4, 10), 2000)
        expected: int | None = None  # the number (field n) of the next record
        page = _entries(first_page)
        while True:
            for entry_id, fields in page:
                number = int(fields.get(b"n", b"0"))
                if expected is not None and number != expected:
                    earliest = await self._earliest(stream)
                    raise ExpiredOffset(stream, earliest)
                expected = number + 1
                last = entry_id
                record = _record(entry_id, fields)
                yield record
                if record.end is not None:
                    return
            if len(page) >= self._page:
                page = await self._range(log, last)
                continue
            if not follow or ended:  # ended: a read after the end record reads nothing
                return
            page = await self._follow(stream, log, last, block_ms)
            if page:
                continue
            # Nothing for block_ms: is the producer still there?
            exists, leased, raw, ended = await self._call(
                self._poll, (meta, lease, log), (_after(last), self._page)
            )
            page = _entries(raw)
            if page or ended:
                continue
            if not exists:
                raise RpcError(Code.UNAVAILABLE, f"stream {stream}: lost (its keys are gone)")
            if not leased:
                raise RpcError(Code.UNAVAILABLE, f"stream {stream}: producer lost")

    async def _range(
        self, log: str, last: tuple[int, int] | None
    ) -> list[tuple[tuple[int, int], dict[bytes, bytes]]]:
        try:
            raw = await self._client.xrange(log, min=_after(last), max="+", count=self._page)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise RpcError(Code.UNAVAILABLE, f"redis: {exc}") from exc
        return _entries(raw)

    async def _follow(
        self, stream: str, log: str, last: tuple[int, int] | None, block_ms: int
    ) -> list[tuple[tuple[int, int], dict[bytes, bytes]]]:
        try:
            reply = await self._client.xread(
                {log: _entry_id(last) if last else "0-0"}, count=self._page, block=block_ms
            )
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise RpcError(Code.UNAVAILABLE, f"stream {stream}: redis: {exc}") from exc
        return _xread_entries(reply)

    async def _earliest(self, stream: str) -> str:
        meta, _, _, _ = self.keys(stream)
        try:
            trimmed = await self._client.hget(meta, "trimmed")
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise RpcError(Code.UNAVAILABLE, f"redis: {exc}") from exc
        return encode_offset(trimmed or b"0-0")

    # --- cancelling --------------------------------------------------------------------------

    async def cancel(self, stream: str) -> None:
        meta, _, _, cancel = self.keys(stream)
        if not await self._call(self._cancel, (meta, cancel), ()):
            raise StreamNotFound(stream)

    async def cancelled(self, stream: str) -> None:
        _, _, _, cancel = self.keys(stream)
        while True:
            try:
                reply = await self._client.xread({cancel: "0-0"}, count=1, block=5000)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                raise RpcError(Code.UNAVAILABLE, f"stream {stream}: redis: {exc}") from exc
            if reply:
                return

    async def close(self) -> None:
        if self._owned:
            await self._client.aclose()


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _after(last: tuple[int, int] | None) -> str:
    """The XRANGE start just after ``last`` (everything when None)."""
    return "-" if last is None else f"({_entry_id(last)}"
