"""Big files through the example's own routes, on uvicorn (``rpckit serve``) and granian:
a 2 GiB download and a 1 GiB upload to disk, each with bounded server memory."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, free_port, process_tree, rss, stop_process_tree

pytestmark = pytest.mark.process

DOWNLOAD_SIZE = 2 << 30
UPLOAD_SIZE = 1 << 30
RSS_LIMIT = 150 << 20
BLOCK = 1 << 20


@dataclass
class Served:
    kind: str
    url: str
    process: subprocess.Popen[bytes]
    files: Path

    def rss(self) -> int:
        """Resident memory of the server and its workers together."""
        return sum(rss(pid) for pid in process_tree(self.process.pid))


def _command(kind: str, port: int, files: Path) -> list[str]:
    if kind == "uvicorn":
        return [
            sys.executable, "-m", "rpckit", "serve", "examples.streams.server:create_service",
            "--http", f"127.0.0.1:{port}", "--files", str(files),
        ]  # fmt: skip
    return [
        sys.executable, "-m", "granian", "examples.streams.asgi:app", "--interface", "asgi",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--no-ws",
        "--log-level", "warning", "--working-dir", str(ROOT),
    ]  # fmt: skip


@pytest.fixture(scope="module", params=["uvicorn", "granian"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    kind: str = request.param
    files = tmp_path_factory.mktemp(f"big-{kind}")
    with open(files / "big.bin", "wb") as f:
        f.truncate(DOWNLOAD_SIZE)  # sparse: 2 GiB of zeros that take no disk space
    env = {**os.environ, "RPCKIT_FILES": str(files), "PYTHONPATH": str(ROOT)}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("logs") / f"{kind}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            _command(kind, port, files), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"{kind} exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{url}/api/files", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)  # between readiness polls only
        else:
            pytest.fail(f"{kind} did not start within 30 s")
        yield Served(kind, url, process, files)
    finally:
        stop_process_tree(process)


class PeakRss:
    """Samples a server's RSS from a thread while a transfer runs (bounded by ``stop``)."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.served.rss())

    def __enter__(self) -> PeakRss:
        self.peak = self.served.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, self.served.rss())


def _zeros_sha256(size: int) -> str:
    digest = hashlib.sha256()
    block = bytes(BLOCK)
    for _ in range(size // BLOCK):
        digest.update(block)
    return digest.hexdigest()


def test_2gib_download(served: Served) -> None:
    digest = hashlib.sha256()
    received = 0
    with (
        PeakRss(served) as memory,
        httpx.stream("GET", f"{served.url}/api/files/big.bin", timeout=120) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-length"] == str(DOWNLOAD_SIZE)
        assert response.headers["x-content-size"] == str(DOWNLOAD_SIZE)
        for chunk in response.iter_raw(BLOCK):
            digest.update(chunk)
            received += len(chunk)
    assert received == DOWNLOAD_SIZE
    assert digest.hexdigest() == _zeros_sha256(DOWNLOAD_SIZE)
    assert memory.peak < RSS_LIMIT, f"{served.kind} peaked at {memory.peak >> 20} MiB"


def _upload_blocks(digest: hashlib._Hash) -> Iterator[bytes]:
    seed = hashlib.sha256(b"upload").digest() * (BLOCK // 32)
    for i in range(UPLOAD_SIZE // BLOCK):
        block = i.to_bytes(8, "big") + seed[8:]  # every block differs
        digest.update(block)
        yield block


def test_1gib_upload_streams_to_disk(served: Served) -> None:
    sent = hashlib.sha256()
    with PeakRss(served) as memory:
        response = httpx.post(
            f"{served.url}/api/upload_as_file_stream",
            content=_upload_blocks(sent),
            headers={
                "content-type": "application/octet-stream",
                "content-disposition": 'attachment; filename="upload.bin"',
                "x-content-size": str(UPLOAD_SIZE),
            },
            timeout=300,
        )
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["size"] == str(UPLOAD_SIZE)  # uint64 travels as a string in JSON
    assert summary["sha256"] == sent.hexdigest()
    stored = served.files / summary["filename"]
    try:
        assert stored.stat().st_size == UPLOAD_SIZE
        assert memory.peak < RSS_LIMIT, f"{served.kind} peaked at {memory.peak >> 20} MiB"
    finally:
        stored.unlink(missing_ok=True)


def test_range_downloads_are_never_cut_short(served: Served) -> None:
    """Chunked (non-pathsend) sends keep one disconnect watcher: granian used to report a
    false disconnect to a second concurrent receive() and cut about one in eight short."""
    span = 4 << 20  # the false disconnect struck after the first 256 KiB chunk
    with httpx.Client(base_url=served.url, timeout=60) as http:
        for attempt in range(150):
            start = attempt * span
            received = 0
            with http.stream(
                "GET", "/api/files/big.bin", headers={"range": f"bytes={start}-{start + span - 1}"}
            ) as response:
                assert response.status_code == 206
                for chunk in response.iter_raw(BLOCK):
                    received += len(chunk)
            assert received == span, f"attempt {attempt}: {received} of {span} bytes"
