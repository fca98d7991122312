"""send_file on real servers: uvicorn (chunked reads) and granian (ASGI pathsend).

Each server runs the small Starlette app below in a subprocess on a free loopback port, so
the tests can also watch the server's memory (VmRSS) and file reads (/proc/<pid>/io) while
a 2 GiB sparse file goes through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from rpckit.files import parse_content_disposition
from rpckit.http.asgi import Receive, Scope, Send
from rpckit.http.rest.filesend import PATHSEND, send_file
from rpckit.http.rest.ranges import etag, http_date
from rpckit.streams import FileStream
from tests.support import bytes_read, free_port, process_tree, rss, stop_process_tree

pytestmark = pytest.mark.process  # its servers run as processes

ROOT = Path(__file__).resolve().parents[3]
DIR_ENV = "RPCKIT_FILESEND_DIR"
BIG_SIZE = 2 << 30
RSS_LIMIT = 150 << 20
NON_ASCII_NAME = "résumé «final» 2024.txt"

# ---------------------------------------------------------------------------------------
# The app the servers run (imported by the server subprocess through ``app_from_env``).

#: What the last file response did: whether pathsend was offered, and the messages sent.
_trace: dict[str, Any] = {"offered": None, "messages": []}
#: send_file calls still running (the disconnect test waits for this to drop to zero).
_active = 0


class _FileEndpoint:
    """GET/HEAD /files/{name}: the named file of the served directory, via send_file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        global _active
        request = Request(scope)
        stream = FileStream.from_path(self.directory / request.path_params["name"])
        offered = PATHSEND in (scope.get("extensions") or {})
        messages: list[str] = []
        _trace.update(offered=offered, messages=messages)

        async def traced(message: Any) -> None:
            messages.append(message["type"])
            await send(message)

        _active += 1
        try:
            await send_file(
                scope,
                receive,
                traced,
                stream,
                request_headers=request.headers,
                extra_headers=[(b"x-pathsend-offered", str(offered).lower().encode())],
                method=request.method,
            )
        finally:
            _active -= 1


class _GeneratedEndpoint:
    """GET /generated: a FileStream made from chunks (no path): no ranges, no validators."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        known = request.query_params.get("size") == "known"

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(10):
                yield bytes([i]) * 1000

        stream = FileStream(
            chunks(), filename="gen.bin", size=10_000 if known else None, content_type="x/y"
        )
        await send_file(scope, receive, send, stream, request_headers=request.headers)


async def _ready_endpoint(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ready")


async def _state_endpoint(request: Request) -> JSONResponse:
    return JSONResponse({**_trace, "active": _active})


def create_app(directory: Path) -> Starlette:
    """The test app: files from ``directory``, a generated stream, and introspection."""
    return Starlette(
        routes=[
            Route("/ready", _ready_endpoint),
            Route("/state", _state_endpoint),
            Route("/files/{name}", _FileEndpoint(directory), methods=["GET", "HEAD"]),
            Route("/generated", _GeneratedEndpoint()),
        ]
    )


def app_from_env() -> Starlette:
    """Factory the server subprocess calls: serves the directory named by $RPCKIT_FILESEND_DIR."""
    return create_app(Path(os.environ[DIR_ENV]))


# ---------------------------------------------------------------------------------------
# Servers in subprocesses.

SERVERS = ["uvicorn", "granian"]


def _command(kind: str, port: int) -> list[str]:
    target = "tests.http.rest.test_filesend:app_from_env"
    if kind == "uvicorn":
        return [
            sys.executable, "-m", "uvicorn", target, "--factory",
            "--host", "127.0.0.1", "--port", str(port),
            "--lifespan", "off", "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
    return [
        sys.executable, "-m", "granian", target, "--factory", "--interface", "asgi",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--no-ws", "--log-level", "warning", "--working-dir", str(ROOT),
    ]  # fmt: skip


@dataclass
class Server:
    kind: str
    url: str
    process: subprocess.Popen[bytes]
    directory: Path

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def rss(self) -> tuple[int, int]:
        """(total RSS of the server's processes, the largest single process's RSS)."""
        sizes = [rss(pid) for pid in self.pids()]
        return sum(sizes), max(sizes)

    def bytes_read(self) -> int:
        return sum(bytes_read(pid) for pid in self.pids())


def _wait_ready(process: subprocess.Popen[bytes], url: str, deadline: float) -> bool:
    """Poll ``/ready`` until it answers (True) or the process exits (False)."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # between polls only; readiness is what ends the loop
    raise TimeoutError(f"server at {url} did not become ready")


@pytest.fixture(scope="module", params=SERVERS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server process per kind for this module, serving a fresh directory."""
    kind: str = request.param
    directory = tmp_path_factory.mktemp(f"files-{kind}")
    log_path = directory.parent / f"{kind}.log"
    env = {**os.environ, DIR_ENV: str(directory), "PYTHONPATH": str(ROOT)}
    for _attempt in range(3):  # another process may grab the free port before the server
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                _command(kind, port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            if _wait_ready(process, url, time.monotonic() + 30):
                yield Server(kind, url, process, directory)
                return
        finally:
            stop_process_tree(process)
    pytest.fail(f"{kind} did not start: {log_path.read_text(errors='replace')[-2000:]}")


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture
def data_file(server: Server) -> Path:
    """A 1000-byte file with distinct bytes at every offset mod 251."""
    path = server.directory / "data.bin"
    path.write_bytes(bytes(i % 251 for i in range(1000)))
    return path


# ---------------------------------------------------------------------------------------
# Responses.


def _state(client: httpx.Client) -> dict[str, Any]:
    state: dict[str, Any] = client.get("/state").json()
    return state


def test_full_download(server: Server, client: httpx.Client, data_file: Path) -> None:
    stat = data_file.stat()
    response = client.get("/files/data.bin")
    assert response.status_code == 200
    assert response.content == data_file.read_bytes()
    h = response.headers
    assert h["content-length"] == "1000"
    assert h["x-content-size"] == "1000"
    assert h["content-type"] == "application/octet-stream"
    assert h["content-disposition"] == 'attachment; filename="data.bin"'
    assert h["accept-ranges"] == "bytes"
    assert h["etag"] == etag(1000, stat.st_mtime)
    assert h["last-modified"] == http_date(stat.st_mtime)
    assert len(h.get_list("content-length")) == 1
    offered = server.kind == "granian"
    assert h["x-pathsend-offered"] == str(offered).lower()
    state = _state(client)
    assert state["offered"] is offered
    if offered:  # granian sent the file itself, from its path
        assert state["messages"] == ["http.response.start", PATHSEND]
    else:
        assert state["messages"][0] == "http.response.start"
        assert set(state["messages"][1:]) == {"http.response.body"}


def test_chunked_reads_are_bounded(server: Server, client: httpx.Client) -> None:
    """Without pathsend the file goes out in 512 KiB reads, each its own body message."""
    path = server.directory / "chunks.bin"
    content = os.urandom(1200 * 1024)
    path.write_bytes(content)
    response = client.get("/files/chunks.bin", headers={"range": "bytes=0-"})
    assert response.status_code == 206
    assert response.content == content
    assert _state(client)["messages"] == ["http.response.start"] + ["http.response.body"] * 3


def test_non_ascii_filename(server: Server, client: httpx.Client) -> None:
    (server.directory / NON_ASCII_NAME).write_text("bonjour\n")
    response = client.get(f"/files/{quote(NON_ASCII_NAME)}")
    assert response.status_code == 200
    assert response.text == "bonjour\n"
    assert response.headers["content-type"].startswith("text/plain")
    disposition = response.headers["content-disposition"]
    assert disposition == (
        'attachment; filename="r_sum_ _final_ 2024.txt"; '
        f"filename*=UTF-8''{quote(NON_ASCII_NAME, safe='')}"
    )
    assert parse_content_disposition(disposition) == NON_ASCII_NAME


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=10-19", 10, 19), ("bytes=-5", 995, 999), ("bytes=990-5000", 990, 999)],
)
def test_range(client: httpx.Client, data_file: Path, header: str, start: int, end: int) -> None:
    response = client.get("/files/data.bin", headers={"range": header})
    assert response.status_code == 206
    assert response.content == data_file.read_bytes()[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/1000"
    assert response.headers["content-length"] == str(end - start + 1)
    assert response.headers["x-content-size"] == "1000"
    assert response.headers["etag"] == etag(1000, data_file.stat().st_mtime)
    # A range is never sent with pathsend, which can only send whole files.
    assert PATHSEND not in _state(client)["messages"]


def test_range_beyond_the_end(client: httpx.Client, data_file: Path) -> None:
    response = client.get("/files/data.bin", headers={"range": "bytes=1000-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */1000"
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == "out_of_range"
    assert "1000" in body["message"]


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=5-4", "bytes=x", "lines=1-2"])
def test_ignored_range_sends_everything(client: httpx.Client, data_file: Path, header: str) -> None:
    response = client.get("/files/data.bin", headers={"range": header})
    assert response.status_code == 200
    assert response.content == data_file.read_bytes()
    assert "content-range" not in response.headers


def test_if_none_match(client: httpx.Client, data_file: Path) -> None:
    tag = client.get("/files/data.bin").headers["etag"]
    response = client.get("/files/data.bin", headers={"if-none-match": f'"nope", W/{tag}'})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == tag
    assert response.headers["last-modified"] == http_date(data_file.stat().st_mtime)
    assert "content-length" not in response.headers
    changed = client.get("/files/data.bin", headers={"if-none-match": '"nope"'})
    assert changed.status_code == 200
    assert changed.content == data_file.read_bytes()


def test_if_modified_since(client: httpx.Client, data_file: Path) -> None:
    last_modified = http_date(data_file.stat().st_mtime)
    response = client.get("/files/data.bin", headers={"if-modified-since": last_modified})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["last-modified"] == last_modified
    earlier = http_date(data_file.stat().st_mtime - 10)
    changed = client.get("/files/data.bin", headers={"if-modified-since": earlier})
    assert changed.status_code == 200
    assert changed.content == data_file.read_bytes()


def test_if_range(client: httpx.Client, data_file: Path) -> None:
    tag = client.get("/files/data.bin").headers["etag"]
    current = client.get("/files/data.bin", headers={"range": "bytes=0-9", "if-range": tag})
    assert current.status_code == 206
    assert current.content == data_file.read_bytes()[:10]
    stale = client.get("/files/data.bin", headers={"range": "bytes=0-9", "if-range": '"old"'})
    assert stale.status_code == 200
    assert stale.content == data_file.read_bytes()
    old_date = http_date(data_file.stat().st_mtime - 10)
    dated = client.get("/files/data.bin", headers={"range": "bytes=0-9", "if-range": old_date})
    assert dated.status_code == 200
    assert len(dated.content) == 1000


def test_failed_preconditions(client: httpx.Client, data_file: Path) -> None:
    response = client.get("/files/data.bin", headers={"if-match": '"other"'})
    assert response.status_code == 412
    assert response.json()["code"] == "failed_precondition"
    old_date = http_date(data_file.stat().st_mtime - 10)
    response = client.get("/files/data.bin", headers={"if-unmodified-since": old_date})
    assert response.status_code == 412
    tag = etag(1000, data_file.stat().st_mtime)
    assert client.get("/files/data.bin", headers={"if-match": tag}).status_code == 200


def test_head(client: httpx.Client, data_file: Path) -> None:
    response = client.head("/files/data.bin", headers={"range": "bytes=0-9"})
    assert response.status_code == 200  # Range applies to GET only
    assert response.content == b""
    assert response.headers["content-length"] == "1000"
    assert response.headers["etag"] == etag(1000, data_file.stat().st_mtime)
    assert response.headers["accept-ranges"] == "bytes"
    assert PATHSEND not in _state(client)["messages"]


def test_empty_file(server: Server, client: httpx.Client) -> None:
    (server.directory / "empty.txt").write_bytes(b"")
    response = client.get("/files/empty.txt")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == "0"
    assert client.get("/files/empty.txt", headers={"range": "bytes=0-"}).status_code == 416


@pytest.mark.parametrize("size", ["known", "unknown"])
def test_generated_stream(client: httpx.Client, size: str) -> None:
    response = client.get("/generated", params={"size": size}, headers={"range": "bytes=0-9"})
    assert response.status_code == 200
    assert response.content == b"".join(bytes([i]) * 1000 for i in range(10))
    assert response.headers["accept-ranges"] == "none"
    assert response.headers["content-type"] == "x/y"
    assert response.headers["content-disposition"] == 'attachment; filename="gen.bin"'
    assert "etag" not in response.headers
    if size == "known":
        assert response.headers["content-length"] == "10000"
        assert response.headers["x-content-size"] == "10000"
    else:
        assert "content-length" not in response.headers
        assert response.headers["transfer-encoding"] == "chunked"


# ---------------------------------------------------------------------------------------
# A 2 GiB file: bounded memory, and no reading for a client that has gone.


@pytest.fixture(scope="module")
def zeros_sha256() -> str:
    """The SHA-256 of 2 GiB of zero bytes, hashed from a reused 1 MiB buffer."""
    digest = hashlib.sha256()
    block = bytes(1 << 20)
    for _ in range(BIG_SIZE // len(block)):
        digest.update(block)
    return digest.hexdigest()


@pytest.fixture
def big_file(server: Server) -> Iterator[Path]:
    """A sparse 2 GiB file of zeros (takes no disk space)."""
    path = server.directory / "big.bin"
    with open(path, "wb") as f:
        f.truncate(BIG_SIZE)
    yield path
    path.unlink()


async def _samplerss(server: Server, stop: asyncio.Event, peaks: list[int]) -> None:
    """Record the peak (total, largest process) RSS every 20 ms until ``stop`` is set."""
    deadline = time.monotonic() + 600
    while not stop.is_set() and time.monotonic() < deadline:
        total, largest = server.rss()
        peaks[0] = max(peaks[0], total)
        peaks[1] = max(peaks[1], largest)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)


@pytest.mark.timeout(300)
async def test_2gib_download_in_bounded_memory(
    server: Server, big_file: Path, zeros_sha256: str
) -> None:
    peaks = [0, 0]
    stop = asyncio.Event()
    sampler = asyncio.create_task(_samplerss(server, stop, peaks))
    digest = hashlib.sha256()
    received = 0
    began = time.monotonic()
    try:
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=60) as client,
            client.stream("GET", "/files/big.bin") as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-length"] == str(BIG_SIZE)
            async for chunk in response.aiter_raw():
                digest.update(chunk)
                received += len(chunk)
    finally:
        stop.set()
        await sampler
    elapsed = time.monotonic() - began
    total, largest = peaks
    print(
        f"\n{server.kind}: 2 GiB in {elapsed:.1f} s ({BIG_SIZE / elapsed / 2**20:.0f} MiB/s), "
        f"peak RSS {total / 2**20:.1f} MiB in all processes, "
        f"{largest / 2**20:.1f} MiB in the largest"
    )
    assert received == BIG_SIZE
    assert digest.hexdigest() == zeros_sha256
    assert 0 < total < RSS_LIMIT
    async with httpx.AsyncClient(base_url=server.url) as client:
        state = (await client.get("/state")).json()
    if server.kind == "granian":
        assert state["messages"] == ["http.response.start", PATHSEND]


@pytest.mark.timeout(120)
async def test_disconnect_stops_reading(server: Server, big_file: Path) -> None:
    """A client that leaves after 4 MiB of a 2 GiB range costs the server little more."""
    before = server.bytes_read()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        async with client.stream("GET", "/files/big.bin", headers={"range": "bytes=1-"}) as r:
            assert r.status_code == 206  # a range: read by send_file, never by pathsend
            taken = 0
            async for chunk in r.aiter_raw():
                taken += len(chunk)
                if taken >= 4 << 20:
                    break
        # Leaving the block closed the connection. Wait for send_file to return.
        active = 1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            async with httpx.AsyncClient(base_url=server.url) as probe:
                active = (await probe.get("/state")).json()["active"]
            if active == 0:
                break
            await asyncio.sleep(0.02)
        assert active == 0, "send_file kept running after the client left"
    read = server.bytes_read() - before
    print(f"\n{server.kind}: {read / 2**20:.1f} MiB read for a client that took 4 MiB")
    assert read < 64 << 20
