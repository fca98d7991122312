"""Every request refused before its handler still ends through the call runner: each refusal
on each dialect where it applies gives interceptors exactly one ``on_end`` with its status,
and the access log one line, while the answer on the wire stays the dialect's own."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.streams.server import StreamsExample
from rpckit import Code, Context
from rpckit.http import BridgeOptions, create_app
from rpckit.http.connect.protocol import FLAG_END_STREAM
from rpckit.http.grpc_web.protocol import parse_trailers
from rpckit.http.wire import EnvelopeReader
from rpckit.interceptors import Interceptor, Outcome
from rpckit.interceptors.access_log import AccessLog

SERVICE = "/examples.streams.v1.StreamsService"
#: Small enough that a Dog (``Dog 1``, 9 bytes as protobuf) is too large an answer.
LIMIT = 8


@dataclass
class Counter(Interceptor):
    """Counts the hooks the runner calls."""

    starts: int = 0
    ends: list[tuple[Code, str, str]] = field(default_factory=list)

    async def on_start(self, ctx: Context) -> None:
        self.starts += 1

    def on_end(self, ctx: Context, outcome: Outcome) -> None:
        self.ends.append((outcome.code, ctx.method.path, str(ctx.dialect)))


@dataclass(frozen=True)
class Row:
    """One refusal: the request, the HTTP status it gets, and the code interceptors see."""

    name: str
    dialect: str
    verb: str
    path: str
    headers: dict[str, str]
    status: int
    code: Code
    body: bytes = b""
    #: Where the code travels in a 200 answer: ``end`` (a Connect end-of-stream message),
    #: ``trailer`` (a gRPC-Web trailer frame); None: the status alone says it.
    in_band: str | None = None
    #: The method a plain route serves (its path is the route's).
    method: str = ""


PROTO = {"content-type": "application/proto"}
CONNECT_STREAM = {"content-type": "application/connect+json"}
GRPC_WEB = {"content-type": "application/grpc-web+proto"}

HTTP_ROWS = [
    # Connect
    Row("415", "connect", "POST", "/GetDog", {"content-type": "text/plain"}, 415,
        Code.UNIMPLEMENTED),
    Row("405 verb", "connect", "PUT", "/GetDog", PROTO, 405, Code.UNIMPLEMENTED),
    Row("405 GET with side effects", "connect", "GET", "/AdoptDogs?encoding=json&message=%7B%7D",
        {}, 405, Code.UNIMPLEMENTED),
    Row("bad protocol version", "connect", "POST", "/GetDog",
        {**PROTO, "connect-protocol-version": "2"}, 400, Code.INVALID_ARGUMENT),
    Row("bad timeout", "connect", "POST", "/GetDog", {**PROTO, "connect-timeout-ms": "-1"},
        400, Code.INVALID_ARGUMENT),
    Row("unknown compression", "connect", "POST", "/GetDog",
        {**PROTO, "content-encoding": "nope"}, 501, Code.UNIMPLEMENTED),
    Row("unknown compression, stream", "connect", "POST", "/JsonStream",
        {**CONNECT_STREAM, "connect-content-encoding": "nope"}, 200, Code.UNIMPLEMENTED,
        in_band="end"),
    Row("oversized answer", "connect", "POST", "/GetDog", PROTO, 429, Code.RESOURCE_EXHAUSTED,
        body=b"\x08\x01"),
    Row("unknown method", "connect", "POST", "/Nope", PROTO, 404, Code.UNIMPLEMENTED),
    # gRPC-Web
    Row("415", "grpc-web", "POST", "/GetDog", {"content-type": "application/grpc-web+xml"}, 415,
        Code.UNIMPLEMENTED),
    Row("405 verb", "grpc-web", "GET", "/GetDog", GRPC_WEB, 405, Code.UNIMPLEMENTED),
    Row("bad timeout", "grpc-web", "POST", "/GetDog", {**GRPC_WEB, "grpc-timeout": "soon"}, 200,
        Code.INVALID_ARGUMENT, in_band="trailer"),
    Row("unknown compression", "grpc-web", "POST", "/GetDog",
        {**GRPC_WEB, "grpc-encoding": "nope"}, 200, Code.UNIMPLEMENTED, in_band="trailer"),
    Row("unknown method", "grpc-web", "POST", "/Nope", GRPC_WEB, 404, Code.UNIMPLEMENTED),
    # Plain routes (REST)
    Row("406 stream", "plain", "GET", "/api/json_stream", {"accept": "image/png"}, 406,
        Code.INVALID_ARGUMENT, method="/JsonStream"),
    Row("406 unary", "plain", "GET", "/api/dogs/1", {"accept": "image/png"}, 406,
        Code.INVALID_ARGUMENT, method="/GetDog"),
    Row("bad timeout", "plain", "GET", "/api/dogs/1", {"connect-timeout-ms": "soon"}, 400,
        Code.INVALID_ARGUMENT, method="/GetDog"),
    Row("oversized answer", "plain", "GET", "/api/dogs/1", {}, 429, Code.RESOURCE_EXHAUSTED,
        method="/GetDog"),
]  # fmt: skip


def _path(row: Row) -> str:
    """The method's path, as interceptors and the access log name it."""
    return SERVICE + (row.method or row.path.split("?")[0])


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rpckit.access"]


@pytest.fixture
def counted(tmp_path: Path) -> tuple[Counter, Any]:
    counter = Counter()
    app = create_app(
        [StreamsExample(tmp_path)],
        interceptors=[counter, AccessLog()],
        options=BridgeOptions(max_message_size=LIMIT),
    )
    return counter, app


def _in_band_code(row: Row, body: bytes) -> Code:
    """The code a 200 answer carries in its last envelope."""
    messages = list(EnvelopeReader(1 << 20).feed(body))
    flags, data = messages[-1]
    if row.in_band == "end":
        assert flags & FLAG_END_STREAM
        return Code.from_connect_name(json.loads(data)["error"]["code"])
    assert flags & 0x80
    return Code(int(parse_trailers(data)["grpc-status"]))


@pytest.mark.parametrize("row", HTTP_ROWS, ids=lambda row: f"{row.dialect} {row.name}")
async def test_a_refusal_ends_once_through_the_runner(
    row: Row, counted: tuple[Counter, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rpckit.access")
    counter, app = counted
    path = row.path if row.dialect == "plain" else SERVICE + row.path
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.request(row.verb, path, headers=row.headers, content=row.body)
    assert response.status_code == row.status, response.text
    if row.in_band is None:
        assert response.json()["code"] == row.code.connect_name
    else:
        assert _in_band_code(row, response.content) is row.code
    assert counter.ends == [(row.code, _path(row), row.dialect)]
    assert counter.starts == 1
    (line,) = _access_lines(caplog)
    assert f"method={_path(row)} " in line
    assert f" dialect={row.dialect} code={row.code.name} " in line


# --- WebSocket ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SocketRow:
    name: str
    path: str
    subprotocols: tuple[str, ...]
    headers: tuple[tuple[bytes, bytes], ...]
    first: str | None
    code: Code
    #: Accepted, then closed with this WebSocket close code; None: refused at the handshake.
    close: int | None


SOCKET_ROWS = [
    SocketRow("refused sub-protocol", "/GetDog", ("rpckit.v1.xml",), (), None,
              Code.UNIMPLEMENTED, None),
    SocketRow("origin not allowed", "/GetDog", ("rpckit.v1.json",),
              ((b"origin", b"http://elsewhere.example"),), None, Code.PERMISSION_DENIED, None),
    SocketRow("bad first frame", "/GetDog", ("rpckit.v1.json",), (), '{"type":"end"}',
              Code.INVALID_ARGUMENT, 1008),
    SocketRow("unknown method", "/Nope", ("rpckit.v1.json",), (), None, Code.UNIMPLEMENTED,
              None),
]  # fmt: skip


async def _websocket(app: Any, row: SocketRow) -> list[MutableMapping[str, Any]]:
    """One WebSocket exchange with the ASGI app in-process; what the app sent."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    inbox.put_nowait({"type": "websocket.connect"})
    if row.first is not None:
        inbox.put_nowait({"type": "websocket.receive", "text": row.first})
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "websocket.close":
            inbox.put_nowait({"type": "websocket.disconnect", "code": message.get("code", 1000)})

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": SERVICE + row.path,
        "raw_path": (SERVICE + row.path).encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *row.headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "subprotocols": list(row.subprotocols),
    }
    await asyncio.wait_for(app(scope, receive, send), 10)
    return sent


@pytest.mark.parametrize("row", SOCKET_ROWS, ids=lambda row: f"websocket {row.name}")
async def test_a_refused_websocket_ends_once_through_the_runner(
    row: SocketRow, counted: tuple[Counter, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rpckit.access")
    counter, app = counted
    sent = await _websocket(app, row)
    accepted = any(m["type"] == "websocket.accept" for m in sent)
    if row.close is None:
        assert not accepted  # refused at the handshake: the server answers 403
    else:
        assert accepted
        assert sent[-1] == {"type": "websocket.close", "code": row.close}
    path = SERVICE + row.path
    assert counter.ends == [(row.code, path, "websocket")]
    (line,) = _access_lines(caplog)
    assert f"method={path} transport=websocket dialect=websocket code={row.code.name} " in line
