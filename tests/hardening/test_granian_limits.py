"""Hardening 2, items 8, 9 and 10, through ``python -m rpckit serve`` on granian (and uvicorn
for comparison): 1,000 concurrent streams all get their response head (granian embedded
served 128 connections at a time), silent and trickling connections are closed by the header
timeout while normal requests go on, and malformed chunked bodies end in an error response.
Raw sockets, asyncio clients; every wait bounded, counts asserted rather than timings."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving.process import serve_example

pytestmark = pytest.mark.process

SERVERS = ["uvicorn", "granian"]
#: Seconds any one phase may take (generous: the 2 cores are shared with other test runs).
WAIT = 60.0
STREAMS = 1000


def _open_files(needed: int) -> None:
    """Raise this process's open-file limit (the server inherits it) or skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@pytest.fixture(params=SERVERS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def port(kind: str, files_dir: Path) -> Iterator[int]:
    _open_files(3 * STREAMS)
    with serve_example(kind, files_dir, "--header-timeout", "2", "--idle-timeout", "2") as served:
        yield served.ports()["HTTP"]


async def _head(port: int, request: bytes) -> tuple[bytes, asyncio.StreamWriter]:
    """The status line of ``request``'s response; the connection stays open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    return await reader.readline(), writer


def _get(path: str, accept: str = "application/json") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n".encode()


async def _status(port: int, request: bytes) -> int:
    """The status of ``request``'s response on a fresh connection (0: none, connection gone)."""
    line, writer = await asyncio.wait_for(_head(port, request), WAIT)
    writer.close()
    return int(line.split(b" ", 2)[1]) if line.startswith(b"HTTP/1.1 ") else 0


async def _streams(port: int) -> list[bytes]:
    """1,000 streams open at once, half SSE and half NDJSON: each one's status line."""
    sse = _get("/api/test_stream?interval_ms=1000", "text/event-stream")
    ndjson = _get("/api/test_stream?interval_ms=1000", "application/x-ndjson")
    opened = [_head(port, sse if i % 2 else ndjson) for i in range(STREAMS)]
    results = await asyncio.wait_for(asyncio.gather(*opened, return_exceptions=True), WAIT)
    heads = []
    for result in results:
        if isinstance(result, BaseException):
            heads.append(repr(result).encode())
            continue
        line, writer = result
        heads.append(line)
        writer.close()
    return heads


def test_a_thousand_streams_all_get_their_head(kind: str, port: int) -> None:
    heads = asyncio.run(_streams(port))
    served = [h for h in heads if h.startswith(b"HTTP/1.1 200")]
    assert len(served) == STREAMS, (len(served), {h[:40] for h in heads} - {b"HTTP/1.1 200 OK\r\n"})


async def _slowloris(port: int) -> tuple[int, int, list[int]]:
    """100 silent and 500 trickling connections; once they are all open, ten normal GETs.
    Returns how many of the 600 the server closed, how many could not connect, and the
    GETs' statuses."""
    failed = 0
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(600):
        try:
            conns.append(await asyncio.open_connection("127.0.0.1", port))
        except OSError:
            failed += 1
    trickling = [writer for _, writer in conns[100:]]
    for writer in trickling:
        writer.write(b"GET /api/dogs/1 HTTP/1.1\r\nHost: x\r\nX-Slow: ")

    async def trickle() -> None:
        while True:
            for writer in trickling:
                if not writer.is_closing():
                    writer.write(b"a")
            await asyncio.sleep(0.3)

    trickler = asyncio.ensure_future(trickle())
    try:
        statuses = [await _status(port, _get("/api/dogs/1")) for _ in range(10)]

        async def closed(reader: asyncio.StreamReader) -> bool:
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass  # a 408 or nothing, then EOF
            return True

        ends = await asyncio.wait_for(
            asyncio.gather(*(closed(reader) for reader, _ in conns)), WAIT
        )
    finally:
        trickler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await trickler
        for _, writer in conns:
            writer.close()
    return sum(ends), failed, statuses


def test_slowloris_leaves_http_serving(kind: str, port: int) -> None:
    closed, failed, statuses = asyncio.run(_slowloris(port))
    assert failed == 0
    assert statuses == [200] * 10
    assert closed == 600  # every one of them, by the 2 s header timeout (WAIT bounds it)
    assert asyncio.run(_status(port, _get("/api/dogs/2"))) == 200


MALFORMED = {
    "0x size": b"0x5\r\nhello\r\n0\r\n\r\n",
    "bare LF": b"5\nhello\n0\n\n",
    "overflowing size": b"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
}


def _chunked(body: bytes) -> bytes:
    return (
        b"POST /api/dogs:adopt HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + body
    )


def test_malformed_chunked_bodies_are_errors(kind: str, port: int) -> None:
    """uvicorn's parser answers 400. granian's receive() reports a malformed body as a
    disconnect (indistinguishable, in ASGI, from a client that left) and granian itself
    answers 500: documented in hardening.md, with the proxy setting that covers it."""
    for name, body in MALFORMED.items():
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            sock.sendall(_chunked(body))
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        status = int(answer.split(b" ", 2)[1])
        expected = 400 if kind == "uvicorn" else 500
        assert status == expected, (name, answer[:300])
    assert asyncio.run(_status(port, _get("/api/dogs/3"))) == 200
