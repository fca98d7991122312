"""Durable streams across a cluster of real processes (tests/durable/cluster.py): redis-server,
two ``rpckit serve --streams redis://`` instances, nginx in front. Readers are Node's
``eventsource`` package (tests/node/durable_sse_reader.mjs), httpx (NDJSON and SSE), rpckit's
Python client (``Resuming(ConnectTransport(...))``) and grpcio through nginx's gRPC port.

Every wait is bounded; instances and redis are killed with SIGKILL by PID; everything started
is stopped by PID afterwards (the cluster's context manager, the readers' ``finally``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import grpc
import httpx
import pytest

from examples.streams.v1.streams_pb2 import CompleteRequest, JsonStreamRequest, Token
from examples.streams.v1.streams_rpckit import StreamsServiceClient
from rpckit.client import ResponseMetadata, Resuming
from rpckit.durable.options import EARLIEST_HEADER, FINAL_HEADER, OFFSET_HEADER, STREAM_HEADER
from rpckit.errors import Code, RpcError
from rpckit.http import ConnectTransport
from tests.durable.cluster import Cluster, Instance, MakeCluster, cluster, cluster_factory
from tests.durable.durable_service import DOGS, RETAINED
from tests.support import NODE_MODULES, ROOT, require_tool

__all__ = ["cluster", "cluster_factory"]  # the fixtures, used by name below

pytestmark = [pytest.mark.process, pytest.mark.timeout(240)]

TEST_SERVICE = "tests.durable.durable_service:create_service"
READER = ROOT / "tests" / "node" / "durable_sse_reader.mjs"
#: Complete's lease (examples/streams/server.py): a lost producer is noticed within it.
LEASE_SECONDS = 3.0
#: A bound for waits that should take well under a second (two loaded cores).
WAIT = 30.0


def require_eventsource() -> None:
    require_tool(
        shutil.which("node") is not None and (NODE_MODULES / "eventsource").is_dir(),
        "node and tests/node's npm packages (eventsource) are needed (.ci/setup.sh)",
    )


# --- readers ---------------------------------------------------------------------------------


class NodeReader:
    """tests/node/durable_sse_reader.mjs on ``url``: Node's EventSource, which reconnects with
    Last-Event-ID by itself. ``events``: what it printed (dicts with ``t`` and ``type``)."""

    def __init__(self, url: str, *, avoid: str | None = None, seconds: float = 90) -> None:
        command = ["node", str(READER), url, "--seconds", str(seconds)]
        if avoid is not None:
            command += ["--avoid", avoid]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        self.events: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self._queue.put(json.loads(line))
        self._queue.put(None)

    def wait(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = WAIT
    ) -> dict[str, Any]:
        """The first event (already seen or new) that satisfies ``predicate``."""
        for event in self.events:
            if predicate(event):
                return event
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"node reader: nothing matched in {timeout} s: {self.events}"
            try:
                got = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            assert got is not None, f"node reader exited: {self.events} {self.stderr()}"
            self.events.append(got)
            if predicate(got):
                return got

    def wait_items(self, count: int, timeout: float = WAIT) -> None:
        self.wait(lambda _: len(self.items()) >= count, timeout)

    def wait_final(self, timeout: float = WAIT) -> dict[str, Any]:
        """Its last word: ``end``, ``error``, ``closed`` or ``timeout``."""
        return self.wait(lambda e: e["type"] in ("end", "error", "closed", "timeout"), timeout)

    def items(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "item"]

    def connects(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "connect"]

    def stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        return self.process.stderr.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@contextlib.contextmanager
def node_reader(url: str, **options: Any) -> Iterator[NodeReader]:
    reader = NodeReader(url, **options)
    try:
        yield reader
    finally:
        reader.stop()


@dataclass
class PythonReader:
    """rpckit's client, ``Resuming(ConnectTransport(base_url))``, reading Complete in a thread
    of its own (its own event loop): the tokens with their arrival times, then the error."""

    base_url: str
    metadata: dict[str, str]
    tokens: list[Token] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    error: BaseException | None = None
    ended_at: float | None = None
    response: ResponseMetadata = field(default_factory=ResponseMetadata)
    upstreams: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    async def _run(self) -> None:
        async with asyncio.timeout(120), ConnectTransport(self.base_url) as transport:
            client = StreamsServiceClient(Resuming(transport, attempts=10))
            call = client.complete(
                CompleteRequest(), metadata=self.metadata, response=self.response
            )
            try:
                async for token in call:
                    self.times.append(time.time())
                    self.tokens.append(token)
                    upstream = self.response.headers.get("x-upstream")
                    if upstream and (not self.upstreams or self.upstreams[-1] != upstream):
                        self.upstreams.append(upstream)
            except Exception as exc:
                self.error = exc
            finally:
                self.ended_at = time.time()

    def wait_items(self, count: int, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while len(self.tokens) < count:
            assert self._thread.is_alive(), f"ended early: {self.error!r} {self.tokens}"
            assert time.monotonic() < deadline, f"{len(self.tokens)} tokens in {timeout} s"
            time.sleep(0.02)

    def join(self, timeout: float = WAIT) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the Python reader hangs: {len(self.tokens)} tokens"


def start_stream(instance: Instance, tokens: int, interval_ms: int) -> tuple[str, str]:
    """Start a Complete stream on ``instance`` itself (its producer runs there), leave it
    (it is detached); its id and generation (from the instance's log)."""
    url = f"{instance.url}/api/complete?prompt=cluster&tokens={tokens}&interval_ms={interval_ms}"
    with (
        httpx.Client(timeout=WAIT) as client,
        client.stream("GET", url, headers={"accept": "application/x-ndjson"}) as response,
    ):
        assert response.status_code == 200
        stream = response.headers[STREAM_HEADER]
    generation = instance.expect(r"complete: generation (\w+) started", WAIT).group(1)
    return stream, generation


def read_ndjson(
    url: str, headers: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], Any]:
    """A whole NDJSON read: its items and its in-band error (None for a clean end)."""
    items: list[dict[str, Any]] = []
    error = None
    with (
        httpx.Client(timeout=WAIT) as client,
        client.stream(
            "GET", url, headers={"accept": "application/x-ndjson", **(headers or {})}
        ) as response,
    ):
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line:
                continue
            value = json.loads(line)
            if "error" in value:
                error = value["error"]
            else:
                items.append(value)
    return items, error


def read_sse(url: str, headers: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """A whole SSE response: (event, id, data) for each event."""
    events: list[tuple[str, str, str]] = []
    with (
        httpx.Client(timeout=WAIT) as client,
        client.stream(
            "GET", url, headers={"accept": "text/event-stream", **(headers or {})}
        ) as response,
    ):
        assert response.status_code == 200, response.read()
        name, event_id, data = "message", "", None
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
            elif line == "":
                if data is not None:  # as the SSE spec: an event with no data is not one
                    events.append((name, event_id, data))
                name, event_id, data = "message", "", None
    return events


def indices(tokens: list[dict[str, Any]]) -> list[int]:
    return [t.get("index", 0) for t in tokens]


# --- 1. the reader's instance dies -----------------------------------------------------------


def test_node_reader_moves_to_the_other_instance(cluster: Cluster) -> None:
    """The producer runs on A; Node's EventSource reads through nginx from B. kill -9 B: the
    reader reconnects through nginx (Last-Event-ID) to A and goes on: indices 0..N-1 once
    each, one generation, then ``event: end``; the producer was never disturbed (one start,
    its finish logged on A)."""
    require_eventsource()
    a, b = cluster.members()
    tokens = 60
    stream, generation = start_stream(a, tokens, interval_ms=100)
    url = f"{cluster.http}/api/complete?stream={stream}&offset=0"
    with node_reader(url, avoid=a.http_address) as reader:
        first = reader.wait(lambda e: e["type"] == "connect")
        assert first["upstream"] == b.http_address, reader.events
        assert first["stream"] == stream
        reader.wait_items(5)
        killed_at = time.time()
        cluster.kill(b)
        final = reader.wait_final(60)
    assert final["type"] == "end", reader.events
    items = reader.items()
    assert indices([i["data"] for i in items]) == list(range(tokens))
    assert [i["id"] for i in items] == [f"{stream}:{n}" for n in range(1, tokens + 1)]
    assert {i["data"]["generation"] for i in items} == {generation}
    connects = reader.connects()
    assert len(connects) == 2, connects
    resumed = connects[1]
    assert resumed["upstream"] == a.http_address
    assert resumed["status"] == 200
    offset = int(resumed["lastEventId"].rpartition(":")[2])
    assert resumed["lastEventId"] == f"{stream}:{offset}"
    assert resumed["offset"] == str(offset)
    assert 5 <= offset < tokens, "resumed while the producer still ran"
    assert resumed["t"] > killed_at
    a.expect(rf"complete: generation {generation} finished", WAIT)
    assert a.alive
    assert sum("generation" in line and "started" in line for line in a.output) == 1


# --- 2. the producer's instance dies ---------------------------------------------------------


def test_producer_lost_reaches_every_reader(cluster: Cluster) -> None:
    """The producer runs on A; Node's EventSource reads from B directly, rpckit's Python
    client (Resuming) through nginx. kill -9 A: both get every item appended (the same as a
    read of the whole log afterwards), then ``unavailable`` "producer lost" (final), within
    the lease (3 s) plus slack; never a clean end."""
    require_eventsource()
    a, b = cluster.members()
    stream, generation = start_stream(a, 400, interval_ms=50)
    with node_reader(f"{b.url}/api/complete?stream={stream}&offset=0") as node:
        python = PythonReader(cluster.http, {STREAM_HEADER: stream, OFFSET_HEADER: "0"})
        node.wait_items(5)
        python.wait_items(5)
        killed_at = time.time()
        cluster.kill(a)
        final = node.wait_final(LEASE_SECONDS + 30)
        python.join(LEASE_SECONDS + 30)
    logged, error = read_ndjson(f"{b.url}/api/complete?stream={stream}&offset=0")
    assert error == {"code": "unavailable", "message": error["message"]}
    assert "producer lost" in error["message"]
    count = len(logged)
    assert indices(logged) == list(range(count))
    assert {t["generation"] for t in logged} == {generation}

    assert final["type"] == "error", node.events
    assert final["data"]["code"] == "unavailable"
    assert "producer lost" in final["data"]["message"]
    assert [i["data"] for i in node.items()] == logged
    node_seconds = final["t"] - killed_at

    assert isinstance(python.error, RpcError), python.error
    assert python.error.code is Code.UNAVAILABLE
    assert "producer lost" in python.error.message
    assert any(key == FINAL_HEADER for key, _ in python.error.metadata)
    assert [t.index for t in python.tokens] == list(range(count))
    assert {t.generation for t in python.tokens} == {generation}
    assert python.ended_at is not None
    python_seconds = python.ended_at - killed_at
    print(f"producer lost: node {node_seconds:.3f} s, python {python_seconds:.3f} s after kill -9")
    # The lease is 3 s; a reader checks every quarter of it: noticed by about 3.75 s (slack
    # for two loaded cores).
    assert node_seconds < LEASE_SECONDS + 5, node_seconds
    assert python_seconds < LEASE_SECONDS + 8, python_seconds


# --- 3. a cancel from the other instance -----------------------------------------------------


def test_cancel_from_the_other_instance(cluster_factory: MakeCluster) -> None:
    """The producer runs on A; ``DELETE /rpckit/v1/streams/{id}`` is sent to B directly.
    Measured: (1) the producer's handler stopped (ClusterExample logs ``time.time()`` when
    its handler is cancelled) minus the DELETE response's arrival; (2) each reader's
    ``cancelled`` arrival minus the same. Both within 200 ms on loopback; the readers (Node
    EventSource via B, NDJSON through nginx) end ``cancelled``, and the end is final."""
    require_eventsource()
    with cluster_factory(target=TEST_SERVICE) as cluster:
        a, b = cluster.members()
        stream, generation = start_stream(a, 1000, interval_ms=50)
        ndjson: dict[str, Any] = {}

        def read() -> None:
            ndjson["result"] = read_ndjson(f"{cluster.http}/api/complete?stream={stream}")
            ndjson["t"] = time.time()

        thread = threading.Thread(target=read, daemon=True)
        with node_reader(f"{b.url}/api/complete?stream={stream}&offset=0") as node:
            thread.start()
            node.wait_items(5)
            sent = time.time()
            response = httpx.delete(f"{b.url}/rpckit/v1/streams/{stream}", timeout=WAIT)
            deleted = time.time()
            assert response.status_code < 300, response.text
            final = node.wait_final(WAIT)
            thread.join(WAIT)
            assert not thread.is_alive()
        stopped = float(a.expect(r"complete: handler stopped at (\d+\.\d+)", WAIT).group(1))
        assert final["type"] == "error", node.events
        assert final["data"]["code"] == "canceled"  # Connect's spelling on the wire
        items, error = ndjson["result"]
        assert error is not None
        assert error["code"] == "canceled"
        assert indices(items) == list(range(len(items)))
        assert {t["generation"] for t in items} == {generation}
        handler = stopped - deleted
        node_latency = final["t"] - deleted
        ndjson_latency = ndjson["t"] - deleted
        print(
            f"cancel: DELETE took {deleted - sent:.3f} s; handler stopped {stopped - sent:.3f} s "
            f"after it was sent; after its response: handler stopped "
            f"{handler:+.3f} s, node reader's cancelled {node_latency:+.3f} s, NDJSON "
            f"{ndjson_latency:+.3f} s"
        )
        assert handler < 0.2, handler
        assert node_latency < 0.2, node_latency
        # Resumed after the cancel, any instance: the same end.
        tail, again = read_ndjson(f"{cluster.http}/api/complete?stream={stream}&offset=0")
        assert again == error
        assert tail == items
        assert "finished" not in " ".join(a.output)


# --- 4. resume after the end, expired offsets ------------------------------------------------


def _grpc_read(
    stubs: ModuleType, address: str, metadata: list[tuple[str, str]], method: str = "Complete"
) -> tuple[list[Any], grpc.RpcError | None]:
    with grpc.insecure_channel(address) as channel:
        stub = stubs.StreamsServiceStub(channel)
        request = CompleteRequest() if method == "Complete" else JsonStreamRequest()
        call = getattr(stub, method)(request, metadata=metadata, timeout=WAIT)
        got: list[Any] = []
        try:
            got.extend(call)
        except grpc.RpcError as exc:
            return got, exc
        return got, None


def test_resume_after_the_end(cluster_factory: MakeCluster, grpc_stubs: ModuleType) -> None:
    """After a clean end, a resume gets the tail and the same end (SSE ``event: end``, NDJSON
    just ends, gRPC OK through nginx, Node EventSource ``end``); after an error end, the same
    error (final); from an offset older than retention: 410 with ``rpckit-stream-earliest``
    on plain HTTP, ``out_of_range`` with it as a trailer on gRPC, and a read from that
    earliest offset gets the rest."""
    require_eventsource()
    with cluster_factory(target=TEST_SERVICE) as cluster:
        # A clean end.
        first, error = read_ndjson(f"{cluster.http}/api/complete?tokens=5&interval_ms=10")
        assert error is None
        assert indices(first) == [0, 1, 2, 3, 4]
        started = read_sse(f"{cluster.http}/api/complete?tokens=5&interval_ms=10")
        assert [e[0] for e in started] == ["message"] * 5 + ["end"]
        stream = started[0][1].rpartition(":")[0]
        sse = read_sse(f"{cluster.http}/api/complete", {"last-event-id": f"{stream}:3"})
        assert [(e[0], e[1]) for e in sse] == [
            ("message", f"{stream}:4"),
            ("message", f"{stream}:5"),
            ("end", ""),
        ]
        assert [e[2] for e in sse[:2]] == [e[2] for e in started[3:5]]
        assert [
            (e[0]) for e in read_sse(f"{cluster.http}/api/complete?stream={stream}&offset=5")
        ] == ["end"]
        tail, error = read_ndjson(f"{cluster.http}/api/complete?stream={stream}&offset=3")
        assert error is None
        assert [json.loads(e[2]) for e in started[3:5]] == tail
        got, failure = _grpc_read(
            grpc_stubs, cluster.grpc, [(STREAM_HEADER, stream), (OFFSET_HEADER, "3")]
        )
        assert failure is None
        assert [t.index for t in got] == [3, 4]
        with node_reader(f"{cluster.http}/api/complete?stream={stream}&offset=3") as node:
            final = node.wait_final()
        assert final["type"] == "end"
        assert [i["id"] for i in node.items()] == [f"{stream}:4", f"{stream}:5"]

        # An error end.
        events = read_sse(f"{cluster.http}/api/complete?tokens=10001")
        assert [e[0] for e in events] == ["error"]
        ended = json.loads(events[0][2])
        assert ended["code"] == "invalid_argument"
        with httpx.Client(timeout=WAIT) as client:
            failed = client.get(
                f"{cluster.http}/api/complete?tokens=10001",
                headers={"accept": "application/x-ndjson"},
            )
        stream = failed.headers[STREAM_HEADER]
        for _ in range(2):  # both instances (round robin)
            again = read_sse(f"{cluster.http}/api/complete", {"last-event-id": f"{stream}:0"})
            assert [(e[0], json.loads(e[2])) for e in again] == [("error", ended)]
        got, failure = _grpc_read(
            grpc_stubs, cluster.grpc, [(STREAM_HEADER, stream), (OFFSET_HEADER, "0")]
        )
        assert got == []
        assert failure is not None
        assert failure.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert failure.details() == ended["message"]
        assert (FINAL_HEADER, "1") in tuple(failure.trailing_metadata() or ())

        # An expired offset: JsonStream keeps RETAINED of its DOGS.
        # The reader keeps up (a reader more than RETAINED behind would get out_of_range).
        dogs, error = read_ndjson(f"{cluster.http}/api/json_stream?interval_ms=50")
        assert error is None
        assert [d["name"] for d in dogs] == [f"Dog {n}" for n in range(DOGS)]
        with httpx.Client(timeout=WAIT) as client:
            stream = client.get(f"{cluster.http}/api/json_stream?interval_ms=0").headers[
                STREAM_HEADER
            ]
            for _ in range(2):  # both instances
                gone = client.get(f"{cluster.http}/api/json_stream?stream={stream}&offset=0")
                assert gone.status_code == 410, gone.text
                earliest = int(gone.headers[EARLIEST_HEADER])
                assert DOGS - RETAINED <= earliest < DOGS, earliest
        rest, error = read_ndjson(
            f"{cluster.http}/api/json_stream?stream={stream}&offset={earliest}"
        )
        assert error is None
        assert [d["name"] for d in rest] == [f"Dog {n}" for n in range(earliest, DOGS)]
        got, failure = _grpc_read(
            grpc_stubs, cluster.grpc, [(STREAM_HEADER, stream), (OFFSET_HEADER, "0")], "JsonStream"
        )
        assert got == []
        assert failure is not None
        assert failure.code() == grpc.StatusCode.OUT_OF_RANGE
        trailers = dict(failure.trailing_metadata() or ())
        assert trailers[EARLIEST_HEADER] == str(earliest)
        assert trailers[FINAL_HEADER] == "1"


# --- 5. redis restarted mid-stream -----------------------------------------------------------


def test_redis_restart_mid_stream(cluster: Cluster) -> None:
    """kill -9 redis-server mid-stream and start it again, empty, on the same port.

    Observed (and asserted): a reader following the stream on an instance ends with an
    in-band ``unavailable`` (NDJSON error line; SSE ``event: error``) -- never a clean end,
    never a truncation passed off as success -- after the items it had; a resume afterwards
    (any instance) is ``not_found``: the stream's keys are gone with the data; the producer
    on A stops: its append or renewal fails (``unavailable`` while Redis is down,
    ``LeaseLost`` once it is back, empty) and it logs that the stream could not be ended /
    lost its lease; the handler never reaches its end ("finished" is not logged). rpckit's
    ``Resuming`` client takes that ``unavailable`` (not marked final) for a transport error,
    resumes, and ends with ``not_found``."""
    require_eventsource()
    a, b = cluster.members()
    stream, generation = start_stream(a, 1000, interval_ms=50)
    ndjson: dict[str, Any] = {}

    def read() -> None:
        ndjson["result"] = read_ndjson(f"{b.url}/api/complete?stream={stream}")

    thread = threading.Thread(target=read, daemon=True)
    with node_reader(f"{b.url}/api/complete?stream={stream}&offset=0", seconds=60) as node:
        thread.start()
        python = PythonReader(b.url, {STREAM_HEADER: stream, OFFSET_HEADER: "0"})
        node.wait_items(5)
        python.wait_items(5)
        cluster.kill_redis()
        cluster.restart_redis()
        final = node.wait_final(WAIT)
        thread.join(WAIT)
        assert not thread.is_alive(), "the NDJSON reader hangs"
        python.join(WAIT)
    items, error = ndjson["result"]
    print(f"redis restart: NDJSON {len(items)} items, then {error}; node: {final}")
    assert error is not None, "a silent clean end"
    assert error["code"] == "unavailable", error
    assert indices(items) == list(range(len(items)))
    assert {t["generation"] for t in items} == {generation}
    assert final["type"] == "error", node.events
    assert final["data"]["code"] in ("unavailable", "not_found"), final
    assert indices([i["data"] for i in node.items()]) == list(range(len(node.items())))
    # Resuming takes the (not final) unavailable for a transport error and resumes: the
    # stream is gone, not_found (final).
    print(f"redis restart: Resuming: {len(python.tokens)} tokens, then {python.error!r}")
    assert isinstance(python.error, RpcError), python.error
    assert python.error.code is Code.NOT_FOUND, python.error
    assert [t.index for t in python.tokens] == list(range(len(python.tokens)))
    warning = a.expect(rf"stream {stream}.*(lost its lease|could not be ended)", WAIT)
    print(f"redis restart: producer: {warning.string}")
    for instance in (a, b):
        with httpx.Client(timeout=WAIT) as client:
            after = client.get(
                f"{instance.url}/api/complete?stream={stream}&offset={len(items)}",
                headers={"accept": "application/x-ndjson"},
            )
        print(f"redis restart: a resume on {instance.name}: {after.status_code} {after.text!r}")
        assert after.status_code == 404, after.text
        assert after.json()["code"] == "not_found"
    assert not any(re.search(rf"generation {generation} finished", line) for line in a.output)


# --- 6. rpckit's Python client resumes -------------------------------------------------------


async def test_python_client_resumes_after_its_instance_dies(cluster: Cluster) -> None:
    """The producer runs on A; ``Resuming(ConnectTransport(nginx))`` reads from B (X-Upstream
    of its response). kill -9 B mid-stream: the iteration goes on through nginx on A, every
    token once, in order, one generation, to the clean end."""
    a, b = cluster.members()
    tokens = 40
    stream, generation = await asyncio.to_thread(start_stream, a, tokens, 100)
    received: list[Token] = []
    upstreams: list[str] = []
    async with asyncio.timeout(120), ConnectTransport(cluster.http) as transport:
        client = StreamsServiceClient(Resuming(transport))
        for _ in range(10):  # until nginx puts the reader on B
            response = ResponseMetadata()
            call = client.complete(
                CompleteRequest(),
                metadata={STREAM_HEADER: stream, OFFSET_HEADER: "0"},
                response=response,
            )
            first = await anext(aiter(call))
            upstream = cluster.upstream(response.headers)
            if upstream.name == b.name:
                break
            await call.aclose()
        else:
            pytest.fail("nginx never routed the reader to B")
        received.append(first)
        upstreams.append(upstream.name)
        async for token in call:
            received.append(token)
            name = cluster.upstream(response.headers).name
            if name != upstreams[-1]:
                upstreams.append(name)
            if len(received) == 5:
                cluster.kill(b)
    assert [t.index for t in received] == list(range(tokens))
    assert {t.generation for t in received} == {generation}
    assert upstreams == ["b", "a"], upstreams
    assert a.alive
