"""RedisLog on real redis-servers: round trips, several instances, Redis lost mid-stream."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from rpckit.durable.log import End, LeaseLost, Retention, StreamNotFound
from rpckit.durable.redis import RedisLog
from rpckit.errors import Code, RpcError
from tests.durable.conftest import MakeRedisLog, RedisServer

pytestmark = pytest.mark.process

WAIT = 10.0


async def evalsha_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_batch_append_is_one_round_trip(
    make_redis_log: MakeRedisLog, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_redis_log()
    lease = await log.create(stream := f"s-{uuid.uuid4().hex}", Retention(), 10)
    await log.append(lease, [b"warm"])  # the script is loaded (EVALSHA from now on)
    sent: list[str] = []
    execute = log.client.execute_command

    async def counting(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return await cast("Callable[..., Awaitable[Any]]", execute)(*args, **options)

    monkeypatch.setattr(log.client, "execute_command", counting)
    observer = aioredis.Redis.from_url(redis_server.url)
    try:
        before = await evalsha_calls(observer)
        await log.append(lease, [str(i).encode() for i in range(100)])
        after = await evalsha_calls(observer)
    finally:
        await observer.aclose()
    assert sent == ["EVALSHA"]  # the client sent one command
    assert after - before == 1  # and the server ran one script
    records = [r async for r in log.read(stream, follow=False)]
    assert len(records) == 101


async def test_two_instances_share_a_stream(make_redis_log: MakeRedisLog) -> None:
    producer_side, reader_side = make_redis_log(), make_redis_log()
    lease = await producer_side.create(stream := f"s-{uuid.uuid4().hex}", Retention(), 10)
    cancelled = asyncio.ensure_future(producer_side.cancelled(stream))
    reader = reader_side.read(stream)
    async with asyncio.timeout(WAIT):
        offset = await producer_side.append(lease, [b"from A"])
        record = await anext(reader)
        assert (record.offset, record.data) == (offset, b"from A")
        await reader_side.cancel(stream)
        await cancelled  # the producer's instance sees the other's cancel
        await producer_side.end(lease, End(Code.CANCELLED, "cancelled by a reader"))
        last = await anext(reader)
    assert last.end == End(Code.CANCELLED, "cancelled by a reader")


async def test_redis_killed_mid_follow_ends_the_reader_with_an_error(
    own_redis_server: RedisServer,
) -> None:
    log = RedisLog.from_url(own_redis_server.url)
    try:
        lease = await log.create("s", Retention(), 30)
        await log.append(lease, [b"1"])
        reader = log.read("s")
        async with asyncio.timeout(WAIT):
            assert (await anext(reader)).data == b"1"
        pending = asyncio.ensure_future(anext(reader))
        await asyncio.sleep(0.05)  # the reader is blocked in XREAD
        own_redis_server.kill()
        started = time.monotonic()
        with pytest.raises(RpcError) as lost:
            async with asyncio.timeout(WAIT):  # an error, not a hang
                await pending
        assert lost.value.code is Code.UNAVAILABLE
        assert time.monotonic() - started < WAIT
    finally:
        await log.close()


async def test_redis_restarted_without_data_loses_the_stream_loudly(
    own_redis_server: RedisServer,
) -> None:
    log = RedisLog.from_url(own_redis_server.url)
    try:
        lease = await log.create("s", Retention(), 0.5)
        await log.append(lease, [b"1"])
        reader = log.read("s")
        async with asyncio.timeout(WAIT):
            assert (await anext(reader)).data == b"1"
        own_redis_server.kill()
        own_redis_server.start()  # same port, empty: no persistence
        # the follower ends with an error: unavailable (connection lost, or the stream's keys
        # gone), never a clean end
        with pytest.raises(RpcError) as lost:
            async with asyncio.timeout(WAIT):
                await anext(reader)
        assert lost.value.code is Code.UNAVAILABLE
        # afterwards: a new reader does not find it, the producer has lost its lease
        with pytest.raises(StreamNotFound):
            async with asyncio.timeout(WAIT):
                await anext(log.read("s"))
        with pytest.raises(LeaseLost):
            await log.append(lease, [b"2"])
    finally:
        await log.close()


async def test_wake_ups_leave_nothing_behind(make_redis_log: MakeRedisLog) -> None:
    """Followers and cancel watchers wait on pub/sub wake-ups; once they are gone, so are
    their entries (a long-running instance does not keep one per stream it ever served)."""
    log = make_redis_log()
    lease = await log.create(stream := f"s-{uuid.uuid4().hex}", Retention(), 10)
    watcher = asyncio.ensure_future(log.cancelled(stream))
    reader = log.read(stream)
    async with asyncio.timeout(WAIT):
        await log.append(lease, [b"x"])
        assert (await anext(reader)).data == b"x"
        following = asyncio.ensure_future(anext(reader))  # waits for a wake-up
        await log.end(lease, End())
        assert (await following).end == End()
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
    assert log._wakes._users == {}
    assert log._wakes._events == {}
