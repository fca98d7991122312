"""Hardening 2, items 1 and 2, through ``python -m rpckit serve`` on uvicorn and granian with a
client rpckit did not write (``websockets``): a WebSocket call outlives ``--header-timeout``,
and a control frame nested thousands of levels deep is refused with ``invalid_argument`` and
an ``end`` frame, as the first frame and after ``start``, never a dropped socket or a hang."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.serving.process import Served

pytestmark = pytest.mark.process

TARGET = "examples.streams.server:create_service"
SERVICE = "/examples.streams.v1.StreamsService/"
HEADER_TIMEOUT = 1.0
CALL_TIMEOUT = 20.0
#: 3,000 levels of nesting fit in a 64 KiB control frame.
DEEP = "[" * 3000 + "]" * 3000


@pytest.fixture(params=["uvicorn", "granian"])
def ws_url(request: pytest.FixtureRequest, files_dir: Path) -> Iterator[str]:
    with Served(
        TARGET, "--http", "127.0.0.1:0", "--server", request.param, "--files", str(files_dir),
        "--header-timeout", str(HEADER_TIMEOUT), "--idle-timeout", "1", "--grace", "1",
        "--log-level", "warning",
    ) as server:  # fmt: skip
        port = server.ports()["HTTP"]
        yield f"ws://127.0.0.1:{port}{SERVICE}"


def _open(url: str) -> connect:
    return connect(url, subprotocols=[Subprotocol("rpckit.v1.json")], open_timeout=CALL_TIMEOUT)


async def _end_frame(ws: ClientConnection) -> dict[str, object]:
    """Frames until the server's ``end`` control frame (bounded)."""
    async with asyncio.timeout(CALL_TIMEOUT):
        while True:
            frame = await ws.recv()
            if isinstance(frame, str):
                control = json.loads(frame)
                if control["type"] == "end":
                    return dict(control)


async def _drain(ws: ClientConnection) -> None:
    """Frames until the socket closes (bounded)."""
    async with asyncio.timeout(CALL_TIMEOUT):
        while True:
            await ws.recv()


async def test_a_websocket_call_outlives_the_header_timeout(ws_url: str) -> None:
    """Item 1: the header timer ended with the upgrade; a stream at 100 ms keeps flowing for
    three header timeouts and then ends by the client's cancel, not by a cut socket."""
    async with _open(ws_url + "TextStream") as ws:
        await ws.send(json.dumps({"type": "start"}))
        await ws.send(json.dumps({"interval_ms": 100}).encode())
        started = time.monotonic()
        items = 0
        async with asyncio.timeout(CALL_TIMEOUT):
            while time.monotonic() - started < 3 * HEADER_TIMEOUT:
                frame = await ws.recv()
                if isinstance(frame, bytes):
                    items += 1
        assert items >= 10, items
        await ws.send(json.dumps({"type": "cancel"}))
        with pytest.raises(ConnectionClosed) as closed:
            await _drain(ws)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1000


async def test_a_deep_first_frame_is_invalid_argument(ws_url: str) -> None:
    """Item 2, as the first frame: an ``end`` frame with ``invalid_argument``, then close."""
    async with _open(ws_url + "Chat") as ws:
        await ws.send('{"type": "start", "headers": ' + DEEP + "}")
        end = await _end_frame(ws)
        error = end["error"]
        assert isinstance(error, dict), end
        assert error["code"] == "invalid_argument", end
        assert "nested deeper" in str(error["message"]), end


async def test_a_deep_control_frame_after_start_ends_the_call(ws_url: str) -> None:
    """Item 2, after ``start``: the call ends with ``invalid_argument`` (it used to hang)."""
    async with _open(ws_url + "Chat") as ws:
        await ws.send(json.dumps({"type": "start"}))
        await ws.send(json.dumps({"text": "hello"}).encode())
        async with asyncio.timeout(CALL_TIMEOUT):
            echo = await ws.recv()
            while isinstance(echo, str):  # the headers frame
                echo = await ws.recv()
        await ws.send('{"type": "end", "x": ' + DEEP + "}")
        end = await _end_frame(ws)
        error = end["error"]
        assert isinstance(error, dict), end
        assert error["code"] == "invalid_argument", end
