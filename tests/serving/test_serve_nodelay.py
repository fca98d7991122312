"""Keep-alive calls through ``rpckit serve`` are not held back by Nagle's algorithm.

Without ``TCP_NODELAY`` a response written in two parts (head, then body) waits for the
client's delayed ACK, about 40 ms per call on Linux. This measures the real product.
"""

from __future__ import annotations

import asyncio
import http.client
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rpckit.serving.http_server import HttpServer
from tests.support import ROOT, stop_process_tree

pytestmark = pytest.mark.process

CALLS = 60


async def test_listening_socket_is_tcp() -> None:
    """asyncio sets TCP_NODELAY on accepted sockets only when the listener's proto is TCP."""
    server = HttpServer(_app, grace=0)
    port = await server.start("127.0.0.1:0")
    try:
        assert server.sockets, "the server keeps its listening socket"
        assert all(s.proto == socket.IPPROTO_TCP for s in server.sockets)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await reader.readline()).startswith(b"HTTP/1.1 204")
        writer.close()
        await writer.wait_closed()
    finally:
        await server.stop()


async def _app(scope: dict[str, object], receive: object, send: object) -> None:
    assert callable(send)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_keep_alive_round_trips_are_fast(files_dir: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "rpckit", "serve", "examples.streams.server:create_service",
         "--http", "127.0.0.1:0", "--files", str(files_dir), "--log-level", "warning"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        match = re.search(r"HTTP listening on \S+:(\d+)", line)
        assert match, line
        connection = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=10)
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
    finally:
        stop_process_tree(process)
