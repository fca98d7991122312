"""HTTP liveness and readiness through ``rpckit serve``: they follow the gRPC health service,
and readiness turns false as soon as a drain starts while in-flight calls finish."""

from __future__ import annotations

import signal
import threading

import httpx
import pytest

from tests.serving.grpc_calls import SERVICE, health
from tests.serving.process import Served

pytestmark = pytest.mark.process

TARGET = "examples.streams.server:create_service"


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_probes_answer_and_follow_grpc_health(server: str) -> None:
    with Served(
        TARGET, "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--server", server,
    ) as served:  # fmt: skip
        ports = served.ports(["gRPC", "HTTP"])
        with httpx.Client(base_url=f"http://127.0.0.1:{ports['HTTP']}", timeout=10) as client:
            live = client.get("/healthz")
            assert (live.status_code, live.json()) == (200, {"status": "alive"})
            assert live.headers["cache-control"] == "no-store"
            ready = client.get("/readyz")
            assert (ready.status_code, ready.json()) == (200, {"status": "SERVING"})
            assert client.get("/readyz", params={"service": SERVICE}).status_code == 200
            unknown = client.get("/readyz", params={"service": "no.Such"})
            assert unknown.status_code == 404
            assert client.head("/readyz").status_code == 200
            assert client.post("/healthz").status_code == 405
        assert health(f"127.0.0.1:{ports['gRPC']}") == "SERVING"


def test_paths_are_configurable() -> None:
    with Served(
        TARGET, "--http", "127.0.0.1:0", "--liveness-path", "/live",
        "--readiness-path", "/ready",
    ) as served:  # fmt: skip
        port = served.ports()["HTTP"]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.get("/live").status_code == 200
            assert client.get("/ready").status_code == 200
            assert client.get("/healthz").status_code == 404  # now an ordinary path


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_readiness_drops_when_drain_starts(server: str) -> None:
    served = Served(
        TARGET, "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--server", server,
        "--drain-delay", "30", "--grace", "10",
    )  # fmt: skip
    try:
        ports = served.ports(["gRPC", "HTTP"])
        base = f"http://127.0.0.1:{ports['HTTP']}"
        first = threading.Event()
        lines: list[str] = []

        def stream() -> None:  # 10 dogs, 200 ms apart: in flight during the signal
            with (
                httpx.Client(timeout=30) as client,
                client.stream("GET", f"{base}/api/json_stream?interval_ms=200") as response,
            ):
                for line in response.iter_lines():
                    lines.append(line)
                    first.set()

        thread = threading.Thread(target=stream, daemon=True)
        thread.start()
        assert first.wait(timeout=10)
        served.process.send_signal(signal.SIGTERM)
        served.expect("draining")
        with httpx.Client(base_url=base, timeout=10) as client:
            ready = client.get("/readyz")
            assert (ready.status_code, ready.json()) == (503, {"status": "DRAINING"})
            assert client.get("/healthz").status_code == 200  # alive while draining
        assert health(f"127.0.0.1:{ports['gRPC']}") == "NOT_SERVING"
        thread.join(timeout=30)
        assert len([line for line in lines if line]) == 10, lines  # the call finished
        # A second signal ends the drain delay: the process exits long before 30 s.
        served.process.send_signal(signal.SIGTERM)
        served.rest(timeout=20)  # raises unless the process exits within 20 s
        assert served.process.returncode == 0
    finally:
        served.stop()
