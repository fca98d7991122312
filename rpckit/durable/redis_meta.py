"""The Durable Streams protocol's per-stream state in Redis (``RedisMeta``): every instance and
worker sharing the Redis sees the same streams (content type, TTL or expiry, closed, tail,
writer sequence, idempotent producers, log stream, fencing token, forks). Needs
``rpckit[redis]``.

Keys. One hash tag per stream path, so a Redis Cluster never needs a cross-slot command::

    <prefix>:{ds:<path>}:info   the stream's StreamInfo as JSON (StreamInfo.to_json)
    <prefix>:{ds:<path>}:lock   the token of the instance that holds the path's lock (PX)

``{``, ``}`` and ``%`` in a path are percent-escaped, so the hash tag is always the whole
path. The log's own keys (``rpckit.durable.redis``) are tagged by log stream id, a different
tag: the protocol never needs a path's and a log stream's keys in one command.

Compare-and-set. ``locked(path)`` takes a lock with a token and an expiry: ``SET lock token NX
PX``, retried with a short backoff (at most ``wait_seconds``, then ``unavailable``); leaving
deletes the key only if it still holds the token (a script). Writes inside the lock are
fenced: ``put`` and ``delete`` are scripts that write only while the lock key still holds
this holder's token, so a holder that stalled past the lock's expiry (``lock_seconds``) and
lost it to another instance fails (``unavailable``, the server answers 503) instead of
overwriting a newer state. Writes outside any lock (none in the server but the clean-up of a
stream whose log stream is gone) are plain.

The info key has no expiry: a stream is forgotten when deleted, when found past its TTL or
expiry, or when its log stream is found gone (as with ``MemoryMeta``); but a durable
method's entry (``StreamInfo.keep_seconds``) expires that long after each write of it.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rpckit.durable.meta import StreamInfo
from rpckit.errors import Code, RpcError

__all__ = ["RedisMeta"]

T = TypeVar("T")

# KEYS lock; ARGV token -> 1 when released, 0 when the lock was not (or no longer) ours
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS info, lock; ARGV token ('' outside a lock), value, expiry in ms ('' none)
# -> 1 | 0 (the lock was lost)
_PUT = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
"""

# KEYS info, lock; ARGV token ('' outside a lock) -> {1, deleted} | {0, 0} (the lock was lost)
_DELETE = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return {0, 0} end
return {1, redis.call('DEL', KEYS[1])}
"""

#: The locks the current task holds: (meta, path) -> token (a fresh mapping per change).
_held: contextvars.ContextVar[dict[tuple[int, str], str]] = contextvars.ContextVar(
    "rpckit_durable_held"
)


def _escape(path: str) -> str:
    return path.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


class RedisMeta:
    """``StreamMeta`` in Redis (see the module's description). ``client`` may be a
    ``RedisLog``'s (``RedisLog.client``): it is closed by ``close`` only when ``owned``."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "rpckit",
        lock_seconds: float = 10.0,
        wait_seconds: float = 15.0,
        owned: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._lock_ms = max(1, round(lock_seconds * 1000))
        self._wait_seconds = wait_seconds
        self._owned = owned
        self._clock = clock
        self._unlock = client.register_script(_UNLOCK)
        self._put = client.register_script(_PUT)
        self._delete = client.register_script(_DELETE)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "rpckit", **options: Any) -> RedisMeta:
        """A meta on a client of its own (closed by ``close``), e.g. ``redis://host:6379/0``."""
        return cls(aioredis.Redis.from_url(url), prefix=prefix, owned=True, **options)

    def keys(self, path: str) -> tuple[str, str]:
        """The path's keys: info, lock (one hash tag)."""
        base = f"{self._prefix}:{{ds:{_escape(path)}}}:"
        return base + "info", base + "lock"

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise RpcError(Code.UNAVAILABLE, f"redis: {exc}") from exc

    @asynccontextmanager
    async def locked(self, path: str) -> AsyncIterator[None]:
        _, lock = self.keys(path)
        token = uuid.uuid4().hex
        deadline = self._clock() + self._wait_seconds
        delay = 0.001
        while not await self._call(lambda: self._take(lock, token)):
            if self._clock() >= deadline:
                raise RpcError(Code.UNAVAILABLE, f"stream {path}: its lock stayed taken")
            # Backoff with jitter: waiters on one hot path do not retry in step.
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.025)
        held = dict(_held.get({}))
        held[id(self), path] = token
        reset = _held.set(held)
        try:
            yield
        finally:
            _held.reset(reset)
            await self._call(lambda: self._unlock(keys=[lock], args=[token]))

    async def _take(self, lock: str, token: str) -> bool:
        return bool(await self._client.set(lock, token, nx=True, px=self._lock_ms))

    def _token(self, path: str) -> str:
        return _held.get({}).get((id(self), path), "")

    async def get(self, path: str) -> StreamInfo | None:
        info, _ = self.keys(path)
        raw = await self._call(lambda: self._client.get(info))
        return None if raw is None else StreamInfo.from_json(raw)

    async def put(self, path: str, info: StreamInfo) -> None:
        keys = list(self.keys(path))
        value = info.to_json()
        token = self._token(path)
        expiry = "" if info.keep_seconds is None else str(max(1, round(info.keep_seconds * 1000)))
        if not await self._call(lambda: self._put(keys=keys, args=[token, value, expiry])):
            raise RpcError(Code.UNAVAILABLE, f"stream {path}: its lock expired before the write")

    async def delete(self, path: str) -> bool:
        keys = list(self.keys(path))
        token = self._token(path)
        done, deleted = await self._call(lambda: self._delete(keys=keys, args=[token]))
        if not done:
            raise RpcError(Code.UNAVAILABLE, f"stream {path}: its lock expired before the write")
        return bool(deleted)

    async def close(self) -> None:
        if self._owned:
            await self._client.aclose()
