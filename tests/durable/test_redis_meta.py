"""The protocol's per-stream state in Redis (``RedisMeta``) on a real redis-server: its stored
form, its lock and fenced writes between instances, its key layout; and two ``rpckit serve``
processes sharing one Redis, each serving what the other wrote."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from rpckit.durable import protocol as p
from rpckit.durable.meta import Segment, StreamInfo
from rpckit.durable.redis_meta import RedisMeta
from rpckit.errors import Code, RpcError
from tests.durable.conftest import RedisServer
from tests.serving.process import Served

pytestmark = pytest.mark.process


@pytest.fixture
async def metas(redis_server: RedisServer) -> AsyncIterator[tuple[RedisMeta, RedisMeta]]:
    """Two instances' metas (each its own client) with one prefix unique to the test."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    one = RedisMeta.from_url(redis_server.url, prefix=prefix)
    two = RedisMeta.from_url(redis_server.url, prefix=prefix)
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()


def _info(**fields: Any) -> StreamInfo:
    base = StreamInfo(
        log_id="l1", content_type="text/plain", token=7, lease_expires_at=1.5, touched_at=1.0
    )
    return replace(base, **fields)


async def test_every_field_is_shared(metas: tuple[RedisMeta, RedisMeta]) -> None:
    one, two = metas
    info = _info(
        ttl=60,
        closed=True,
        tail="0000000000000003",
        stream_seq="b",
        producers=(("w", p.ProducerState(2, 5)),),
        segments=(Segment("l0", "00000001"), Segment("lx", None)),
        fork=p.Fork("/src", p.ZERO_OFFSET, 3),
        source=("/src", "l0"),
        forks=2,
        deleted=True,
    )
    async with one.locked("/a"):
        await one.put("/a", info)
    assert await two.get("/a") == info
    assert await two.get("/b") is None
    assert await two.delete("/a") is True
    assert await one.get("/a") is None
    assert await one.delete("/a") is False


async def test_the_lock_excludes_other_instances(metas: tuple[RedisMeta, RedisMeta]) -> None:
    one, two = metas
    seen: list[StreamInfo | None] = []
    async with one.locked("/a"):

        async def other() -> None:
            async with two.locked("/a"):
                seen.append(await two.get("/a"))

        waiting = asyncio.create_task(other())
        await one.put("/a", _info(tail="1"))  # awaits Redis: the other task runs meanwhile
        await one.put("/a", _info(tail="2"))
        assert seen == []
    await waiting
    assert seen == [_info(tail="2")]


async def test_a_write_after_the_lock_was_lost_is_refused(
    metas: tuple[RedisMeta, RedisMeta],
) -> None:
    one, two = metas
    async with one.locked("/a"):
        await one.put("/a", _info(tail="1"))
        _, lock = one.keys("/a")
        await one._client.delete(lock)  # as if it expired while this holder stalled
        async with two.locked("/a"):
            with pytest.raises(RpcError) as refused:
                await one.put("/a", _info(tail="stale"))
            assert refused.value.code is Code.UNAVAILABLE
            with pytest.raises(RpcError):
                await one.delete("/a")
            await two.put("/a", _info(tail="2"))
    assert await one.get("/a") == _info(tail="2")


def test_a_path_keys_share_one_hash_tag() -> None:
    meta = RedisMeta.__new__(RedisMeta)
    meta._prefix = "rpckit"
    info, lock = meta.keys("/we{ird}%")
    assert info == "rpckit:{ds:/we%7Bird%7D%25}:info"
    assert lock == "rpckit:{ds:/we%7Bird%7D%25}:lock"


# Two processes ---------------------------------------------------------------------------


def _serve(url: str) -> Served:
    return Served(
        "examples.streams.server:create_service",
        "--http",
        "127.0.0.1:0",
        "--durable-path",
        "/v1/stream",
        "--streams",
        url,
        "--durable-long-poll",
        "10",
    )


async def test_two_instances_serve_one_redis(own_redis_server: RedisServer) -> None:
    with _serve(own_redis_server.url) as first, _serve(own_redis_server.url) as second:
        a = f"http://127.0.0.1:{first.ports()['HTTP']}/v1/stream"
        b = f"http://127.0.0.1:{second.ports()['HTTP']}/v1/stream"
        text = {"content-type": "text/plain"}
        async with httpx.AsyncClient(timeout=30) as client:
            created = await client.put(f"{a}/s", content=b"one", headers=text)
            assert created.status_code == 201
            assert (await client.put(f"{b}/s", headers=text)).status_code == 200
            offset = created.headers[p.NEXT_OFFSET]
            head = await client.head(f"{b}/s")
            assert head.headers[p.NEXT_OFFSET] == offset

            # Catch-up on the other instance.
            await client.post(f"{a}/s", content=b"two", headers=text)
            whole = await client.get(f"{b}/s", params={"offset": "-1"})
            assert whole.content == b"onetwo"
            tail = whole.headers[p.NEXT_OFFSET]

            # Long-poll on one instance, woken by an append on the other.
            polling = asyncio.create_task(
                client.get(f"{b}/s", params={"offset": tail, "live": "long-poll"})
            )
            await client.post(f"{a}/s", content=b"three", headers=text)
            polled = await polling
            assert polled.status_code == 200
            assert polled.content == b"three"
            tail = polled.headers[p.NEXT_OFFSET]

            # SSE on one instance sees an append made on the other.
            sse = {"offset": tail, "live": "sse"}
            async with client.stream("GET", f"{b}/s", params=sse) as events:
                lines = events.aiter_lines()
                async for line in lines:
                    if line.startswith("data:") and "upToDate" in line:
                        break  # the first control event: caught up
                await client.post(f"{a}/s", content=b"four", headers=text)
                async for line in lines:
                    if line.startswith("data:") and "four" in line:
                        break

            # Idempotent producers: one state for both instances.
            def producer(seq: int) -> dict[str, str]:
                return {**text, "Producer-Id": "w", "Producer-Epoch": "0", "Producer-Seq": str(seq)}

            first_write = await client.post(f"{a}/s", content=b"x", headers=producer(0))
            assert first_write.status_code == 200
            retried = await client.post(f"{b}/s", content=b"x", headers=producer(0))
            assert retried.status_code == 204
            gap = await client.post(f"{b}/s", content=b"z", headers=producer(2))
            assert gap.status_code == 409
            assert gap.headers[p.PRODUCER_EXPECTED_SEQ] == "1"
            assert (
                await client.post(f"{b}/s", content=b"y", headers=producer(1))
            ).status_code == 200
            assert (await client.get(f"{a}/s")).content == b"onetwothreefourxy"

            # A fork made on one instance, read and deleted through the other.
            forked = await client.put(
                f"{b}/f", headers={p.FORKED_FROM: "/v1/stream/s", p.FORK_OFFSET: offset}
            )
            assert forked.status_code == 201
            assert (await client.get(f"{a}/f")).content == b"one"
            assert (await client.delete(f"{a}/s")).status_code == 204
            assert (await client.head(f"{b}/s")).status_code == 410
            assert (await client.delete(f"{b}/f")).status_code == 204
            assert (await client.head(f"{a}/s")).status_code == 404


def test_workers_share_the_streams_through_redis(own_redis_server: RedisServer) -> None:
    """``--workers 2`` with Redis is accepted and serves the protocol."""
    with Served(
        "examples.streams.server:create_service",
        "--http",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--durable-path",
        "/v1/stream",
        "--streams",
        own_redis_server.url,
    ) as served:
        base = f"http://127.0.0.1:{served.ports()['HTTP']}/v1/stream"
        with httpx.Client(timeout=30) as client:
            text = {"content-type": "text/plain"}
            assert client.put(f"{base}/w", content=b"a", headers=text).status_code == 201
            for _ in range(8):  # the kernel spreads connections over both workers
                with httpx.Client(timeout=30) as fresh:
                    assert fresh.get(f"{base}/w").content == b"a"
