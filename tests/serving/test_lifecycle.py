"""The HTTP servers drive the bridge through the ``Lifecycle`` they are given, however the
bridge is wrapped: at stop, WebSocket calls end with ``unavailable`` and a clean close; when
the grace period is over, open HTTP streams end with an in-band ``unavailable``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from examples.streams.server import StreamsExample
from rpckit.http import create_app
from rpckit.http.asgi import Receive, Scope, Send
from rpckit.serving.http_server import create_http_server
from rpckit.serving.options import SERVERS, ServerKind

SHUTTING_DOWN = {"code": "unavailable", "message": "the server is shutting down; retry"}


@pytest.mark.loopback
@pytest.mark.parametrize("kind", SERVERS)
async def test_a_wrapped_bridge_is_drained_through_its_lifecycle(
    files_dir: Path, kind: ServerKind
) -> None:
    bridge = create_app([StreamsExample(files_dir)])

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        """A middleware that exposes nothing (no ``.app``, no ``.drain``)."""
        await bridge(scope, receive, send)

    server = create_http_server(kind, wrapper, grace=0.3, lifecycle=bridge.lifecycle)
    port = await server.start("127.0.0.1:0")
    url = f"http://127.0.0.1:{port}"
    async with asyncio.timeout(20):
        ws = await connect(
            f"ws://127.0.0.1:{port}/examples.streams.v1.StreamsService/Chat",
            subprotocols=[Subprotocol("rpckit.v1.json")],
            proxy=None,
        )
        await ws.send('{"type":"start"}')
        await ws.send(b'{"text":"before"}')
        assert json.loads(await ws.recv())["type"] == "headers"
        assert json.loads(await ws.recv()) == {"text": "BEFORE"}
        async with (
            httpx.AsyncClient(base_url=url, timeout=10) as http,
            http.stream(
                "GET",
                "/api/test_stream?interval_ms=50",
                headers={"accept": "application/x-ndjson"},
            ) as plain,
        ):
            lines = plain.aiter_lines()
            assert json.loads(await anext(lines)) == {"text": "Hello, world! 0"}
            stopping = asyncio.ensure_future(server.stop())
            frames = []
            with contextlib.suppress(ConnectionClosed):
                async for frame in ws:
                    frames.append(frame)
            rest = [json.loads(line) async for line in lines if line]
            await stopping
    ends = [json.loads(f) for f in frames if isinstance(f, str)]
    assert ends[-1]["type"] == "end"
    assert ends[-1]["error"] == SHUTTING_DOWN
    assert ws.close_code == 1000
    assert rest[-1] == {"error": SHUTTING_DOWN}
