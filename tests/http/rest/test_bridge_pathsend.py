"""On granian, rpckit's own bridge sends whole files with the ASGI ``http.response.pathsend``
extension (granian then sends the file from its path; Python never holds its bytes).

The proof runs rpckit's real serving stack in-process: ``GranianServer`` (granian's embedded
server, with rpckit's request guard in front) around the bridge of the streams example. A
recording wrapper between the guard and the bridge keeps every ASGI message type the bridge
sends, so the test fails if the guard hides the extension from the bridge, if the plain route
does not reach ``send_file``'s pathsend branch, or if a Range request (a span, which pathsend
cannot express) is sent with it. httpx checks the bytes that actually arrive.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.streams.server import StreamsExample
from rpckit.http import create_app
from rpckit.http.asgi import Receive, Scope, Send
from rpckit.http.rest.filesend import PATHSEND
from rpckit.serving.http_server import GranianServer

pytestmark = pytest.mark.process

SIZE = 8 << 20


class Recorder:
    """An ASGI wrapper that keeps, per request path and Range header, the message types sent
    and whether the server offered pathsend."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls: list[tuple[str, bool, bool, list[str]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent: list[str] = []
        ranged = any(name == b"range" for name, _ in scope["headers"])
        offered = PATHSEND in (scope.get("extensions") or {})
        self.calls.append((scope["path"], ranged, offered, sent))

        async def recording(message: Any) -> None:
            sent.append(message["type"])
            await send(message)

        await self.app(scope, receive, recording)


@pytest.fixture
async def served(files_dir: Path) -> AsyncIterator[tuple[str, Recorder]]:
    """The example's bridge on granian (in-process) at a free loopback port."""
    recorder = Recorder(create_app([StreamsExample(files_dir)]))
    server = GranianServer(recorder, grace=1)
    port = await server.start("127.0.0.1:0")
    try:
        yield f"http://127.0.0.1:{port}", recorder
    finally:
        await server.stop()


async def test_whole_file_goes_out_with_pathsend(
    served: tuple[str, Recorder], files_dir: Path
) -> None:
    base, recorder = served
    content = os.urandom(SIZE)
    (files_dir / "big.bin").write_bytes(content)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        whole = await http.get("/api/files/big.bin")
        assert whole.status_code == 200, whole.text
        assert whole.headers["content-length"] == str(SIZE)
        assert hashlib.sha256(whole.content).digest() == hashlib.sha256(content).digest()
        assert recorder.calls[-1] == (
            "/api/files/big.bin",
            False,
            True,
            ["http.response.start", PATHSEND],
        )

        span = await http.get("/api/files/big.bin", headers={"range": "bytes=1000-1999999"})
        assert span.status_code == 206, span.text
        assert span.content == content[1000:2000000]
        path, ranged, offered, sent = recorder.calls[-1]
        assert (path, ranged, offered) == ("/api/files/big.bin", True, True)
        assert PATHSEND not in sent
        assert sent[0] == "http.response.start"
        assert set(sent[1:]) == {"http.response.body"}
