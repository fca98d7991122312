"""The Durable Streams server in process, over ASGI (no socket): the paths the official
conformance suite (test_conformance.py) also covers, plus what it cannot see (a fake clock for
TTLs, the server's lease on the log, mounting beside another app)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from rpckit.durable import protocol as p
from rpckit.durable.memory import MemoryLog
from rpckit.durable.server import (
    DurableOptions,
    DurableStreamsApp,
    Receive,
    Scope,
    Send,
    check_streams,
    mount_durable,
)

URL = "http://test/v1/stream"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def served() -> AsyncIterator[tuple[httpx.AsyncClient, DurableStreamsApp, Clock]]:
    clock = Clock()
    app = DurableStreamsApp(
        MemoryLog(), options=DurableOptions(long_poll_seconds=0.2, sse_seconds=0.2), clock=clock
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport) as client:
        yield client, app, clock
    await app.aclose()


Served = tuple[httpx.AsyncClient, DurableStreamsApp, Clock]


async def test_create_append_read_resume(served: Served) -> None:
    client, _, _ = served
    created = await client.put(f"{URL}/a", content=b"one", headers={"content-type": "text/plain"})
    assert created.status_code == 201
    assert created.headers["location"] == f"{URL}/a"
    again = await client.put(f"{URL}/a", headers={"content-type": "text/plain"})
    assert again.status_code == 200
    other = await client.put(f"{URL}/a", headers={"content-type": "application/json"})
    assert other.status_code == 409
    appended = await client.post(f"{URL}/a", content=b"two", headers={"content-type": "text/plain"})
    assert appended.status_code == 204
    whole = await client.get(f"{URL}/a")
    assert whole.content == b"onetwo"
    assert whole.headers[p.UP_TO_DATE] == "true"
    assert whole.headers[p.NEXT_OFFSET] == appended.headers[p.NEXT_OFFSET]
    rest = await client.get(f"{URL}/a", params={"offset": created.headers[p.NEXT_OFFSET]})
    assert rest.content == b"two"
    cached = await client.get(f"{URL}/a", headers={"if-none-match": whole.headers["etag"]})
    assert cached.status_code == 304
    assert (await client.get(f"{URL}/a", params={"offset": "o,1"})).status_code == 400


async def test_json_mode_and_producers(served: Served) -> None:
    client, _, _ = served
    json_type = {"content-type": "application/json"}
    assert (await client.put(f"{URL}/j", content=b"[]", headers=json_type)).status_code == 201

    def producer(seq: int, epoch: int = 0) -> dict[str, str]:
        return {**json_type, "Producer-Id": "w", "Producer-Epoch": str(epoch),
                "Producer-Seq": str(seq)}  # fmt: skip

    first = await client.post(f"{URL}/j", content=b'[{"a":1},[2]]', headers=producer(0))
    assert first.status_code == 200
    assert first.headers[p.PRODUCER_SEQ] == "0"
    duplicate = await client.post(f"{URL}/j", content=b'{"a":1}', headers=producer(0))
    assert duplicate.status_code == 204
    gap = await client.post(f"{URL}/j", content=b"3", headers=producer(5))
    assert gap.status_code == 409
    assert gap.headers[p.PRODUCER_EXPECTED_SEQ] == "1"
    assert (await client.post(f"{URL}/j", content=b"4", headers=producer(0, 1))).status_code == 200
    stale = await client.post(f"{URL}/j", content=b"5", headers=producer(1, 0))
    assert stale.status_code == 403
    assert stale.headers[p.PRODUCER_EPOCH] == "1"
    assert json.loads((await client.get(f"{URL}/j")).content) == [{"a": 1}, [2], 4]
    assert (await client.post(f"{URL}/j", content=b"{", headers=json_type)).status_code == 400


async def test_close_then_reads_say_closed(served: Served) -> None:
    client, _, _ = served
    await client.put(f"{URL}/c", content=b"x", headers={"content-type": "text/plain"})
    closed = await client.post(f"{URL}/c", headers={p.CLOSED: "true"})
    assert closed.status_code == 204
    assert closed.headers[p.CLOSED] == "true"
    refused = await client.post(f"{URL}/c", content=b"y", headers={"content-type": "text/plain"})
    assert refused.status_code == 409
    read = await client.get(f"{URL}/c")
    assert read.content == b"x"
    assert read.headers[p.CLOSED] == "true"
    poll = await client.get(
        f"{URL}/c", params={"offset": read.headers[p.NEXT_OFFSET], "live": "long-poll"}
    )
    assert poll.status_code == 204
    assert poll.headers[p.CLOSED] == "true"
    sse = await client.get(f"{URL}/c", params={"offset": "-1", "live": "sse"})
    assert sse.headers["content-type"] == "text/event-stream"
    assert sse.text.startswith("event: data\ndata:x\n\nevent: control\n")
    assert '"streamClosed":true' in sse.text


async def test_long_poll_wakes_on_an_append(served: Served) -> None:
    client, app, _ = served
    app.options = DurableOptions(long_poll_seconds=30)
    created = await client.put(f"{URL}/w", headers={"content-type": "text/plain"})
    tail = created.headers[p.NEXT_OFFSET]  # not "now": the append may come first
    waiting = asyncio.create_task(
        client.get(f"{URL}/w", params={"offset": tail, "live": "long-poll"})
    )
    await client.post(f"{URL}/w", content=b"hi", headers={"content-type": "text/plain"})
    answer = await asyncio.wait_for(waiting, 10)
    assert answer.status_code == 200
    assert answer.content == b"hi"
    assert p.CURSOR in answer.headers


async def test_long_poll_times_out_with_204(served: Served) -> None:
    client, _, _ = served
    await client.put(f"{URL}/t", headers={"content-type": "text/plain"})
    answer = await client.get(f"{URL}/t", params={"offset": "now", "live": "long-poll"})
    assert answer.status_code == 204
    assert answer.headers[p.UP_TO_DATE] == "true"
    assert p.CURSOR in answer.headers


async def test_ttl_slides_on_reads_not_on_head(served: Served) -> None:
    client, _, clock = served
    await client.put(f"{URL}/e", headers={"content-type": "text/plain", p.TTL: "10"})
    clock.now += 8
    assert (await client.get(f"{URL}/e")).status_code == 200  # touches
    clock.now += 8
    head = await client.head(f"{URL}/e")
    assert head.status_code == 200
    assert head.headers[p.TTL] == "2"
    clock.now += 3
    assert (await client.head(f"{URL}/e")).status_code == 404
    both = {"content-type": "text/plain", p.TTL: "1", p.EXPIRES_AT: "2030-01-01T00:00:00Z"}
    assert (await client.put(f"{URL}/f", headers=both)).status_code == 400


async def test_delete_ends_followers_and_frees_the_path(served: Served) -> None:
    client, app, _ = served
    app.options = DurableOptions(long_poll_seconds=30)
    await client.put(f"{URL}/d", content=b"old", headers={"content-type": "text/plain"})
    tail = (await client.get(f"{URL}/d")).headers[p.NEXT_OFFSET]
    waiting = asyncio.create_task(
        client.get(f"{URL}/d", params={"offset": tail, "live": "long-poll"})
    )
    assert (await client.delete(f"{URL}/d")).status_code == 204
    assert (await asyncio.wait_for(waiting, 10)).status_code == 404
    assert (await client.delete(f"{URL}/d")).status_code == 404
    await client.put(f"{URL}/d", content=b"new", headers={"content-type": "text/plain"})
    assert (await client.get(f"{URL}/d")).content == b"new"


async def test_mounted_beside_another_app() -> None:
    seen: list[str] = []

    async def front(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(str(scope["path"]))
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    durable = DurableStreamsApp(MemoryLog(), prefix="/streams/")
    transport = httpx.ASGITransport(app=mount_durable(front, durable))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.put("/streams/s")).status_code == 201
        assert (await client.get("/streams")).status_code == 418
        assert (await client.get("/other")).status_code == 418
    await durable.aclose()
    assert seen == ["/streams", "/other"]


def test_streams_flag_values() -> None:
    assert check_streams("memory") is None
    assert check_streams("redis://127.0.0.1:6379/0") is None
    problem = check_streams("kafka://x")
    assert problem is not None
    assert "memory or redis://" in problem


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--http", ":0", "--streams", "kafka://x"], "use memory or redis://"),
        (["--grpc", ":0", "--durable-path", "/v1/stream"], "--durable-path needs --http"),
        (["--http", ":0", "--workers", "2", "--durable-path", "/s"], "needs --streams redis://"),
        (
            ["--http", ":0", "--workers", "2", "--durable-path", "/s", "--streams", "memory"],
            "memory streams live in one process",
        ),
    ],
)
def test_serve_refuses_streams_flags_it_cannot_honour(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from rpckit.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["serve", "pkg.mod:attr", *args])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


async def test_a_fork_reads_its_source_in_place_and_holds_it(served: Served) -> None:
    client, _, _ = served
    text = {"content-type": "text/plain"}
    first = await client.put(f"{URL}/src", content=b"one", headers=text)
    await client.post(f"{URL}/src", content=b"two", headers=text)
    fork_headers = {p.FORKED_FROM: "/v1/stream/src", p.FORK_OFFSET: first.headers[p.NEXT_OFFSET]}
    forked = await client.put(f"{URL}/fork", headers=fork_headers)
    assert forked.status_code == 201
    assert forked.headers[p.NEXT_OFFSET] == first.headers[p.NEXT_OFFSET]
    assert (await client.put(f"{URL}/fork", headers=fork_headers)).status_code == 200
    await client.post(f"{URL}/fork", content=b"three", headers=text)
    assert (await client.get(f"{URL}/fork")).content == b"onethree"
    # The source's offset up to the fork point is the same position on the fork.
    after = await client.get(f"{URL}/fork", params={"offset": first.headers[p.NEXT_OFFSET]})
    assert after.content == b"three"
    sub = {**fork_headers, p.FORK_SUB_OFFSET: "2"}
    assert (await client.put(f"{URL}/sub", headers=sub)).status_code == 201
    assert (await client.get(f"{URL}/sub")).content == b"onetw"
    # Deleted while forks read it: 410, then gone once the last fork goes.
    assert (await client.delete(f"{URL}/src")).status_code == 204
    assert (await client.get(f"{URL}/src")).status_code == 410
    assert (await client.put(f"{URL}/src", headers=text)).status_code == 409
    assert (await client.get(f"{URL}/fork")).content == b"onethree"
    assert (await client.delete(f"{URL}/fork")).status_code == 204
    assert (await client.head(f"{URL}/src")).status_code == 410
    assert (await client.delete(f"{URL}/sub")).status_code == 204
    assert (await client.head(f"{URL}/src")).status_code == 404
    beyond = {p.FORKED_FROM: "/v1/stream/none", p.FORK_OFFSET: "0000000000000005_3030"}
    assert (await client.put(f"{URL}/x", headers=beyond)).status_code == 404
