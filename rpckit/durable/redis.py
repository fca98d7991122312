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

Offsets. Records are added with explicit entry ids ``0-<n>``, ``n`` the record's number in
its stream (1, 2, ...), so an offset also says how many records precede it (``position`` and
``count``, which durable methods publish). A Redis entry id increases, but not in string order
("0-9" > "0-10"); offsets are its two numbers as 16 hex digits each (``%016x-%016x``), which
sort as strings in the same order, and ``"-1"`` (the start) sorts before all of them.

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
first page (XRANGE), then pages follow with XRANGE. A follower waits for more without holding
a connection: every append and end PUBLISHes on the log key's name, every cancel on the cancel
key's name, and one pattern subscription per ``RedisLog`` (one connection, whatever the number
of streams and readers) wakes the local waiters of that key, which then read with XRANGE. The
wait is bounded to a quarter of the lease (between 10 ms and 2 s); when it times out a script
checks the stream: new records are read, a missing lease with no end record means the
producer was lost (``unavailable``, so noticed within the lease time plus that bound), a
missing meta hash means the stream vanished (``unavailable``). A wake-up lost while the
subscription reconnects costs at most that bound.

Cancel. ``cancel`` adds an entry to the stream's cancel stream (in its hash tag) and publishes;
``cancelled`` checks the key, then waits for the wake-up (re-checking after a reconnect of
the subscription, and every 30 s), so it returns
as soon as Redis delivers it (milliseconds on loopback) and holds no connection meanwhile.

Redis lost (killed, restarted without persistence, failed over to a replica that had not the
writes): connection errors become ``unavailable``; after a restart with no data, a follower
finds the stream gone (``unavailable``), a new reader gets ``not_found`` and the producer
``LeaseLost``. Never a silent clean end: only a terminal record ends a read cleanly. With AOF
(``appendfsync always``) a restart keeps the streams, and readers resume from their offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
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
    StreamLost,
    StreamNotFound,
)
from rpckit.errors import Code, RpcError

__all__ = ["RedisLog", "decode_offset", "encode_offset"]

logger = logging.getLogger("rpckit.durable")


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
  last = redis.call('XADD', KEYS[3], '0-' .. n, 'n', n, 'p', ARGV[i])
end
redis.call('HSET', KEYS[1], 'n', n, 'last', last)
redis.call('PUBLISH', KEYS[3], '')
"""
    + _REFRESH
    + "return {'ok', last}"
)

# KEYS meta, lease, log, cancel; ARGV token, code, message, details -> as _APPEND
_END = (
    _CHECK
    + """
n = n + 1
last = redis.call('XADD', KEYS[3], '0-' .. n, 'n', n, 'c', ARGV[2], 'm', ARGV[3], 'x', ARGV[4])
redis.call('HSET', KEYS[1], 'n', n, 'last', last, 'ended', 1)
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', KEYS[3], '')
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
redis.call('PUBLISH', KEYS[2], '')
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
        self._wakes = _Wakes(client, f"{prefix}:{{*}}:*")

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "rpckit", **options: Any) -> RedisLog:
        """A log on a client of its own (closed by ``close``), e.g. ``redis://host:6379/0``.

        Its pool holds up to ``POOL_SIZE`` connections (``?max_connections=`` in the URL
        overrides it): redis-py's default of 100 raised "Too many connections" under a burst
        of 1,000 streams, failing starts, renewals and ends. Every command holds a connection
        only for its round trip (waiting for records holds none), so the number in use
        follows the commands in flight, not the number of streams or readers."""
        options.setdefault("max_connections", POOL_SIZE)
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
                raise StreamLost(stream, "lost (its keys are gone)")
            if not leased:
                raise StreamLost(stream, "producer lost")

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
        """The records after ``last``, waiting up to ``block_ms`` for an append's wake-up
        (empty when none came: the caller then checks the producer)."""
        with self._wakes.waiting(log) as woken:  # before reading: a later append sets it
            page = await self._range(log, last)
            if page:
                return page
            try:
                async with asyncio.timeout(block_ms / 1000):
                    await woken.wait()
            except TimeoutError:
                return []
        return await self._range(log, last)

    async def _earliest(self, stream: str) -> str:
        meta, _, _, _ = self.keys(stream)
        try:
            trimmed = await self._client.hget(meta, "trimmed")
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise RpcError(Code.UNAVAILABLE, f"redis: {exc}") from exc
        return encode_offset(trimmed or b"0-0")

    def position(self, count: int) -> str:
        return START if count <= 0 else encode_offset(f"0-{count}")

    def count(self, offset: str) -> int:
        if offset == START:
            return 0
        try:
            return decode_offset(offset)[1]
        except ValueError:
            raise RpcError(Code.INVALID_ARGUMENT, f"malformed offset {offset!r}") from None

    # --- cancelling --------------------------------------------------------------------------

    async def cancel(self, stream: str) -> None:
        meta, _, _, cancel = self.keys(stream)
        if not await self._call(self._cancel, (meta, cancel), ()):
            raise StreamNotFound(stream)

    async def cancelled(self, stream: str) -> None:
        _, _, _, cancel = self.keys(stream)
        while True:
            with self._wakes.waiting(cancel) as woken:  # before looking: a cancel sets it
                try:
                    if await self._client.exists(cancel):
                        return
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    raise RpcError(Code.UNAVAILABLE, f"stream {stream}: redis: {exc}") from exc
                with contextlib.suppress(TimeoutError):  # look again now and then
                    async with asyncio.timeout(_CANCEL_RECHECK):
                        await woken.wait()

    async def close(self) -> None:
        await self._wakes.close()
        if self._owned:
            await self._client.aclose()


#: How long one read of the wake-up subscription waits (under redis-py's 5 s socket timeout).
_LISTEN_SECONDS = 0.5
#: How long a wait for a cancel trusts its wake-up before it looks again (seconds).
_CANCEL_RECHECK = 30.0
#: Connections per RedisLog made by ``from_url`` at most (Redis' own ``maxclients`` is 10,000).
POOL_SIZE = 2000


class _Wakes:
    """Wake-ups from Redis pub/sub, one connection per log whatever the number of streams:
    every append and end publishes on the stream's log key name, every cancel on its cancel
    key name, and one pattern subscription hands each message to the local waiters of that
    key. Waiting holds no connection, so the pool serves only short commands. A waiter takes
    its event *before* it reads (an append after the read sets it); while the subscription
    is down (a reconnect), waiters fall back to their own timeouts."""

    def __init__(self, client: aioredis.Redis, pattern: str) -> None:
        self._client = client
        self._pattern = pattern
        self._events: dict[str, asyncio.Event] = {}
        self._users: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def event(self, key: str) -> asyncio.Event:
        """The event the next message on ``key`` sets (and every reconnect of the
        subscription: waiters then look again for what they may have missed)."""
        if (self._task is None or self._task.done()) and not self._closing:
            self._task = asyncio.get_running_loop().create_task(
                self._listen(), name="rpckit redis wake-ups"
            )
        found = self._events.get(key)
        if found is None:
            found = self._events[key] = asyncio.Event()
        return found

    @contextlib.contextmanager
    def waiting(self, key: str) -> Iterator[asyncio.Event]:
        """``event(key)`` for the block; the key's entry goes once its last waiter leaves
        (a stream that ends or is abandoned leaves nothing behind)."""
        found = self.event(key)
        self._users[key] = self._users.get(key, 0) + 1
        try:
            yield found
        finally:
            left = self._users[key] - 1
            if left:
                self._users[key] = left
            else:
                del self._users[key]
                if self._events.get(key) is found:
                    del self._events[key]

    def _wake(self, key: str) -> None:
        found = self._events.pop(key, None)
        if found is not None:
            found.set()

    def _wake_all(self) -> None:
        events, self._events = self._events, {}
        for found in events.values():
            found.set()

    async def _listen(self) -> None:
        while not self._closing:
            pubsub = self._client.pubsub()
            try:
                await pubsub.psubscribe(self._pattern)
                self._wake_all()  # whatever was published before the subscription held
                while not self._closing:
                    # A bounded wait: an unbounded one times out on redis-py's socket
                    # timeout (5 s) and would look like a lost connection.
                    message = await pubsub.get_message(timeout=_LISTEN_SECONDS)
                    if message is not None and message.get("type") in ("pmessage", b"pmessage"):
                        channel = message["channel"]
                        self._wake(channel.decode() if isinstance(channel, bytes) else channel)
            except Exception as exc:  # the connection, or anything else: subscribe again
                logger.warning("redis wake-ups lost (%s); reconnecting", exc)
                self._wake_all()
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):  # a dead connection must not hold us
                        await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        # The listener sees the flag within its 1 s read; cancelling it inside redis-py's read
        # can leave the task stuck, so cancel is only the fallback.
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            if task.get_loop() is asyncio.get_running_loop():  # else its loop has ended
                await asyncio.wait({task}, timeout=2.0)
            task.cancel()
        self._wake_all()


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _after(last: tuple[int, int] | None) -> str:
    """The XRANGE start just after ``last`` (everything when None)."""
    return "-" if last is None else f"({_entry_id(last)}"
