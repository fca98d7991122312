"""Hardening 2, item 13: ``buf curl --reflect`` (a client rpckit did not write) lists and
calls the example on the HTTP port over Connect and gRPC-Web: reflection is a bidi stream on
the bridge, answered request by request, over HTTP/2 (granian with ``--h2c``, or TLS where
ALPN offers it). uvicorn speaks HTTP/1.1 only, and ``--h2c`` says so."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.serving.certs import make_certs
from tests.serving.process import Served
from tests.support import NODE_MODULES, require_tool

pytestmark = pytest.mark.process

TARGET = "examples.streams.server:create_service"
STREAMS = "examples.streams.v1.StreamsService"
BUF = NODE_MODULES / ".bin" / "buf"
PROTOCOLS = ("connect", "grpcweb")


def _buf(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    require_tool(BUF.exists(), "buf (npm @bufbuild/buf) is not installed in tests/node")
    return subprocess.run(
        [str(BUF), "curl", "--reflect", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _answers(out: str) -> list[dict[str, object]]:
    """buf curl's output: one pretty-printed JSON object per answer."""
    decoder = json.JSONDecoder()
    found, at = [], 0
    text = out.strip()
    while at < len(text):
        value, end = decoder.raw_decode(text, at)
        found.append(value)
        at = end
        while at < len(text) and text[at].isspace():
            at += 1
    return found


def _check_calls(base: str, *flags: str) -> None:
    """List, a unary call and a bidi call, on each HTTP dialect buf curl speaks."""
    for protocol in PROTOCOLS:
        listed = _buf("--protocol", protocol, *flags, "--list-methods", base)
        assert listed.returncode == 0, listed.stderr
        methods = listed.stdout.split()
        assert f"{STREAMS}/Chat" in methods
        assert f"{STREAMS}/GetDog" in methods
        assert "grpc.reflection.v1.ServerReflection/ServerReflectionInfo" in methods
        # buf resolves every listed service by reflection: none may be missing, v1 included.
        assert "failed to find" not in listed.stderr, listed.stderr

        unary = _buf(
            "--protocol", protocol, *flags, "-d", '{"index": 3}', f"{base}/{STREAMS}/GetDog"
        )
        assert unary.returncode == 0, unary.stderr
        assert _answers(unary.stdout) == [{"name": "Dog 3", "age": 3}]

        chat = _buf(
            "--protocol", protocol, *flags, "-d", "@-", f"{base}/{STREAMS}/Chat",
            stdin='{"text": "hello"}\n{"text": "again"}\n',
        )  # fmt: skip
        assert chat.returncode == 0, chat.stderr
        assert _answers(chat.stdout) == [{"text": "HELLO"}, {"text": "AGAIN"}]


def test_buf_curl_reflects_and_calls_over_h2c_on_granian(files_dir: Path) -> None:
    with Served(
        TARGET, "--http", "127.0.0.1:0", "--server", "granian", "--h2c",
        "--files", str(files_dir), "--log-level", "warning",
    ) as served:  # fmt: skip
        port = served.ports()["HTTP"]
        _check_calls(f"http://127.0.0.1:{port}")


def test_buf_curl_reflects_and_calls_over_tls_on_granian(files_dir: Path, tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    with Served(
        TARGET, "--http", "127.0.0.1:0", "--server", "granian",
        "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key),
        "--files", str(files_dir), "--log-level", "warning",
    ) as served:  # fmt: skip
        port = served.ports()["HTTP"]
        _check_calls(f"https://127.0.0.1:{port}", "--cacert", str(certs.ca))


def test_without_h2c_buf_curl_is_told_http2_is_missing(files_dir: Path) -> None:
    """Plain TCP without --h2c is HTTP/1.1 only (the header timeout covers a connection's
    first bytes): buf says at once that it needs HTTP/2; it never hangs."""
    with Served(
        TARGET, "--http", "127.0.0.1:0", "--files", str(files_dir), "--log-level", "warning"
    ) as served:
        port = served.ports()["HTTP"]
        listed = _buf("--list-methods", f"http://127.0.0.1:{port}")
        assert listed.returncode != 0
        assert "HTTP/2" in listed.stderr


def test_h2c_needs_granian() -> None:
    with Served(TARGET, "--http", "127.0.0.1:0", "--h2c") as served:
        out = served.rest()
    assert served.process.returncode == 2
    assert "--h2c needs --server granian" in out
