"""``rpckit serve --workers N``: processes sharing both ports, supervised and drained as one."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import httpx
import pytest

from tests.serving.grpc_calls import get_dog
from tests.serving.process import Served
from tests.support import process_tree

pytestmark = pytest.mark.process

TARGET = "tests.serving.pid_service:create"
#: Connections tried before concluding the kernel does not spread them over the workers.
ATTEMPTS = 200


def _http_pids(port: int, wanted: set[int]) -> set[int]:
    """PIDs answering fresh HTTP connections, until all of ``wanted`` were seen (bounded)."""
    seen: set[int] = set()
    for _ in range(ATTEMPTS):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            response = client.get("/api/dogs/1")
        assert response.status_code == 200, response.text
        seen.add(int(response.json()["name"]))
        if wanted <= seen:
            break
    return seen


def _grpc_pids(port: int, wanted: set[int]) -> set[int]:
    seen: set[int] = set()
    for _ in range(ATTEMPTS):
        seen.add(int(get_dog(f"127.0.0.1:{port}").name))
        if wanted <= seen:
            break
    return seen


def _workers(served: Served) -> set[int]:
    match = served.expect(r"(\d+) workers ready, pids ([\d ]+)")
    pids = {int(p) for p in match.group(2).split()}
    assert len(pids) == int(match.group(1))
    return pids


def test_workers_share_both_ports(files_dir: Path) -> None:
    with Served(
        TARGET, "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--workers", "2",
        "--files", str(files_dir),
    ) as served:  # fmt: skip
        ports = served.ports(["gRPC", "HTTP"])
        workers = _workers(served)
        assert served.process.pid not in workers
        assert set(process_tree(served.process.pid)) >= workers
        assert _http_pids(ports["HTTP"], workers) == workers
        assert _grpc_pids(ports["gRPC"], workers) == workers


def test_dead_worker_is_logged_and_restarted(files_dir: Path) -> None:
    with Served(
        TARGET, "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--workers", "2",
        "--files", str(files_dir),
    ) as served:  # fmt: skip
        ports = served.ports(["gRPC", "HTTP"])
        victim, survivor = sorted(_workers(served))
        os.kill(victim, signal.SIGKILL)
        served.expect(rf"worker \d \(pid {victim}\) was killed by SIGKILL; restarting")
        replacement = int(served.expect(r"worker \d restarted, pid (\d+)").group(1))
        assert replacement not in (victim, survivor)
        assert _http_pids(ports["HTTP"], {replacement, survivor}) == {replacement, survivor}
        assert _grpc_pids(ports["gRPC"], {replacement, survivor}) == {replacement, survivor}


def test_sigterm_drains_every_worker(files_dir: Path) -> None:
    """In-flight streams on every worker finish; then all processes are gone, status 0."""
    served = Served(
        TARGET, "--http", "127.0.0.1:0", "--workers", "2", "--grace", "10",
        "--files", str(files_dir),
    )  # fmt: skip
    try:
        port = served.ports()["HTTP"]
        workers = _workers(served)
        # Slow NDJSON streams (10 dogs, 150 ms apart) on fresh connections, in flight when
        # the parent gets SIGTERM (the kernel picks the worker of each).
        started = threading.Barrier(len(workers) + 1, timeout=30)
        results: dict[int, list[str]] = {}
        lock = threading.Lock()

        def stream(slot: int) -> None:
            with (
                httpx.Client(timeout=30) as client,
                client.stream(
                    "GET", f"http://127.0.0.1:{port}/api/json_stream?interval_ms=150"
                ) as response,
            ):
                lines = response.iter_lines()
                first = next(lines)
                with lock:
                    results[slot] = [first]
                started.wait()
                with lock:
                    results[slot].extend(line for line in lines if line)

        threads = []
        for slot in range(len(workers)):
            thread = threading.Thread(target=stream, args=(slot,), daemon=True)
            thread.start()
            threads.append(thread)
        started.wait()
        served.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=30)
        assert all(len(lines) == 10 for lines in results.values()), results
        served.rest()
        assert served.process.returncode == 0
        alive = [pid for pid in workers if os.path.exists(f"/proc/{pid}")]
        assert not alive, f"workers left running: {alive}"
        drained = [line for line in served.lines if "draining" in line]
        assert len(drained) == len(workers), served.lines
    finally:
        served.stop()


def test_separate_grpc_serves_each_transport_from_its_own_process(files_dir: Path) -> None:
    """``--separate-grpc``: one worker is two processes, gRPC in one and HTTP in the other,
    both supervised (and drained) as one."""
    with Served(
        TARGET, "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--separate-grpc",
        "--files", str(files_dir),
    ) as served:  # fmt: skip
        ports = served.ports(["gRPC", "HTTP"])
        workers = _workers(served)
        assert len(workers) == 2
        assert served.process.pid not in workers
        http_pids = _http_pids(ports["HTTP"], set())
        grpc_pids = _grpc_pids(ports["gRPC"], set())
        assert len(http_pids) == len(grpc_pids) == 1
        assert http_pids | grpc_pids == workers  # one process each, and not the same one
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(30) == 0
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)
