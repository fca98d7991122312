"""Two ``rpckit serve`` instances of the example behind Debian's nginx, with the config in
examples/deploy: streams item by item, uploads unspooled, Range resumes, gRPC via grpc_pass,
and an SSE client that survives the death of its instance."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.serving.grpc_calls import get_dog
from tests.serving.nginx import nginx_path, run_nginx
from tests.serving.process import Served
from tests.support import require_tool

pytestmark = pytest.mark.process

TARGET = "examples.streams.server:create_service"


@dataclass
class Deployment:
    http: str
    grpc: str
    instances: dict[str, Served]  # by HTTP upstream address
    files: Path
    prefix: Path  # nginx's prefix directory (its temp files live there)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    nginx = nginx_path()
    require_tool(nginx is not None, "nginx is not installed (apt-get install nginx)")
    assert nginx is not None
    tmp = tmp_path_factory.mktemp("nginx")
    files = tmp / "files"
    files.mkdir()
    (files / "big.bin").write_bytes(hashlib.sha256(b"x").digest() * 64 * 1024)  # 2 MiB
    instances: dict[str, Served] = {}
    values: dict[str, str] = {}
    try:
        for n in (1, 2):
            served = Served(
                TARGET, "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--grace", "1",
                "--files", str(files),
            )  # fmt: skip
            ports = served.ports(["gRPC", "HTTP"])
            values[f"http_{n}"] = f"127.0.0.1:{ports['HTTP']}"
            values[f"grpc_{n}"] = f"127.0.0.1:{ports['gRPC']}"
            instances[values[f"http_{n}"]] = served
        tagged = ("proxy_pass http://rpckit_http;",)
        with run_nginx(nginx, tmp, values, tagged, 15) as (http_port, grpc_port):
            yield Deployment(
                f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", instances, files, tmp
            )
    finally:
        for served in instances.values():
            served.stop()


def _arrivals(response: httpx.Response, count: int) -> list[tuple[float, bytes]]:
    """The first ``count`` chunks as they arrive, with their arrival times."""
    chunks = []
    for chunk in response.iter_raw():
        chunks.append((time.monotonic(), chunk))
        if len(chunks) == count:
            break
    return chunks


@pytest.mark.parametrize(
    ("path", "accept", "marker"),
    [
        ("/api/test_stream?interval_ms=300", "text/plain", b"Hello, world!"),
        ("/api/json_stream?interval_ms=300", "application/x-ndjson", b'"name"'),
        ("/api/json_stream?interval_ms=300", "text/event-stream", b"data:"),
    ],
)
def test_streams_arrive_item_by_item(
    deployment: Deployment, path: str, accept: str, marker: bytes
) -> None:
    with (
        httpx.Client(base_url=deployment.http, timeout=30) as client,
        client.stream("GET", path, headers={"accept": accept}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(accept)
        chunks = _arrivals(response, 4)
    for _, chunk in chunks:
        assert chunk.count(marker) == 1, chunks  # one item per read: nothing held back
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(chunks)]
    assert min(gaps) > 0.15, gaps  # they came as produced, 300 ms apart


def test_upload_streams_through_unspooled(deployment: Deployment) -> None:
    """The instance writes the first half to disk while the client still holds the second."""
    half = b"u" * (4 * 1024 * 1024)
    observed: list[int] = []

    def body() -> Iterator[bytes]:
        yield half
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # wait for the instance to receive the first half
            # The example writes to a temporary ``.upload-*.part`` file until the upload is
            # complete, and only then gives it its name.
            sizes = [p.stat().st_size for p in deployment.files.glob(".upload-*.part")]
            if any(sizes):
                observed.append(max(sizes))
                break
            time.sleep(0.02)
        yield half

    response = httpx.post(
        f"{deployment.http}/api/upload_as_file_stream",
        content=body(),
        headers={
            "content-type": "application/octet-stream",
            "content-disposition": 'attachment; filename="streamed.bin"',
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    summary = response.json()
    assert int(summary["size"]) == 2 * len(half)
    assert summary["sha256"] == hashlib.sha256(half + half).hexdigest()
    assert observed, "nothing reached the instance before the upload was complete"
    assert not any((deployment.prefix / "client_body_temp").rglob("*"))  # nothing spooled


def test_range_download_resumes(deployment: Deployment) -> None:
    data = (deployment.files / "big.bin").read_bytes()
    url = f"{deployment.http}/api/files/big.bin"
    received = b""
    with httpx.Client(timeout=30) as client:
        with client.stream("GET", url) as response:  # cut short after ~512 KiB
            assert response.headers["accept-ranges"] == "bytes"
            for chunk in response.iter_raw():
                received += chunk
                if len(received) >= 512 * 1024:
                    break
        rest = client.get(url, headers={"range": f"bytes={len(received)}-"})
    assert rest.status_code == 206
    assert rest.headers["content-range"] == f"bytes {len(received)}-{len(data) - 1}/{len(data)}"
    assert received + rest.content == data


def test_grpc_through_grpc_pass(deployment: Deployment) -> None:
    for index in range(4):  # fresh connections: both instances answer
        assert get_dog(deployment.grpc, index).name == f"Dog {index}"


def _sse_events(response: httpx.Response) -> Iterator[tuple[str, str]]:
    event_id, data = "", ""
    for line in response.iter_lines():
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
        elif line == "" and data:
            yield event_id, data
            event_id, data = "", ""


def test_sse_resumes_on_the_other_instance(deployment: Deployment) -> None:
    """Kill the instance serving an EventSource-style stream; the client reconnects through
    nginx with Last-Event-ID and continues on the other instance, no gap, no duplicate."""
    ids: list[int] = []
    upstreams: list[str] = []
    url = f"{deployment.http}/api/test_stream?interval_ms=100"
    headers = {"accept": "text/event-stream"}
    with httpx.Client(timeout=30) as client:
        for attempt in range(3):  # the first connection, then reconnects
            if ids:
                headers["last-event-id"] = str(ids[-1])
            with (
                contextlib.suppress(httpx.HTTPError),
                client.stream("GET", url, headers=headers) as response,
            ):
                assert response.status_code == 200
                upstreams.append(response.headers["x-upstream"])
                for event_id, data in _sse_events(response):
                    ids.append(int(event_id))
                    assert data == f"Hello, world! {event_id}"
                    if attempt == 0 and len(ids) == 5:
                        victim = deployment.instances[upstreams[0]].process
                        victim.send_signal(signal.SIGKILL)
                        victim.wait(timeout=10)
                    if len(ids) >= 15:
                        break
            if len(ids) >= 15:
                break
    assert len(upstreams) >= 2, upstreams
    assert upstreams[-1] != upstreams[0], upstreams
    assert ids == list(range(len(ids))), ids  # no gap, no duplicate
    assert len(ids) >= 15
