"""OpenTelemetry: spans and metrics per call on gRPC, Connect and plain routes, read back
through the SDK's in-memory exporter and reader, and one trace id from an rpckit client
through an rpckit server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from examples.streams.server import StreamsExample
from examples.streams.v1.streams_pb2 import (
    Dog,
    GetDogRequest,
    JsonStreamRequest,
    ListFilesRequest,
    ListFilesResponse,
)
from examples.streams.v1.streams_rpckit import StreamsServiceClient
from rpckit import Code, Context, RpcError
from rpckit.client import Transport
from rpckit.grpc import GrpcTransport
from rpckit.http import ConnectTransport, GrpcWebTransport, WebSocketTransport
from rpckit.interceptors import intercept
from rpckit.interceptors.otel import OpenTelemetry, OpenTelemetryClient, peer_address
from tests.interceptors.serving import Served, serve_both

pytestmark = pytest.mark.loopback

GET_DOG = "examples.streams.v1.StreamsService/GetDog"
JSON_STREAM = "examples.streams.v1.StreamsService/JsonStream"
LIST_FILES = "examples.streams.v1.StreamsService/ListFiles"
#: gRPC-Web is gRPC (framed for HTTP/1.1); rpckit's WebSocket sub-protocol is its own system.
SYSTEMS = {
    "grpc": "grpc",
    "grpc-web": "grpc",
    "connect": "connectrpc",
    "plain": "http",
    "websocket": "rpckit_websocket",
}


class TracedExample(StreamsExample):
    """GetDog names the dog after the span current in the handler; ListFiles crashes."""

    async def get_dog(self, request: GetDogRequest, ctx: Context) -> Dog:
        dog = await super().get_dog(request, ctx)
        span = trace.get_current_span().get_span_context()
        dog.name = f"{span.trace_id:032x}/{span.span_id:016x}"
        return dog

    async def list_files(self, request: ListFilesRequest, ctx: Context) -> ListFilesResponse:
        raise RuntimeError("disk on fire")


class Telemetry:
    """An SDK tracer and meter provider recording into memory."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self, kind: SpanKind) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.kind is kind]

    def points(self, name: str) -> list[Any]:
        """The data points of metric ``name`` collected so far."""
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def unit(self, name: str) -> str | None:
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        return metric.unit
        return None


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    recorded = Telemetry()
    yield recorded
    recorded.tracer_provider.shutdown()
    recorded.meter_provider.shutdown()


@pytest.fixture
async def served(telemetry: Telemetry, tmp_path: Path) -> AsyncIterator[Served]:
    interceptor = OpenTelemetry(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        legacy_metrics=True,
    )
    async with serve_both(TracedExample(tmp_path), [interceptor]) as served:
        yield served


def _transport(dialect: str, served: Served) -> Transport:
    if dialect == "grpc":
        return GrpcTransport(served.grpc)
    if dialect == "grpc-web":
        return GrpcWebTransport(served.http)
    if dialect == "websocket":
        return WebSocketTransport(served.http)
    return ConnectTransport(served.http)


async def _get_dog(dialect: str, served: Served, index: int, headers: dict[str, str]) -> str:
    """GetDog over ``dialect``; the dog's name (the server span's ids)."""
    if dialect == "plain":
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{served.http}/api/dogs/{index}", headers=headers)
        if response.status_code != 200:
            raise RpcError(Code.from_connect_name(response.json()["code"]))
        name: str = response.json()["name"]
        return name
    transport = _transport(dialect, served)
    try:
        client = StreamsServiceClient(transport)
        dog = await client.get_dog(GetDogRequest(index=index), metadata=list(headers.items()))
        return dog.name
    finally:
        await transport.aclose()  # type: ignore[attr-defined]


@pytest.mark.parametrize("dialect", ["grpc", "grpc-web", "connect", "plain"])
async def test_unary_call_gets_a_server_span_and_a_duration(
    served: Served, telemetry: Telemetry, dialect: str
) -> None:
    name = await _get_dog(dialect, served, 3, {})
    (span,) = telemetry.finished(SpanKind.SERVER)
    assert span.name == GET_DOG
    assert name == f"{span.context.trace_id:032x}/{span.context.span_id:016x}"  # current
    attributes = dict(span.attributes or {})
    assert attributes["rpc.system.name"] == SYSTEMS[dialect]
    assert attributes["rpc.method"] == GET_DOG
    assert attributes["network.peer.address"] == "127.0.0.1"
    assert isinstance(attributes["network.peer.port"], int)
    assert "error.type" not in attributes
    assert attributes.get("rpc.response.status_code") == (None if dialect == "connect" else "OK")
    assert span.status.status_code is StatusCode.UNSET
    assert span.parent is None
    assert span.end_time is not None
    assert span.start_time is not None
    (point,) = telemetry.points("rpc.server.call.duration")
    assert telemetry.unit("rpc.server.call.duration") == "s"
    assert point.count == 1
    assert 0 < point.sum <= (span.end_time - span.start_time) / 1e9 + 0.001
    assert point.attributes["rpc.method"] == GET_DOG
    assert point.attributes["rpc.system.name"] == SYSTEMS[dialect]
    (requests,) = telemetry.points("rpc.server.requests_per_rpc")
    assert (requests.count, requests.sum) == (1, 1)
    (size,) = telemetry.points("rpc.server.response.size")
    assert size.sum > 0


@pytest.mark.parametrize("dialect", list(SYSTEMS))
async def test_rpc_system_name_follows_the_dialect(
    served: Served, telemetry: Telemetry, dialect: str
) -> None:
    """gRPC-Web is reported as gRPC and WebSocket as rpckit's own system, not as ``http``."""
    await _get_dog(dialect, served, 3, {})
    (span,) = telemetry.finished(SpanKind.SERVER)
    attributes = dict(span.attributes or {})
    assert attributes["rpc.system.name"] == SYSTEMS[dialect]
    assert attributes.get("rpc.response.status_code") == (None if dialect == "connect" else "OK")
    (point,) = telemetry.points("rpc.server.call.duration")
    assert point.attributes["rpc.system.name"] == SYSTEMS[dialect]


@pytest.mark.parametrize("dialect", ["grpc", "connect", "plain"])
async def test_streaming_call_span_ends_with_the_stream(
    served: Served, telemetry: Telemetry, dialect: str
) -> None:
    if dialect == "plain":
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{served.http}/api/json_stream?interval_ms=1")
        dogs = [json.loads(line)["name"] for line in response.text.splitlines()]
    else:
        transport = _transport(dialect, served)
        client = StreamsServiceClient(transport)
        dogs = [d.name async for d in client.json_stream(JsonStreamRequest(interval_ms=1))]
        await transport.aclose()  # type: ignore[attr-defined]
    assert dogs == [f"Dog {i}" for i in range(10)]
    (span,) = telemetry.finished(SpanKind.SERVER)
    assert span.name == JSON_STREAM
    assert span.status.status_code is StatusCode.UNSET
    (responses,) = telemetry.points("rpc.server.responses_per_rpc")
    assert (responses.count, responses.sum) == (1, 10)
    (duration,) = telemetry.points("rpc.server.call.duration")
    assert duration.attributes["rpc.method"] == JSON_STREAM


@pytest.mark.parametrize("dialect", ["grpc", "connect", "plain"])
async def test_failures_set_error_type_and_server_errors_set_status(
    served: Served, telemetry: Telemetry, dialect: str
) -> None:
    with pytest.raises(RpcError) as not_found:
        await _get_dog(dialect, served, 42, {})
    assert not_found.value.code is Code.NOT_FOUND
    if dialect == "plain":
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{served.http}/api/files")).status_code == 500
    else:
        transport = _transport(dialect, served)
        with pytest.raises(RpcError) as internal:
            await StreamsServiceClient(transport).list_files(ListFilesRequest())
        await transport.aclose()  # type: ignore[attr-defined]
        assert internal.value.code is Code.INTERNAL
    client_error, server_error = telemetry.finished(SpanKind.SERVER)
    assert client_error.name == GET_DOG
    assert client_error.attributes is not None
    assert client_error.attributes["error.type"] == "NOT_FOUND"
    # NOT_FOUND is the caller's mistake: not a server error (gRPC conventions)
    assert client_error.status.status_code is StatusCode.UNSET
    assert server_error.name == LIST_FILES
    assert server_error.attributes is not None
    assert server_error.attributes["error.type"] == "INTERNAL"
    assert server_error.status.status_code is StatusCode.ERROR
    assert server_error.status.description == "internal error"
    codes = {p.attributes["error.type"] for p in telemetry.points("rpc.server.call.duration")}
    assert codes == {"NOT_FOUND", "INTERNAL"}


@pytest.mark.parametrize("dialect", ["grpc", "connect", "plain"])
async def test_traceparent_in_the_request_parents_the_server_span(
    served: Served, telemetry: Telemetry, dialect: str
) -> None:
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    headers = {"traceparent": f"00-{trace_id}-{parent_id}-01"}
    await _get_dog(dialect, served, 1, headers)
    (span,) = telemetry.finished(SpanKind.SERVER)
    assert f"{span.context.trace_id:032x}" == trace_id
    assert span.parent is not None
    assert span.parent.is_remote
    assert f"{span.parent.span_id:016x}" == parent_id


@pytest.mark.parametrize("dialect", ["grpc", "connect"])
async def test_one_trace_from_rpckit_client_to_rpckit_server(
    served: Served, telemetry: Telemetry, dialect: str
) -> None:
    host, port = served.grpc.split(":") if dialect == "grpc" else served.http[7:].split(":")
    client_interceptor = OpenTelemetryClient(
        system=SYSTEMS[dialect],
        server_address=host,
        server_port=int(port),
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    transport = intercept(_transport(dialect, served), [client_interceptor])
    client = StreamsServiceClient(transport)
    tracer = telemetry.tracer_provider.get_tracer("test")
    try:
        with tracer.start_as_current_span("caller") as caller:
            dog = await client.get_dog(GetDogRequest(index=2))
            with pytest.raises(RpcError):
                await client.get_dog(GetDogRequest(index=99))
            dogs = [d async for d in client.json_stream(JsonStreamRequest(interval_ms=1))]
    finally:
        await transport.aclose()  # type: ignore[attr-defined]
    assert len(dogs) == 10
    trace_id = caller.get_span_context().trace_id
    clients = telemetry.finished(SpanKind.CLIENT)
    servers = telemetry.finished(SpanKind.SERVER)
    assert [s.name for s in clients] == [GET_DOG, GET_DOG, JSON_STREAM]
    assert len(servers) == 3
    assert {s.context.trace_id for s in clients + servers} == {trace_id}
    for client_span in clients:
        assert client_span.parent is not None
        assert client_span.parent.span_id == caller.get_span_context().span_id
    by_parent = {s.parent.span_id: s for s in servers if s.parent is not None}
    for client_span in clients:
        server_span = by_parent[client_span.context.span_id]  # each server span's parent
        assert server_span.name == client_span.name
    first_server = by_parent[clients[0].context.span_id]
    assert dog.name == f"{trace_id:032x}/{first_server.context.span_id:016x}"
    failed = clients[1]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None
    assert failed.attributes["error.type"] == "NOT_FOUND"
    assert failed.attributes["server.port"] == int(port)
    client_points = telemetry.points("rpc.client.call.duration")
    assert sum(p.count for p in client_points) == 3


def test_peer_address_reads_grpc_and_http_peers() -> None:
    assert peer_address("ipv4:127.0.0.1:5000") == ("127.0.0.1", 5000)
    assert peer_address("ipv6:[::1]:5000") == ("::1", 5000)
    assert peer_address("10.0.0.1:80") == ("10.0.0.1", 80)
    assert peer_address("example.com") == ("example.com", None)
    assert peer_address("unix:/tmp/sock") == ("unix:/tmp/sock", None)
    assert peer_address("::1") == ("::1", None)


async def test_unknown_methods_are_other_not_a_label_the_client_chooses(
    telemetry: Telemetry, tmp_path: Path
) -> None:
    """A refused call to a method-shaped path the bridge does not serve is recorded (it goes
    through the runner) under ``rpc.method = _OTHER``: clients cannot grow the metrics'
    label sets with made-up names. In-process (no socket)."""
    from rpckit.testing import bridge_for

    interceptor = OpenTelemetry(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    async with bridge_for([StreamsExample(tmp_path)], interceptors=[interceptor]) as bridge:
        for name in ("Nope1", "Nope2"):
            response = await bridge.http.post(
                f"/made.up.Service/{name}", json={}, headers={"content-type": "application/json"}
            )
            assert response.status_code == 404
    (point,) = telemetry.points("rpc.server.call.duration")
    assert point.count == 2
    assert point.attributes["rpc.method"] == "_OTHER"
