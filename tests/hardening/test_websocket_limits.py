"""Hardening 2, items 3, 4 and 5, through ``python -m rpckit serve`` on uvicorn and granian
with raw WebSocket frames written by hand: a ping flood from a client that never reads, a
message in 1-byte fragments, a text frame that is not UTF-8, handshakes to paths without a
WebSocket endpoint and a DNS-rebinding Origin. Memory is the serving process's RSS
(``/proc/<pid>/status``)."""

from __future__ import annotations

import base64
import os
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving.process import Served, serve_example
from tests.support import rss

pytestmark = pytest.mark.process

CHAT = "/examples.streams.v1.StreamsService/Chat"
SERVERS = ["uvicorn", "granian"]
MIB = 1024 * 1024
#: Seconds any one exchange may take.
WAIT = 30.0


class Server:
    def __init__(self, kind: str, served: Served, port: int) -> None:
        self.kind = kind
        self.served = served
        self.port = port

    def rss(self) -> int:
        found = rss(self.served.process.pid)
        assert found, "no VmRSS"
        return found

    def output(self) -> str:
        """Everything the server printed, once it has stopped (SIGINT, bounded)."""
        self.served.process.send_signal(signal.SIGINT)
        return self.served.rest(timeout=WAIT)


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest, files_dir: Path) -> Iterator[Server]:
    with serve_example(request.param, files_dir) as served:
        yield Server(request.param, served, served.ports()["HTTP"])


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One masked client frame."""
    mask = os.urandom(4)
    size = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", size)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def handshake(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[socket.socket, bytes]:
    """A raw WebSocket handshake; the socket and the response head."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    fields = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Protocol": "rpckit.v1.json",
        **(headers or {}),
    }
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    sock.sendall(request.encode() + b"\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            break
        head += data
    return sock, head


def status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


def close_code(sock: socket.socket) -> int | None:
    """Frames until the server's close frame: its code (None: closed without one)."""
    sock.settimeout(WAIT)
    buffer = b""
    while True:
        while len(buffer) >= 2:
            opcode, size = buffer[0] & 0x0F, buffer[1] & 0x7F
            start = 2
            if size == 126:
                size, start = struct.unpack(">H", buffer[2:4])[0], 4
            elif size == 127:
                size, start = struct.unpack(">Q", buffer[2:10])[0], 10
            if len(buffer) < start + size:
                break
            payload, buffer = buffer[start : start + size], buffer[start + size :]
            if opcode == 8:
                return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not data:
            return None
        buffer += data


def _flood(sock: socket.socket, chunk: bytes, most: int) -> int:
    """Send ``chunk`` until ``most`` bytes went, the server stops reading (a send times out)
    or closes, or ``WAIT`` passes; the bytes sent."""
    sent = 0
    deadline = time.monotonic() + WAIT
    while sent < most and time.monotonic() < deadline:
        try:
            sock.sendall(chunk)
        except OSError:
            break
        sent += len(chunk)
    return sent


def test_a_ping_flood_is_bounded(server: Server) -> None:
    """Item 3: pings from a client that never reads its pongs (up to 200 MiB of them) grow
    the server by at most 8 MiB: uvicorn stops reading, granian ends the connection."""
    sock, head = handshake(server.port, CHAT)
    assert status(head) == 101, head
    sock.sendall(frame(1, b'{"type":"start"}'))
    time.sleep(0.5)
    before = server.rss()
    chunk = frame(9, b"p" * 125) * 2000
    sock.settimeout(2)
    sent = _flood(sock, chunk, 200 * MIB)
    time.sleep(0.5)
    grown = server.rss() - before
    sock.close()
    assert grown <= 8 * MIB, (grown / MIB, sent / MIB)
    assert sent < 200 * MIB


def test_fragments_over_the_limit_close_with_1009(files_dir: Path) -> None:
    """Item 4: a message in 1-byte fragments larger than ``--max-message-size`` ends with 1009
    (uvicorn: its ``ws_max_size`` follows the bridge's limit; granian: the bridge refuses)."""
    for kind in SERVERS:
        with serve_example(kind, files_dir, "--max-message-size", "65536") as served:
            port = served.ports()["HTTP"]
            sock, head = handshake(port, CHAT)
            assert status(head) == 101, head
            sock.sendall(frame(1, b'{"type":"start"}'))
            pieces = [frame(2, b"x", fin=False)] + [frame(0, b"x", fin=False)] * 199_998
            sock.sendall(b"".join(pieces) + frame(0, b"x"))
            assert close_code(sock) == 1009, kind
            sock.close()


def test_two_million_fragments_cost_bounded_memory(server: Server) -> None:
    """Item 4: 2,000,000 one-byte fragments (a 2 MB message, within the limit) grew uvicorn
    by 112 MiB (a list of bytes objects); now the message costs about its size."""
    sock, head = handshake(server.port, CHAT)
    assert status(head) == 101, head
    sock.sendall(frame(1, b'{"type":"start"}'))
    time.sleep(0.5)
    before = server.rss()
    sock.sendall(frame(2, b"x", fin=False))
    block = frame(0, b"x", fin=False) * 10_000
    for _ in range(200):
        sock.sendall(block)
    time.sleep(1)
    grown = server.rss() - before
    sock.close()
    assert grown <= 32 * MIB, grown / MIB


def test_a_text_frame_that_is_not_utf8_closes_quietly(server: Server) -> None:
    """Item 5: uvicorn closes with 1007 (it logged a traceback); granian closes (it cannot
    say why: its WebSocket errors reach the app as a bare disconnect). Nothing is logged."""
    sock, head = handshake(server.port, CHAT)
    assert status(head) == 101, head
    sock.sendall(frame(1, b"\xff\xfe not utf-8"))
    code = close_code(sock)
    sock.close()
    output = server.output()
    assert "Traceback" not in output, output
    assert "ERROR" not in output, output
    if server.kind == "uvicorn":
        assert code == 1007


def test_a_websocket_to_a_path_without_an_endpoint_is_404(server: Server) -> None:
    """Item 5: unknown paths, plain routes, probes and not-quite method paths answer 404
    before the upgrade, with no error logged (uvicorn answered 500, granian 403)."""
    paths = [
        "/", "/healthz", "/readyz", "/api/test_stream",
        "/examples.streams.v1.StreamsService/GetDog/", "/examples.streams.v1.StreamsService/Nope",
    ]  # fmt: skip
    for path in paths:
        sock, head = handshake(server.port, path)
        sock.close()
        assert status(head) == 404, (path, head)
    output = server.output()
    assert "ERROR" not in output, output
    assert "Traceback" not in output, output


def test_a_dns_rebinding_origin_is_refused(server: Server) -> None:
    """Item 5: a page whose own name resolves to the server sends the same name in Host and
    Origin; only the allow-list (``--cors-origin``) or an address origin passes."""
    port = server.port
    rebound = f"evil.example:{port}"
    sock, head = handshake(port, CHAT, {"Host": rebound, "Origin": f"http://{rebound}"})
    sock.close()
    assert status(head) == 403, head
    sock, head = handshake(port, CHAT, {"Origin": f"https://127.0.0.1:{port}"})  # scheme
    sock.close()
    assert status(head) == 403, head
    sock, head = handshake(port, CHAT, {"Origin": f"http://127.0.0.1:{port}"})
    sock.close()
    assert status(head) == 101, head
