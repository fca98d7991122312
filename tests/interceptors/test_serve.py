"""The interceptors through ``python -m rpckit serve`` (a real process): the example's
``upload_auth`` via ``--interceptor``, checked with a grpcio stub and connect-node; the access
log on by default, silent at ``--log-level warning``; one-line errors for bad targets."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pytest

from examples.streams.v1.streams_pb2 import Dog, GetDogRequest, UploadSummary
from rpckit.v1.stream_pb2 import Bytes
from tests.browser.conftest import ExampleServer, start_example
from tests.http.connect.test_connect_interop import ES_PROTOS, protoc
from tests.support import NODE_MODULES, ROOT, node_available, require_tool

pytestmark = pytest.mark.process

UPLOAD = "/examples.streams.v1.StreamsService/UploadAsByteStream"
GET_DOG = "/examples.streams.v1.StreamsService/GetDog"
AUTH = ["--interceptor", "examples.streams.server:upload_auth"]
LOG_TIMEOUT = 10.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ExampleServer]:
    """The example with the upload token check, on free loopback ports."""
    served = start_example(tmp_path, extra=AUTH)
    try:
        yield served
    finally:
        served.stop()


def _upload(channel: grpc.Channel, token: str | None) -> UploadSummary | grpc.RpcError:
    call = channel.stream_unary(
        UPLOAD,
        request_serializer=Bytes.SerializeToString,
        response_deserializer=UploadSummary.FromString,
    )
    metadata = [("authorization", f"Bearer {token}")] if token is not None else []
    try:
        summary: UploadSummary = call(iter([Bytes(data=b"abc")]), metadata=metadata, timeout=10)
    except grpc.RpcError as exc:
        return exc
    return summary


def test_grpcio_stub_meets_upload_auth_and_the_access_log(server: ExampleServer) -> None:
    with grpc.insecure_channel(server.grpc) as channel:
        missing = _upload(channel, None)
        wrong = _upload(channel, "not-a-token")
        guest = _upload(channel, "guest-token")
        good = _upload(channel, "demo-token")
        get_dog = channel.unary_unary(
            GET_DOG,
            request_serializer=GetDogRequest.SerializeToString,
            response_deserializer=Dog.FromString,
        )
        dog = get_dog(GetDogRequest(index=1), timeout=10)  # not protected: no token needed
    assert isinstance(missing, grpc.RpcError)
    assert missing.code() is grpc.StatusCode.UNAUTHENTICATED
    assert missing.details() == "missing credentials: send authorization: Bearer <token>"
    assert isinstance(wrong, grpc.RpcError)
    assert (wrong.code(), wrong.details()) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid credentials",
    )
    assert isinstance(guest, grpc.RpcError)
    assert (guest.code(), guest.details()) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "guests may not upload",
    )
    assert isinstance(good, UploadSummary)
    assert good.size == 3
    assert dog.name == "Dog 1"
    # one access line per call, in order, with the code each ended with
    for code in ("UNAUTHENTICATED", "UNAUTHENTICATED", "PERMISSION_DENIED", "OK"):
        line = server.wait_for_log(rf"rpckit\.access: method={UPLOAD} ", LOG_TIMEOUT)
        assert f" code={code} " in line
        assert " transport=grpc dialect=grpc " in line
        assert re.search(r" peer=ipv[46]:\S+", line)
    line = server.wait_for_log(rf"rpckit\.access: method={GET_DOG} ", LOG_TIMEOUT)
    assert re.search(r" code=OK duration_ms=[\d.]+ messages_in=1 bytes_in=2 messages_out=1 ", line)


@pytest.fixture(scope="module")
def es_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """streams.proto as ES modules for connect-node (as in
    tests/http/connect/test_connect_interop.py)."""
    plugin = NODE_MODULES / ".bin" / "protoc-gen-es"
    require_tool(
        node_available() and plugin.exists() and (NODE_MODULES / "@connectrpc").is_dir(),
        "node, @connectrpc/connect-node and @bufbuild/protoc-gen-es are needed (npm ci)",
    )
    out = tmp_path_factory.mktemp("connect-es")
    protoc("es", plugin, out, "target=js,import_extension=js", ES_PROTOS)
    (out / "node_modules").symlink_to(NODE_MODULES, target_is_directory=True)
    (out / "package.json").write_text('{"type": "module"}\n')
    return out


def test_connect_node_meets_upload_auth(server: ExampleServer, es_code: Path) -> None:
    script = ROOT / "tests" / "node" / "auth_client.mjs"
    done = subprocess.run(
        ["node", str(script), server.url, str(es_code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {
        "missing": {
            "code": "Unauthenticated",
            "message": "missing credentials: send authorization: Bearer <token>",
        },
        "wrong": {"code": "Unauthenticated", "message": "invalid credentials"},
        "guest": {"code": "PermissionDenied", "message": "guests may not upload"},
        "demo": {"result": {"size": 3}},
        "getDog": {"result": {"name": "Dog 1"}},
    }
    line = server.wait_for_log(rf"rpckit\.access: method={UPLOAD} ", LOG_TIMEOUT)
    assert " transport=http dialect=connect code=UNAUTHENTICATED " in line


def _serve_once(
    tmp_path: Path,
    *flags: str,
    env: dict[str, str] | None = None,
    metadata: list[tuple[str, str]] | None = None,
) -> str:
    """Start the example with ``flags``, make one gRPC call, stop it: everything it printed."""
    command = [
        sys.executable, "-m", "rpckit", "serve", "examples.streams.server:create_service",
        "--grpc", "127.0.0.1:0", *flags, "--files", str(tmp_path),
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        printed = []
        address = None
        while address is None and (line := process.stdout.readline()):  # EOF if it dies
            printed.append(line)
            if match := re.search(r"gRPC listening on (\S+)", line):
                address = match.group(1)
        assert address is not None, "".join(printed)
        with grpc.insecure_channel(address) as channel:
            get_dog = channel.unary_unary(
                GET_DOG,
                request_serializer=GetDogRequest.SerializeToString,
                response_deserializer=Dog.FromString,
            )
            dog = get_dog(GetDogRequest(index=2), metadata=metadata or [], timeout=10)
            assert dog.name == "Dog 2"
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=20)  # everything up to the exit
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return "".join(printed) + rest


def test_access_log_is_on_by_default_and_quiet_at_warning(tmp_path: Path) -> None:
    assert f"rpckit.access: method={GET_DOG} " in _serve_once(tmp_path)
    assert "rpckit.access" not in _serve_once(tmp_path, "--log-level", "warning")
    assert "rpckit.access" not in _serve_once(tmp_path, "--no-access-log")


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("nocolon", "rpckit: --interceptor expects MODULE:ATTR, got 'nocolon'"),
        (
            "no_such_module_x:thing",
            "rpckit: --interceptor no module named 'no_such_module_x' "
            "(from no_such_module_x:thing)",
        ),
        (
            "examples.streams.server:nothing",
            "rpckit: --interceptor examples.streams.server has no attribute 'nothing'",
        ),
        ("examples.streams.server:DEMO_TOKEN", "gave str, not an rpckit.interceptors"),
    ],
)
def test_bad_interceptor_target_is_a_one_line_error(target: str, error: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rpckit", "serve", "examples.streams.server:create_service",
         "--grpc", "127.0.0.1:0", "--interceptor", target],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert error in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


class _Collector(http.server.BaseHTTPRequestHandler):
    """A fake OTLP/HTTP collector: keeps each export request body by path."""

    received: ClassVar[dict[str, list[bytes]]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.setdefault(self.path, []).append(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_otel_flag_exports_spans_and_metrics_over_otlp(tmp_path: Path) -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    received: dict[str, list[bytes]] = {}
    handler = type("Collector", (_Collector,), {"received": received})
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_address[1]}",
        "OTEL_SERVICE_NAME": "streams-example",
    }
    try:
        printed = _serve_once(
            tmp_path,
            "--otel",
            env=env,
            metadata=[("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01")],
        )
    finally:
        collector.shutdown()
        collector.server_close()
        thread.join(timeout=10)
    assert "Traceback" not in printed, printed
    spans = []
    for body in received.get("/v1/traces", []):
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}
            assert service["service.name"] == "streams-example"
            spans += [s for scope in resource.scope_spans for s in scope.spans]
    (span,) = spans
    assert span.name == GET_DOG[1:]
    assert span.trace_id.hex() == trace_id
    assert span.parent_span_id.hex() == "00f067aa0ba902b7"
    names = set()
    for body in received.get("/v1/metrics", []):
        metrics_request = ExportMetricsServiceRequest.FromString(body)
        for resource_metrics in metrics_request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                names |= {m.name for m in scope_metrics.metrics}
    assert "rpc.server.call.duration" in names
