"""``rpckit serve --server uvicorn|granian``: TCP_NODELAY on every server (keep-alive round trips
far below the delayed-ACK time), uvloop in use, files and ranges on both."""

from __future__ import annotations

import http.client
import statistics
import time
from pathlib import Path

import httpx
import pytest

from tests.serving.process import Served

pytestmark = pytest.mark.process

TARGET = "examples.streams.server:create_service"
CALLS = 60


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_keep_alive_round_trips_are_fast(files_dir: Path, server: str, workers: str) -> None:
    with Served(
        TARGET, "--http", "127.0.0.1:0", "--server", server, "--workers", workers,
        "--files", str(files_dir), "--log-level", "debug",
    ) as served:  # fmt: skip
        port = served.ports()["HTTP"]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        times = []
        for _ in range(CALLS):  # one connection, reused: keep-alive
            start = time.perf_counter()
            connection.request("GET", "/api/dogs/3")
            response = connection.getresponse()
            body = response.read()
            times.append(time.perf_counter() - start)
            assert response.status == 200, body
            assert b"Dog 3" in body
        connection.close()
        # A delayed ACK costs ~40 ms per call; without it a call takes well under 5 ms here.
        assert statistics.median(times) < 0.015, f"p50 {statistics.median(times) * 1e3:.1f} ms"
        assert any("event loop uvloop" in line for line in served.lines), served.lines


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_files_and_ranges(files_dir: Path, server: str) -> None:
    data = (files_dir / "data.bin").read_bytes()
    with Served(
        TARGET, "--http", "127.0.0.1:0", "--server", server, "--files", str(files_dir),
    ) as served:  # fmt: skip
        port = served.ports()["HTTP"]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            whole = client.get("/api/files/data.bin")
            assert whole.content == data
            part = client.get("/api/files/data.bin", headers={"range": "bytes=1000-"})
            assert part.status_code == 206
            assert part.content == data[1000:]
