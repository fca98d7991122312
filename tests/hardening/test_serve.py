"""Issue 11 through ``python -m rpckit serve`` on uvicorn and granian: malformed numbers
(item 2), file names bounded in bytes (4), deadlines while the body streams in (5), drain of
client streams (6), header/idle/body timeouts (3) and ambiguous framing (7). httpx for
calls, raw sockets for timeouts and smuggling."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving.process import Served

pytestmark = pytest.mark.process

TARGET = "examples.streams.server:create_service"
SERVERS = ["uvicorn", "granian"]
HUGE = "9" * 5000
ADOPT = "/examples.streams.v1.StreamsService/AdoptDogs"


@pytest.fixture(params=SERVERS)
def served(request: pytest.FixtureRequest, files_dir: Path) -> Iterator[tuple[Served, str]]:
    with Served(
        TARGET, "--http", "127.0.0.1:0", "--server", request.param, "--files", str(files_dir),
        "--header-timeout", "1", "--idle-timeout", "1", "--body-timeout", "1.5",
        "--grace", "1", "--log-level", "warning",
    ) as server:  # fmt: skip
        port = server.ports()["HTTP"]
        yield server, f"http://127.0.0.1:{port}"


def _is_invalid(response: httpx.Response) -> None:
    assert response.status_code == 400, (response.status_code, response.text[:200])
    body = response.json()
    assert body["code"] == "invalid_argument", body
    assert "\n" not in body["message"]


def test_malformed_numbers_are_invalid_argument(served: tuple[Served, str]) -> None:
    _, url = served
    with httpx.Client(base_url=url, timeout=10) as client:
        for value in (b"\xb2", b"\xd9\xa3", HUGE.encode(), b"-1", b"1_000"):
            response = client.post(
                "/examples.streams.v1.StreamsService/GetDog",
                content=b"{}",
                headers={b"content-type": b"application/json", b"connect-timeout-ms": value},
            )
            _is_invalid(response)
        _is_invalid(client.get(f"/api/dogs/{HUGE}"))
        _is_invalid(client.get("/api/dogs/%C2%B2"))
        _is_invalid(client.get(f"/api/test_stream?interval_ms={HUGE}"))
        for value in (b"\xb2", HUGE.encode()):
            _is_invalid(client.get("/api/json_stream", headers={b"last-event-id": value}))
            _is_invalid(
                client.post(
                    "/api/upload_as_file_stream",
                    content=b"abc",
                    headers={b"x-content-size": value, b"content-disposition": b"attachment"},
                )
            )
        ranged = client.get("/api/files/hello.txt", headers={"range": f"bytes={HUGE}-"})
        assert ranged.status_code == 416, ranged.text[:200]
        ranged = client.get("/api/files/hello.txt", headers={"range": f"bytes=0-{HUGE}"})
        assert ranged.status_code == 206
        assert ranged.content == b"Hello from rpckit!\n"


def test_file_names_are_bounded_in_bytes(served: tuple[Served, str], files_dir: Path) -> None:
    _, url = served
    names = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for name in ("é" * 200 + ".txt", "a" * 251 + ".bin", "a" * 251 + ".bin"):
            quoted = "".join(f"%{b:02X}" for b in name.encode())
            response = client.post(
                "/api/upload_as_file_stream", content=b"data",
                headers={"content-disposition": f"attachment; filename*=UTF-8''{quoted}"},
            )  # fmt: skip
            assert response.status_code == 200, response.text[:200]
            names.append(response.json()["filename"])
    assert all(len(n.encode()) <= 255 for n in names), [len(n.encode()) for n in names]
    assert names[2].endswith(" (1).bin")
    assert {p.name for p in files_dir.iterdir()} >= set(names)


def _trickle(url: str, path: str, headers: dict[str, str], pieces: list[bytes]) -> httpx.Response:
    def body() -> Iterator[bytes]:
        for piece in pieces:
            yield piece
            time.sleep(0.5)  # the client's pace, not synchronisation

    with httpx.Client(base_url=url, timeout=20) as client:
        return client.post(path, content=body(), headers=headers)


def test_deadline_counts_while_the_body_streams_in(served: tuple[Served, str]) -> None:
    _, url = served
    dog = json.dumps({"name": "Rex"}).encode()
    pieces = [struct.pack(">BI", 0, len(dog)) + dog] * 8  # 4 s of body, 1 s deadline
    start = time.monotonic()
    response = _trickle(
        url, ADOPT,
        {"content-type": "application/connect+json", "connect-timeout-ms": "1000"}, pieces,
    )  # fmt: skip
    took = time.monotonic() - start
    assert response.status_code == 200
    end = response.content[response.content.rindex(b"\x02\x00") :]
    assert b"deadline_exceeded" in end, response.content[-200:]
    assert took < 3.5, took
    zero = httpx.post(
        url + "/examples.streams.v1.StreamsService/GetDog", content=b"{}",
        headers={"content-type": "application/json", "connect-timeout-ms": "0"}, timeout=10,
    )  # fmt: skip
    assert zero.status_code == 504, zero.text
    assert zero.json()["code"] == "deadline_exceeded"


def test_stalled_body_ends_the_call(served: tuple[Served, str]) -> None:
    _, url = served
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(
            b"POST /api/upload_as_file_stream HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 100\r\n\r\nonly-a-little"
        )
        answer = _read_all(sock, 5)  # raises if the connection is still open after 5 s
    assert b"deadline_exceeded" in answer or answer == b"", answer[:300]


def test_drain_ends_client_streams_with_unavailable(
    served: tuple[Served, str], files_dir: Path
) -> None:
    server, url = served
    started = threading.Event()
    result: list[httpx.Response] = []

    def body() -> Iterator[bytes]:
        yield b"x" * 1024
        started.set()
        for _ in range(40):
            time.sleep(0.25)  # an upload slower than the grace period
            yield b"x" * 1024

    def upload() -> None:
        with httpx.Client(base_url=url, timeout=20) as client:
            result.append(
                client.post(
                    "/api/upload_as_file_stream",
                    content=body(),
                    headers={"content-disposition": "attachment; filename=drained.bin"},
                )
            )

    thread = threading.Thread(target=upload)
    thread.start()
    assert started.wait(10)
    time.sleep(0.3)  # let the first piece reach the handler
    start = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    output = server.rest(timeout=15)
    took = time.monotonic() - start
    thread.join(20)
    assert result, "the upload got no answer"
    response = result[0]
    assert response.status_code == 503, (response.status_code, response.text[:200])
    assert response.json()["code"] == "unavailable"
    assert "Exception in ASGI application" not in output
    assert took < 1 + 1.5, took  # grace (1 s) plus a margin well below the old grace + 2 s
    assert not (files_dir / "drained.bin").exists()


def _read_all(sock: socket.socket, limit: float) -> bytes:
    """Everything until the server closes (EOF), within ``limit`` seconds."""
    data = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"still open after {limit} s; got {data[:200]!r}")


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_trickled_headers_and_idle_connections_are_closed(
    served: tuple[Served, str], request: pytest.FixtureRequest
) -> None:
    _, url = served
    trickling = [socket.create_connection(("127.0.0.1", _port(url)), timeout=10) for _ in range(20)]
    idle_after_call = socket.create_connection(("127.0.0.1", _port(url)), timeout=10)
    idle_after_call.sendall(b"GET /api/dogs/1 HTTP/1.1\r\nHost: x\r\n\r\n")
    start = time.monotonic()
    for sock in trickling:
        sock.sendall(b"GET /api/dogs/1 HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.2):
            for sock in trickling:
                with contextlib.suppress(OSError):
                    sock.sendall(b"a")

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        for sock in trickling:
            _read_all(sock, 6)
        assert b"Dog 1" in _read_all(idle_after_call, 6)
    finally:
        stop.set()
        thread.join()
        for sock in [*trickling, idle_after_call]:
            sock.close()
    assert time.monotonic() - start < 6


def test_silent_connection_is_closed_on_uvicorn(files_dir: Path) -> None:
    """A connection that never sends a byte (granian only starts its header timer at the
    first byte: see README, "Connection limits")."""
    with Served(
        TARGET, "--http", "127.0.0.1:0", "--files", str(files_dir), "--header-timeout", "1",
    ) as server:  # fmt: skip
        port = server.ports()["HTTP"]
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
        start = time.monotonic()
        for sock in socks:
            assert _read_all(sock, 5) == b""
            sock.close()
        assert time.monotonic() - start < 5


def test_content_length_with_transfer_encoding_is_refused(served: tuple[Served, str]) -> None:
    """RFC 9112 §6.1: reject, or process by Transfer-Encoding alone; either way close.
    uvicorn (httptools, h11 below) and rpckit's guard answer 400; granian's parser (hyper)
    drops Content-Length before the app sees the request, processes it as chunked and
    closes the connection, so the smuggled request is never answered there either."""
    server, url = served
    with socket.create_connection(("127.0.0.1", _port(url)), timeout=10) as sock:
        sock.sendall(
            b"POST /api/upload_as_file_stream HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            b"GET /api/dogs/1 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        answer = _read_all(sock, 5)
    granian = "granian" in str(server.process.args)
    assert answer.startswith(b"HTTP/1.1 200" if granian else b"HTTP/1.1 400"), answer[:300]
    assert b"connection: close" in answer.lower()
    assert b"Dog 1" not in answer  # the smuggled request is never answered
    assert answer.count(b"HTTP/1.1 ") == 1


async def test_content_length_with_transfer_encoding_on_h11(files_dir: Path) -> None:
    from examples.streams.server import StreamsExample
    from rpckit.http import create_app
    from rpckit.serving.http_server import HttpServer

    server = HttpServer(create_app([StreamsExample(files_dir)]), grace=0.1, parser="h11")
    port = await server.start("127.0.0.1:0")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /api/upload_as_file_stream HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            b"GET /api/dogs/1 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        answer = await asyncio.wait_for(reader.read(), 5)  # read() returns at EOF: closed
        writer.close()
    finally:
        await server.stop()
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"Dog 1" not in answer
