"""Hardening 2, item 11: a TLS handshake that never finishes is bounded on both ports.

Hundreds of raw TCP connections to a TLS server, silent or stopping halfway through a
ClientHello, must all be closed by the server (read returns b"" or the connection is
reset) soon after the handshake timeout: ``--handshake-timeout``, by default
``--header-timeout``, on uvicorn (asyncio's ``ssl_handshake_timeout``, 60 s before) and on
gRPC (grpc core's ``grpc.server_handshake_timeout_ms``, 120 s before). granian bounds TLS
handshakes itself, at 10 s, whatever the flags say (granian 2.8 has no setting for it).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving.certs import Certs, make_certs
from tests.serving.process import Served

pytestmark = pytest.mark.process

TARGET = "examples.streams.server:create_service"
#: Stalled connections per port.
STALLED = 200
#: The first bytes of a TLS record holding a ClientHello, announcing more than follows.
PARTIAL_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 16
#: Seconds allowed beyond the timeout before a connection still open is a failure (a
#: loaded 2-core machine runs other tests meanwhile).
SLACK = 10.0
#: granian's own TLS handshake timeout.
GRANIAN_HANDSHAKE = 10.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def _stall(port: int, count: int) -> list[socket.socket]:
    """``count`` connections to ``port``: every other one silent, the rest stopped midway
    through a ClientHello."""
    opened = []
    for index in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if index % 2:
            sock.sendall(PARTIAL_HELLO)
        opened.append(sock)
    return opened


def _wait_closed(socks: list[socket.socket], limit: float) -> list[socket.socket]:
    """Read every socket until the server closes it or ``limit`` seconds pass; the ones
    still open then."""
    deadline = time.monotonic() + limit
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, sock)
        left = set(socks)
        while left and (remaining := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(min(remaining, 1.0)):
                sock = key.data
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:  # reset
                    data = b""
                if not data:
                    selector.unregister(sock)
                    left.discard(sock)
                # A TLS alert before the close is fine; it is read and the wait goes on.
    return [s for s in socks if s in left]


@contextlib.contextmanager
def _closing(socks: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _serve(certs: Certs, files: Path, server: str, *timeouts: str) -> Served:
    return Served(
        TARGET, "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--server", server,
        "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key),
        "--files", str(files), "--log-level", "warning", *timeouts,
    )  # fmt: skip


def _check_port(port: int, timeout: float) -> None:
    with _closing(_stall(port, STALLED)) as socks:
        still_open = _wait_closed(socks, timeout + SLACK)
        assert not still_open, f"{len(still_open)} of {STALLED} stalled handshakes still open"


def test_uvicorn_and_grpc_close_stalled_handshakes_after_the_header_timeout(
    certs: Certs, files_dir: Path
) -> None:
    """The default: the handshake timeout is ``--header-timeout``."""
    with _serve(certs, files_dir, "uvicorn", "--header-timeout", "2") as served:
        ports = served.ports(("gRPC", "HTTP"))
        _check_port(ports["HTTP"], 2)
        _check_port(ports["gRPC"], 2)
        assert served.process.poll() is None


def test_granian_and_grpc_close_stalled_handshakes(certs: Certs, files_dir: Path) -> None:
    """``--handshake-timeout`` on its own (the header timeout is long); granian closes at
    its own 10 s."""
    with _serve(
        certs, files_dir, "granian", "--header-timeout", "60", "--handshake-timeout", "2"
    ) as served:
        ports = served.ports(("gRPC", "HTTP"))
        _check_port(ports["gRPC"], 2)
        _check_port(ports["HTTP"], GRANIAN_HANDSHAKE)
        assert served.process.poll() is None


def test_plaintext_grpc_closes_a_connection_without_a_preface(files_dir: Path) -> None:
    """Without TLS, grpc core's handshake deadline covers HTTP/2's preface and settings."""
    with Served(
        TARGET, "--grpc", "127.0.0.1:0", "--files", str(files_dir), "--log-level", "warning",
        "--handshake-timeout", "2",
    ) as served:  # fmt: skip
        port = served.ports(("gRPC",))["gRPC"]
        with _closing(_stall(port, 50)) as socks:
            still_open = _wait_closed(socks, 2 + SLACK)
            assert not still_open, f"{len(still_open)} of 50 silent connections still open"
