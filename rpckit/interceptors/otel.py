"""OpenTelemetry tracing and metrics per the semantic conventions for RPC (``rpckit[otel]``).

``OpenTelemetry()`` (server) gives every call a SERVER span named ``pkg.Service/Method``,
child of the trace context in the request's ``traceparent``/``tracestate`` (HTTP headers
and gRPC metadata alike, read with the global propagator); the span is current while the
handler runs, so spans the handler starts are its children. ``OpenTelemetryClient()``
(client) gives every outgoing call a CLIENT span and sends its context in the metadata.

Attributes follow the current (v1.38+) RPC conventions: ``rpc.system.name`` (``grpc`` for
gRPC and gRPC-Web, ``connectrpc``, ``http`` for plain routes, ``rpckit_websocket`` for
WebSocket: see ``SYSTEM_NAMES``), ``rpc.method`` (``pkg.Service/Method``),
``rpc.response.status_code``, ``error.type`` on failure, ``network.peer.address``/``port``
(server) and ``server.address``/``server.port`` (client, as configured). Metrics:
``rpc.server.call.duration`` and ``rpc.client.call.duration`` (histograms, seconds).
``legacy_metrics=True`` adds the pre-1.38 instruments (``rpc.server.duration`` in ms,
``rpc.server.request.size``, ``response.size``, ``requests_per_rpc``,
``responses_per_rpc``); rpckit records the sizes once per call, as the bytes of all
messages on the wire.

``configure_otlp()`` wires OTLP exporters from the standard ``OTEL_*`` environment
variables: it is what ``rpckit serve --otel`` calls in each worker.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.propagators.textmap import Getter, Setter, TextMapPropagator
from opentelemetry.trace import SpanKind, Status, StatusCode

from rpckit.context import Dialect
from rpckit.errors import Code
from rpckit.interceptors import ClientCall, ClientInterceptor, ClientOutcome, Interceptor, Outcome
from rpckit.metadata import Metadata

if TYPE_CHECKING:
    from rpckit.context import Context
    from rpckit.service import MethodSpec

__all__ = [
    "SYSTEM_NAMES",
    "OpenTelemetry",
    "OpenTelemetryClient",
    "configure_otlp",
    "otlp_exporters",
    "peer_address",
    "system_name",
]

INSTRUMENTATION = "rpckit"
#: Bucket boundaries (seconds) the conventions recommend for call durations.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
#: Server codes that mark the span as an error (the gRPC conventions); a client marks all.
SERVER_ERRORS = frozenset(
    {
        Code.UNKNOWN,
        Code.DEADLINE_EXCEEDED,
        Code.UNIMPLEMENTED,
        Code.INTERNAL,
        Code.UNAVAILABLE,
        Code.DATA_LOSS,
    }
)
_SPAN = object()  # ctx.state key


class _MetadataGetter(Getter[Metadata]):
    def get(self, carrier: Metadata, key: str) -> list[str] | None:
        values = carrier.get_all(key)
        return values or None

    def keys(self, carrier: Metadata) -> list[str]:
        return [key for key, _ in carrier.items()]


class _MetadataSetter(Setter[Metadata]):
    def set(self, carrier: Metadata, key: str, value: str) -> None:
        carrier.set(key, value)


GETTER = _MetadataGetter()
SETTER = _MetadataSetter()


def peer_address(peer: str) -> tuple[str, int | None]:
    """``(address, port)`` of a peer as transports give it: ``ipv4:1.2.3.4:5``,
    ``ipv6:[::1]:5`` (grpcio) or ``1.2.3.4:5`` (HTTP); a port-less peer keeps it all."""
    for prefix in ("ipv4:", "ipv6:"):
        if peer.startswith(prefix):
            peer = peer[len(prefix) :]
    host, colon, port = peer.rpartition(":")
    if not colon or not port.isdigit() or (":" in host and not host.endswith("]")):
        return peer, None
    return host.strip("[]"), int(port)


#: ``rpc.system.name`` per dialect: the RPC system the client spoke. gRPC-Web is gRPC (the
#: same methods, codes and ``grpc-status`` trailers, framed for HTTP/1.1; gRPC-Web clients
#: are gRPC clients), so it is ``grpc``. The conventions' other well-known values (``dubbo``,
#: ``jsonrpc``) do not apply; the two dialects that are not a listed RPC system get their
#: own value: ``http`` for plain routes (HTTP with rpckit's routing, no RPC protocol on the
#: wire) and ``rpckit_websocket`` for rpckit's WebSocket sub-protocol.
SYSTEM_NAMES: dict[Dialect, str] = {
    Dialect.GRPC: "grpc",
    Dialect.GRPC_WEB: "grpc",
    Dialect.CONNECT: "connectrpc",
    Dialect.PLAIN: "http",
    Dialect.WEBSOCKET: "rpckit_websocket",
}


def system_name(ctx: Context) -> str:
    """``rpc.system.name`` for a server call: the protocol the client spoke."""
    return SYSTEM_NAMES[ctx.dialect]


def status_code(system: str, code: Code) -> str | None:
    """``rpc.response.status_code``: gRPC names (``NOT_FOUND``), Connect codes on errors."""
    if system == "connectrpc":
        return None if code is Code.OK else code.connect_name
    return code.name


def _method_name(method: MethodSpec[Any, Any]) -> str:
    """``pkg.Service/Method``; ``_OTHER`` for a method the server does not serve (the
    bridge's stand-in for an unknown method-shaped path has no handler), as the semantic
    conventions ask: a name the client chose must not become a metric label."""
    if not method.handler:
        return "_OTHER"
    return f"{method.service}/{method.name}"


class _Instruments:
    """The metric instruments of one side (``server`` or ``client``)."""

    def __init__(self, meter: metrics.Meter, side: str, legacy: bool) -> None:
        self.duration = meter.create_histogram(
            f"rpc.{side}.call.duration",
            unit="s",
            description=f"Duration of {'incoming' if side == 'server' else 'outgoing'} RPCs.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.legacy = legacy
        if legacy:
            self.duration_ms = meter.create_histogram(f"rpc.{side}.duration", unit="ms")
            self.request_size = meter.create_histogram(f"rpc.{side}.request.size", unit="By")
            self.response_size = meter.create_histogram(f"rpc.{side}.response.size", unit="By")
            self.requests = meter.create_histogram(f"rpc.{side}.requests_per_rpc", unit="{count}")
            self.responses = meter.create_histogram(f"rpc.{side}.responses_per_rpc", unit="{count}")


class OpenTelemetry(Interceptor):
    """Server spans and metrics; put it first so that its span covers the other interceptors.

    Providers and propagator default to the global ones (set by the SDK or ``configure_otlp``).
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        propagator: TextMapPropagator | None = None,
        legacy_metrics: bool = False,
    ) -> None:
        self.tracer = trace.get_tracer(INSTRUMENTATION, tracer_provider=tracer_provider)
        meter = metrics.get_meter(INSTRUMENTATION, meter_provider=meter_provider)
        self.instruments = _Instruments(meter, "server", legacy_metrics)
        self.propagator = propagator

    async def on_start(self, ctx: Context) -> None:
        propagator = self.propagator or propagate.get_global_textmap()
        parent = propagator.extract(ctx.request_headers, getter=GETTER)
        system = system_name(ctx)
        attributes: dict[str, str | int] = {
            "rpc.system.name": system,
            "rpc.method": _method_name(ctx.method),
        }
        if ctx.peer:
            address, peer_port = peer_address(ctx.peer)
            attributes["network.peer.address"] = address
            if peer_port is not None:
                attributes["network.peer.port"] = peer_port
        span = self.tracer.start_span(
            _method_name(ctx.method),
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=_epoch_ns(ctx.stats.started),
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        ctx.state[_SPAN] = (span, token, attributes)

    def on_end(self, ctx: Context, outcome: Outcome) -> None:
        started = ctx.state.pop(_SPAN, None)
        if started is None:  # an earlier interceptor rejected the call before on_start
            return
        span, token, attributes = started
        try:
            system = str(attributes["rpc.system.name"])
            code = status_code(system, outcome.code)
            measured: dict[str, str | int] = {
                key: attributes[key] for key in ("rpc.system.name", "rpc.method")
            }
            if code is not None:
                measured["rpc.response.status_code"] = code
                span.set_attribute("rpc.response.status_code", code)
            if outcome.code is not Code.OK:
                measured["error.type"] = outcome.code.name
                span.set_attribute("error.type", outcome.code.name)
            if outcome.code in SERVER_ERRORS:
                span.set_status(Status(StatusCode.ERROR, outcome.message or None))
            _record(self.instruments, outcome.duration, measured, outcome)
            span.end()
        finally:
            otel_context.detach(token)


class OpenTelemetryClient(ClientInterceptor):
    """Client spans and metrics, and the span's context sent as ``traceparent``.

    ``system`` is the protocol the transport speaks (``grpc`` for ``GrpcTransport`` and
    ``GrpcWebTransport``, ``connectrpc`` for ``ConnectTransport``, ``rpckit_websocket`` for
    ``WebSocketTransport``: ``SYSTEM_NAMES``); ``server_address``/``server_port`` say where.
    """

    def __init__(
        self,
        *,
        system: str = "grpc",
        server_address: str | None = None,
        server_port: int | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        propagator: TextMapPropagator | None = None,
        legacy_metrics: bool = False,
    ) -> None:
        self.tracer = trace.get_tracer(INSTRUMENTATION, tracer_provider=tracer_provider)
        meter = metrics.get_meter(INSTRUMENTATION, meter_provider=meter_provider)
        self.instruments = _Instruments(meter, "client", legacy_metrics)
        self.propagator = propagator
        self.attributes: dict[str, str | int] = {"rpc.system.name": system}
        if server_address is not None:
            self.attributes["server.address"] = server_address
        if server_port is not None:
            self.attributes["server.port"] = server_port

    async def on_start(self, call: ClientCall) -> None:
        attributes = {**self.attributes, "rpc.method": _method_name(call.method)}
        span = self.tracer.start_span(
            _method_name(call.method), kind=SpanKind.CLIENT, attributes=attributes
        )
        propagator = self.propagator or propagate.get_global_textmap()
        propagator.inject(call.metadata, context=trace.set_span_in_context(span), setter=SETTER)
        call.state[_SPAN] = (span, attributes)

    def on_end(self, call: ClientCall, outcome: ClientOutcome) -> None:
        started = call.state.pop(_SPAN, None)
        if started is None:
            return
        span, attributes = started
        system = str(attributes["rpc.system.name"])
        code = status_code(system, outcome.code)
        measured = dict(attributes)
        if code is not None:
            measured["rpc.response.status_code"] = code
            span.set_attribute("rpc.response.status_code", code)
        if outcome.code is not Code.OK:
            measured["error.type"] = outcome.code.name
            span.set_attribute("error.type", outcome.code.name)
            message = outcome.error.message if outcome.error is not None else None
            span.set_status(Status(StatusCode.ERROR, message or None))
        _record(self.instruments, outcome.duration, measured, None)
        span.end()


def _record(
    instruments: _Instruments,
    duration: float,
    attributes: dict[str, str | int],
    outcome: Outcome | None,
) -> None:
    instruments.duration.record(duration, attributes)
    if instruments.legacy:
        instruments.duration_ms.record(duration * 1000, attributes)
        if outcome is not None:
            instruments.request_size.record(outcome.bytes_in, attributes)
            instruments.response_size.record(outcome.bytes_out, attributes)
            instruments.requests.record(outcome.messages_in, attributes)
            instruments.responses.record(outcome.messages_out, attributes)


def _epoch_ns(monotonic: float) -> int:
    """A ``time.monotonic()`` instant as the epoch nanoseconds spans are stamped with."""
    return time.time_ns() - int((time.monotonic() - monotonic) * 1e9)


def configure_otlp(service_name: str | None = None) -> Callable[[], None]:
    """Install global tracer and meter providers exporting over OTLP; returns a shutdown
    function that flushes them. Everything else comes from the ``OTEL_*`` variables
    (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_PROTOCOL`` = ``http/protobuf``
    or ``grpc``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``...)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    span_exporter, metric_exporter = otlp_exporters()
    attributes = {SERVICE_NAME: service_name} if service_name else {}
    resource = Resource.create(attributes)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(metric_exporter)]
    )
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)

    def shutdown() -> None:
        tracer_provider.shutdown()
        meter_provider.shutdown()

    return shutdown


def otlp_exporters() -> tuple[Any, Any]:
    """The OTLP span and metric exporters for ``OTEL_EXPORTER_OTLP_PROTOCOL``."""
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    kinds = {"grpc": "grpc", "http/protobuf": "http"}
    kind = kinds.get(protocol)
    if kind is None:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use one of {sorted(kinds)}")
    base = f"opentelemetry.exporter.otlp.proto.{kind}"
    try:
        spans = importlib.import_module(f"{base}.trace_exporter")
        measurements = importlib.import_module(f"{base}.metric_exporter")
    except ImportError:
        package = f"opentelemetry-exporter-otlp-proto-{kind}"
        raise ValueError(f"OTLP over {protocol} needs `pip install {package}`") from None
    return spans.OTLPSpanExporter(), measurements.OTLPMetricExporter()
