"""The StreamLog contract, run on both backends: MemoryLog (in process) and RedisLog (on a
real redis-server: those cases are marked ``process`` by the ``stream_log`` fixture)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

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
    StreamLog,
    StreamNotFound,
)
from rpckit.errors import Code, RpcError

WAIT = 5.0  # the bound on any wait that should end at once


def new_id() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


async def collect(records: AsyncIterator[Record]) -> list[Record]:
    async with asyncio.timeout(WAIT):
        return [record async for record in records]


async def test_append_and_read_in_order(stream_log: StreamLog) -> None:
    lease = await stream_log.create(stream := new_id(), Retention(), 10)
    first = await stream_log.append(lease, [b"a", b"b"])
    last = await stream_log.append(lease, [b"c"])
    end = await stream_log.end(lease, End())
    records = await collect(stream_log.read(stream))
    assert [r.data for r in records[:-1]] == [b"a", b"b", b"c"]
    assert records[-1].end == End()
    offsets = [r.offset for r in records]
    assert offsets == sorted(offsets)
    assert len(set(offsets)) == 4
    assert offsets[0] > START
    assert (offsets[1], offsets[2], offsets[3]) == (first, last, end)
    # from an offset: the rest, from any offset in the stream
    assert [r.data for r in await collect(stream_log.read(stream, first))][:1] == [b"c"]
    assert await collect(stream_log.read(stream, end)) == []


async def test_empty_append_gives_the_last_offset(stream_log: StreamLog) -> None:
    lease = await stream_log.create(new_id(), Retention(), 10)
    assert await stream_log.append(lease, []) == START
    offset = await stream_log.append(lease, [b"x"])
    assert await stream_log.append(lease, []) == offset


async def test_read_without_follow_stops_at_the_last_record(stream_log: StreamLog) -> None:
    lease = await stream_log.create(stream := new_id(), Retention(), 10)
    await stream_log.append(lease, [b"1", b"2"])
    records = await collect(stream_log.read(stream, follow=False))
    assert [r.data for r in records] == [b"1", b"2"]


async def test_many_records_come_in_order_across_pages(stream_log: StreamLog) -> None:
    lease = await stream_log.create(stream := new_id(), Retention(), 10)
    items = [str(i).encode() for i in range(1500)]
    for start in range(0, len(items), 400):
        await stream_log.append(lease, items[start : start + 400])
    await stream_log.end(lease, End())
    records = await collect(stream_log.read(stream))
    assert [r.data for r in records[:-1]] == items
    offsets = [r.offset for r in records]
    assert offsets == sorted(offsets)


async def test_follow_wakes_on_append(stream_log: StreamLog) -> None:
    lease = await stream_log.create(stream := new_id(), Retention(), 10)
    reader = stream_log.read(stream)
    waiting = asyncio.ensure_future(anext(reader))
    await asyncio.sleep(0)  # let it start waiting (no result can come before the append)
    assert not waiting.done()
    started = time.monotonic()
    offset = await stream_log.append(lease, [b"hello"])
    async with asyncio.timeout(WAIT):
        record = await waiting
    latency = time.monotonic() - started
    assert record == Record(offset, b"hello")
    assert latency < 1.0  # woken, not polled on the lease-based bound (2.5 s here)
    await stream_log.end(lease, End(Code.INTERNAL, "boom", b"\x01"))
    async with asyncio.timeout(WAIT):
        last = await anext(reader)
    assert last.end == End(Code.INTERNAL, "boom", b"\x01")
    err = last.end.error()
    assert err is not None
    assert err.code is Code.INTERNAL
    with pytest.raises(StopAsyncIteration):
        await anext(reader)


async def test_nothing_after_the_end(stream_log: StreamLog) -> None:
    lease = await stream_log.create(stream := new_id(), Retention(), 10)
    await stream_log.append(lease, [b"x"])
    await stream_log.end(lease, End())
    with pytest.raises(StreamEnded):
        await stream_log.append(lease, [b"y"])
    with pytest.raises(StreamEnded):
        await stream_log.end(lease, End(Code.CANCELLED))
    records = await collect(stream_log.read(stream))
    assert [r.data for r in records] == [b"x", b""]
    assert records[-1].end == End()


async def test_create_twice_and_unknown_streams(stream_log: StreamLog) -> None:
    await stream_log.create(stream := new_id(), Retention(), 10)
    with pytest.raises(StreamExists) as exists:
        await stream_log.create(stream, Retention(), 10)
    assert exists.value.code is Code.ALREADY_EXISTS
    with pytest.raises(StreamNotFound) as missing:
        await collect(stream_log.read(new_id()))
    assert missing.value.code is Code.NOT_FOUND
    with pytest.raises(StreamNotFound):
        await stream_log.cancel(new_id())
    with pytest.raises(RpcError) as malformed:
        await collect(stream_log.read(stream, "not-an-offset"))
    assert malformed.value.code is Code.INVALID_ARGUMENT


async def test_stale_token_is_refused(stream_log: StreamLog) -> None:
    lease = await stream_log.create(stream := new_id(), Retention(), 10)
    stale = Lease(stream, lease.token - 1, lease.expires_at)
    with pytest.raises(LeaseLost) as lost:
        await stream_log.append(stale, [b"x"])
    assert lost.value.code is Code.ABORTED
    with pytest.raises(LeaseLost):
        await stream_log.renew(stale, 10)
    with pytest.raises(LeaseLost):
        await stream_log.end(stale, End())
    renewed = await stream_log.renew(lease, 20)
    assert renewed.token == lease.token
    assert renewed.expires_at > lease.expires_at
    await stream_log.append(renewed, [b"ok"])
    assert [r.data for r in await collect(stream_log.read(stream, follow=False))] == [b"ok"]


async def test_tokens_differ_across_streams_of_one_id(stream_log: StreamLog) -> None:
    """A stream that expired and was created again has a new token: the old producer's
    lease does not write to the new stream."""
    old = await stream_log.create(stream := new_id(), Retention(ttl=0.2), 0.1)
    await wait_until_gone(stream_log, stream)
    new = await stream_log.create(stream, Retention(), 10)
    assert new.token != old.token
    with pytest.raises(LeaseLost):
        await stream_log.append(old, [b"stale"])


async def test_lease_expiry_ends_followers_with_unavailable(stream_log: StreamLog) -> None:
    lease = await stream_log.create(stream := new_id(), Retention(), 0.3)
    await stream_log.append(lease, [b"1"])
    started = time.monotonic()
    with pytest.raises(RpcError) as lost:
        await collect(stream_log.read(stream))
    assert lost.value.code is Code.UNAVAILABLE
    assert "producer lost" in lost.value.message
    assert time.monotonic() - started < 0.3 + 1.0  # within the lease plus a bound
    with pytest.raises(LeaseLost):  # an expired lease is never revived
        await stream_log.append(lease, [b"2"])
    with pytest.raises(LeaseLost):
        await stream_log.renew(lease, 10)


async def test_retention_max_records_refuses_expired_offsets(stream_log: StreamLog) -> None:
    lease = await stream_log.create(stream := new_id(), Retention(max_records=10), 10)
    first = await stream_log.append(lease, [b"first"])
    for start in range(0, 1000, 250):
        await stream_log.append(lease, [str(i).encode() for i in range(start, start + 250)])
    retained = await collect(stream_log.read(stream, follow=False))
    assert len(retained) == 10  # exactly max_records, the newest
    assert retained[-1].data == b"999"
    with pytest.raises(ExpiredOffset) as expired:
        await collect(stream_log.read(stream, first))
    assert expired.value.code is Code.OUT_OF_RANGE
    earliest = expired.value.earliest
    assert first < earliest < retained[0].offset
    # reading after the earliest offset gives everything retained
    assert await collect(stream_log.read(stream, earliest, follow=False)) == retained


async def test_a_reader_behind_retention_is_refused_not_skipped(stream_log: StreamLog) -> None:
    lease = await stream_log.create(stream := new_id(), Retention(max_records=5), 10)
    await stream_log.append(lease, [b"0"])
    reader = stream_log.read(stream)
    async with asyncio.timeout(WAIT):
        assert (await anext(reader)).data == b"0"
        await stream_log.append(lease, [str(i).encode() for i in range(1, 600)])
        with pytest.raises(ExpiredOffset):
            await drain(reader)


async def drain(records: AsyncIterator[Record]) -> None:
    async for _ in records:
        pass


async def wait_until_gone(stream_log: StreamLog, stream: str) -> float:
    """Polls (time is the property) until ``stream`` is not found; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < WAIT:
        try:
            await collect(stream_log.read(stream, follow=False))
        except StreamNotFound:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"stream {stream} still there after {WAIT} s")


async def test_ttl_expiry(stream_log: StreamLog) -> None:
    lease = await stream_log.create(stream := new_id(), Retention(ttl=0.3), 10)
    await stream_log.append(lease, [b"x"])
    assert len(await collect(stream_log.read(stream, follow=False))) == 1
    assert 0.2 < await wait_until_gone(stream_log, stream) < 3.0
    with pytest.raises(LeaseLost):
        await stream_log.append(lease, [b"y"])


async def test_cancel_is_seen_within_200_ms(stream_log: StreamLog) -> None:
    await stream_log.create(stream := new_id(), Retention(), 10)
    waiter = asyncio.ensure_future(stream_log.cancelled(stream))
    await asyncio.sleep(0.05)  # the waiter is blocked (on Redis: its XREAD was sent)
    assert not waiter.done()
    started = time.monotonic()
    await stream_log.cancel(stream)
    async with asyncio.timeout(WAIT):
        await waiter
    assert time.monotonic() - started < 0.2
    # a cancel before the wait is seen as well
    async with asyncio.timeout(WAIT):
        await stream_log.cancelled(stream)


async def test_two_readers_at_different_offsets(stream_log: StreamLog) -> None:
    lease = await stream_log.create(stream := new_id(), Retention(), 10)
    a = await stream_log.append(lease, [b"a"])
    b = await stream_log.append(lease, [b"b"])
    from_start = stream_log.read(stream)
    from_b = stream_log.read(stream, b)
    async with asyncio.timeout(WAIT):
        assert [(await anext(from_start)).offset for _ in range(2)] == [a, b]
        c = await stream_log.append(lease, [b"c"])
        first_of_b = asyncio.ensure_future(anext(from_b))
        assert (await anext(from_start)).offset == c
        assert (await first_of_b).offset == c
        await stream_log.end(lease, End())
        assert (await anext(from_start)).end == End()
        assert (await anext(from_b)).end == End()
