"""Durable methods' streams read through the Durable Streams protocol at
``<durable-path>/<stream id>``: JSON-mode, read-only, closed after an ok end; an error end
answered with its HTTP status, a lost producer with 503. In process over ASGI on both logs
(a producer written by hand, as ``DurableCalls`` writes one), then ``rpckit serve`` with the
example's durable ``Complete`` read by httpx and by the official ``@durable-streams/client``
from Node."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from examples.streams.v1.streams_pb2 import Token
from rpckit.durable import protocol as p
from rpckit.durable.log import End, Lease, Retention, StreamLog
from rpckit.durable.meta import MemoryMeta, StreamInfo
from rpckit.durable.options import Durability
from rpckit.durable.server import DurableOptions, DurableStreamsApp, meta_for, method_publisher
from rpckit.encodings import JsonEncoding
from rpckit.errors import Code
from tests.serving.process import Served
from tests.support import NODE_MODULES, ROOT, require_tool

URL = "http://test/v1/stream"
CLIENT = NODE_MODULES / "@durable-streams" / "client"


def _method(output: Any = Token, lease_seconds: float = 5.0) -> Any:
    """What ``method_publisher`` reads of a ``MethodSpec``."""
    return SimpleNamespace(
        output=output, durable=Durability(Retention(600, 1000), lease_seconds=lease_seconds)
    )


def _token(index: int) -> Token:
    return Token(text=f"t{index} ", index=index, generation="g")


class Producer:
    """A durable method's producer, by hand: the log stream, published, its items, its end."""

    def __init__(self, log: StreamLog, app: DurableStreamsApp) -> None:
        self.log = log
        self.app = app
        self.stream = uuid.uuid4().hex
        self.lease: Lease | None = None

    async def start(self, lease_seconds: float = 5.0, output: Any = Token) -> str:
        method = _method(output, lease_seconds)
        self.lease = await self.log.create(self.stream, method.durable.retention, lease_seconds)
        await method_publisher(self.app.meta)(self.stream, method)
        return f"{URL}/{self.stream}"

    async def put(self, *indexes: int) -> None:
        assert self.lease is not None
        await self.log.append(self.lease, [_token(i).SerializeToString() for i in indexes])

    async def end(self, end: End | None = None) -> None:
        assert self.lease is not None
        await self.log.end(self.lease, end or End())


Served_ = tuple[httpx.AsyncClient, DurableStreamsApp, StreamLog]


@pytest.fixture
async def served(stream_log: StreamLog) -> AsyncIterator[Served_]:
    app = DurableStreamsApp(
        stream_log,
        meta_for(stream_log),
        options=DurableOptions(long_poll_seconds=0.5, sse_seconds=0.5),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        yield client, app, stream_log
    await app.meta.close()


def _json(index: int) -> dict[str, Any]:
    return dict(json.loads(JsonEncoding().encode(_token(index))))


def _sse(body: str) -> list[tuple[str, str]]:
    events = []
    for block in body.strip().split("\n\n"):
        lines = block.split("\n")
        kind = lines[0].removeprefix("event: ")
        events.append((kind, "\n".join(line.removeprefix("data:") for line in lines[1:])))
    return events


async def test_a_method_stream_reads_as_json_and_closes(served: Served_) -> None:
    client, app, log = served
    producer = Producer(log, app)
    url = await producer.start()
    await producer.put(0, 1)
    first = await client.get(url, params={"offset": "-1"})
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.json() == [_json(0), _json(1)]
    assert p.CLOSED not in first.headers
    middle = first.headers[p.NEXT_OFFSET]
    head = await client.head(url)
    assert head.headers[p.NEXT_OFFSET] == middle
    assert p.CLOSED not in head.headers
    now = await client.get(url, params={"offset": "now"})
    assert now.json() == []
    assert now.headers[p.NEXT_OFFSET] == middle

    waiting = asyncio.create_task(client.get(url, params={"offset": middle, "live": "long-poll"}))
    await asyncio.sleep(0.05)
    await producer.put(2)
    polled = await waiting
    assert polled.status_code == 200
    assert polled.json() == [_json(2)]
    await producer.end()

    whole = await client.get(url, params={"offset": "-1"})
    assert whole.json() == [_json(0), _json(1), _json(2)]
    assert whole.headers[p.CLOSED] == "true"
    rest = await client.get(url, params={"offset": middle})
    assert rest.json() == [_json(2)]
    assert rest.headers[p.CLOSED] == "true"
    at_end = await client.get(
        url, params={"offset": whole.headers[p.NEXT_OFFSET], "live": "long-poll"}
    )
    assert at_end.status_code == 204
    assert at_end.headers[p.CLOSED] == "true"
    head = await client.head(url)
    assert head.headers[p.CLOSED] == "true"
    assert head.headers[p.NEXT_OFFSET] == whole.headers[p.NEXT_OFFSET]

    sse = await client.get(url, params={"offset": "-1", "live": "sse"})
    events = _sse(sse.text)
    assert events[0] == ("data", json.dumps([_json(i) for i in range(3)], separators=(",", ":")))
    control = json.loads(events[1][1])
    assert control["streamClosed"] is True
    assert control["streamNextOffset"] == whole.headers[p.NEXT_OFFSET]


async def test_only_the_handler_writes_a_method_stream(served: Served_) -> None:
    client, app, log = served
    producer = Producer(log, app)
    url = await producer.start()
    await producer.put(0)
    json_type = {"content-type": "application/json"}
    post = await client.post(url, content=b"[1]", headers=json_type)
    assert post.status_code == 405
    assert "only its handler writes it" in post.text
    assert post.headers["allow"] == "GET, HEAD, OPTIONS"
    assert (await client.delete(url)).status_code == 405
    assert (await client.put(url, headers=json_type)).status_code == 409
    fork = await client.put(
        f"{URL}/fork-{producer.stream}",
        headers={**json_type, p.FORKED_FROM: f"/v1/stream/{producer.stream}"},
    )
    assert fork.status_code == 409
    still = await client.get(url, params={"offset": "-1"})
    assert still.json() == [_json(0)]


async def test_an_error_end_is_answered_after_the_items(served: Served_) -> None:
    client, app, log = served
    producer = Producer(log, app)
    url = await producer.start()
    await producer.put(0, 1)
    await producer.end(End(Code.RESOURCE_EXHAUSTED, "out of tokens"))
    items = await client.get(url, params={"offset": "-1"})
    assert items.status_code == 200
    assert items.json() == [_json(0), _json(1)]
    assert p.CLOSED not in items.headers
    after = items.headers[p.NEXT_OFFSET]
    for live in ({}, {"live": "long-poll"}, {"live": "sse"}):
        failed = await client.get(url, params={"offset": after, **live})
        assert failed.status_code == 429, live
        assert failed.text.endswith("ended with resource_exhausted: out of tokens")
    sse = await client.get(url, params={"offset": "-1", "live": "sse"})
    events = _sse(sse.text)  # the items, not closed; the reconnect gets the 429
    assert [kind for kind, _ in events] == ["data", "control"]
    assert "streamClosed" not in json.loads(events[1][1])


async def test_a_cancelled_stream_answers_499(served: Served_) -> None:
    client, app, log = served
    producer = Producer(log, app)
    url = await producer.start()
    await producer.end(End(Code.CANCELLED, "the stream was cancelled"))
    failed = await client.get(url, params={"offset": "-1"})
    assert failed.status_code == 499


async def test_a_lost_producer_ends_live_reads_with_503(served: Served_) -> None:
    client, app, log = served
    producer = Producer(log, app)
    url = await producer.start(lease_seconds=0.3)
    await producer.put(0)
    await asyncio.sleep(0.5)  # the lease expires: no end will come
    items = await client.get(url, params={"offset": "-1"})
    assert items.json() == [_json(0)]
    assert p.CLOSED not in items.headers
    after = items.headers[p.NEXT_OFFSET]
    polled = await client.get(url, params={"offset": after, "live": "long-poll"})
    assert polled.status_code == 503
    assert "producer lost" in polled.text
    sse = await client.get(url, params={"offset": after, "live": "sse"})
    assert sse.status_code == 503


async def test_an_unknown_message_type_is_501(served: Served_) -> None:
    client, app, log = served
    producer = Producer(log, app)
    url = await producer.start(output=SimpleNamespace(DESCRIPTOR=SimpleNamespace(full_name="x.Y")))
    response = await client.get(url, params={"offset": "-1"})
    assert response.status_code == 501
    assert "x.Y" in response.text


async def test_an_unknown_path_stays_404(served: Served_) -> None:
    client, _, _ = served
    response = await client.get(f"{URL}/{uuid.uuid4().hex}", params={"offset": "-1"})
    assert response.status_code == 404


async def test_memory_meta_sweeps_method_entries_after_keep_seconds() -> None:
    now = [1000.0]
    meta = MemoryMeta(clock=lambda: now[0], sweep_seconds=10)
    kept = StreamInfo("a", "application/json", 0, 0.0, touched_at=now[0], method="T")
    await meta.put("/a", replace(kept, keep_seconds=30))
    await meta.put("/plain", StreamInfo("b", "text/plain", 1, 0.0, touched_at=now[0]))
    now[0] += 20
    await meta.put("/other", replace(kept, log_id="c", touched_at=now[0], keep_seconds=30))
    assert await meta.get("/a") is not None  # 20 s: kept
    now[0] += 20
    await meta.put("/plain", StreamInfo("b", "text/plain", 1, 0.0, touched_at=now[0]))
    assert await meta.get("/a") is None  # 40 s: swept
    assert await meta.get("/other") is not None
    assert await meta.get("/plain") is not None


def test_stream_info_keeps_its_method_in_json() -> None:
    info = StreamInfo("a", "application/json", 0, 0.0, method="pkg.T", keep_seconds=12.5)
    assert StreamInfo.from_json(info.to_json()) == info
    plain = StreamInfo("b", "text/plain", 1, 0.0)
    stored = json.loads(plain.to_json())
    assert "method" not in stored  # the stored form of protocol streams is unchanged
    assert StreamInfo.from_json(plain.to_json()) == plain


@pytest.mark.process
async def test_redis_meta_expires_method_entries(make_redis_log: Any) -> None:
    log = make_redis_log()
    meta = meta_for(log)
    info = StreamInfo("a", "application/json", 0, 0.0, method="T", keep_seconds=0.2)
    path = f"/{uuid.uuid4().hex}"
    await meta.put(path, info)
    assert await meta.get(path) == info
    await asyncio.sleep(0.4)
    assert await meta.get(path) is None


# rpckit serve ----------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[str]:
    with Served(
        "examples.streams.server:create_service",
        "--http",
        "127.0.0.1:0",
        "--durable-path",
        "/v1/stream",
        "--durable-long-poll",
        "2",
    ) as served:
        port = served.ports()["HTTP"]
        yield f"http://127.0.0.1:{port}"


def _start(base: str, tokens: int, interval_ms: int) -> str:
    """Start a Complete and leave it (detached: it goes on); its stream id."""
    params = {"tokens": str(tokens), "interval_ms": str(interval_ms)}
    with httpx.stream("GET", f"{base}/api/complete", params=params, timeout=10) as response:
        assert response.status_code == 200
        return response.headers["rpckit-stream-id"]


@pytest.mark.process
def test_complete_through_the_protocol(server: str) -> None:
    params = {"tokens": "5", "interval_ms": "1"}
    plain = httpx.get(f"{server}/api/complete", params=params, timeout=10)
    stream = plain.headers["rpckit-stream-id"]
    rest_items = [json.loads(line) for line in plain.text.splitlines() if line]
    url = f"{server}/v1/stream/{stream}"
    whole = httpx.get(url, params={"offset": "-1"}, timeout=10)
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "application/json"
    assert whole.json() == rest_items  # the same JSON as the REST route's
    assert [item.get("index", 0) for item in whole.json()] == list(range(5))
    assert whole.headers[p.CLOSED] == "true"
    assert whole.headers[p.NEXT_OFFSET] == httpx.head(url).headers[p.NEXT_OFFSET]

    live = _start(server, 10, 30)
    events: list[tuple[str, str]] = []
    with httpx.stream(
        "GET", f"{server}/v1/stream/{live}", params={"offset": "-1", "live": "sse"}, timeout=10
    ) as response:
        assert response.headers["content-type"] == "text/event-stream"
        events = _sse(response.read().decode())
    items = [item for kind, data in events if kind == "data" for item in json.loads(data)]
    assert [item.get("index", 0) for item in items] == list(range(10))
    assert json.loads(events[-1][1])["streamClosed"] is True
    refused = httpx.post(f"{server}/v1/stream/{live}", json=[1])
    assert refused.status_code == 405


def _node_reader(url: str, live: str) -> list[dict[str, Any]]:
    run = subprocess.run(
        ["node", "durable_client_reader.mjs", url, "--live", live],
        cwd=ROOT / "tests" / "node",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return [json.loads(line) for line in run.stdout.splitlines() if line]


@pytest.mark.process
@pytest.mark.parametrize("live", ["sse", "long-poll", "false"])
def test_the_official_client_reads_a_method_stream(server: str, live: str) -> None:
    require_tool(
        shutil.which("node") is not None and CLIENT.is_dir(),
        "node or @durable-streams/client is missing",
    )
    tokens = 12
    stream = _start(server, tokens, 1 if live == "false" else 40)
    if live == "false":  # catch-up only: read once it is over
        httpx.get(f"{server}/api/complete", params={"stream": stream}, timeout=10)
    lines = _node_reader(f"{server}/v1/stream/{stream}", live)
    items = [line["item"] for line in lines if line["type"] == "item"]
    assert [item.get("index", 0) for item in items] == list(range(tokens)), lines
    assert all(item["text"].endswith(" ") for item in items)
    assert lines[-1]["type"] == "closed", lines
