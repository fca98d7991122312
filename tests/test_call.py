"""One failure, one answer: every outcome maps to the same status on every transport.

A handler misbehaves in the way the ``x-fail`` header names; the table checks the code and
message a real client sees over gRPC, Connect and gRPC-Web (unary, stream and upload) and
plain routes (unary, stream and upload), that no traceback text leaks, and that the server
keeps serving. The HTTP dialects run in-process (``rpckit.testing``); gRPC needs a loopback
socket (grpcio has no in-process channel), so its cases are marked ``loopback``.
"""

from __future__ import annotations

import asyncio
import json
import struct
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from examples.streams.server import StreamsExample
from examples.streams.v1.streams_pb2 import (
    AdoptionSummary,
    Dog,
    GetDogRequest,
    JsonStreamRequest,
)
from examples.streams.v1.streams_rpckit import StreamsServiceClient
from rpckit import Code, Context, RpcError
from rpckit.http import BridgeOptions
from rpckit.testing import InProcessBridge, LoopbackGrpc, bridge_for, grpc_for
from rpckit.v1.stream_pb2 import Text

LIMIT = 16 * 1024
SERVICE = "examples.streams.v1.StreamsService"
#: A GetDogRequest over the size limit: index 1 plus a large unknown field (number 15).
OVERSIZED = b"\x08\x01" + b"\x7a" + bytes([0x80, 0x80, 0x01]) + b"x" * (LIMIT + 10)
MALFORMED = b"\x0a\xff\xff\xff\xff\x0f"  # a length prefix far past the end


class Misbehaving(StreamsExample):
    """The example with handlers that fail on request, as ``x-fail`` says."""

    def __init__(self, files_dir: Path) -> None:
        super().__init__(files_dir)
        self.started = asyncio.Event()

    async def _fail(self, ctx: Context) -> Any:
        """What a misbehaving handler gives instead of its answer; None: behave."""
        kind = ctx.request_headers.get("x-fail")
        if kind == "rpc_error":
            raise RpcError(Code.NOT_FOUND, "no such dog")
        if kind == "exception":
            raise RuntimeError("secret-detail from the handler")
        if kind == "wrong_type":
            return Text(text="not a dog")
        if kind == "dict":
            return {"name": "Rex"}
        if kind in ("deadline", "drain"):
            self.started.set()
            await asyncio.Event().wait()  # until cancelled
        return None

    async def get_dog(self, request: GetDogRequest, ctx: Context) -> Dog:
        if ctx.request_headers.get("x-fail") == "none":
            return None  # type: ignore[return-value]
        failed = await self._fail(ctx)
        return failed if failed is not None else await super().get_dog(request, ctx)

    async def json_stream(  # type: ignore[override]
        self, request: JsonStreamRequest, ctx: Context
    ) -> AsyncIterator[Any]:
        if ctx.request_headers.get("x-fail") == "none":
            yield None
        failed = await self._fail(ctx)
        if failed is not None:
            yield failed
        yield Dog(name="Dog 0")

    async def adopt_dogs(self, requests: AsyncIterator[Dog], ctx: Context) -> AdoptionSummary:
        names = [dog.name async for dog in requests]
        if ctx.request_headers.get("x-fail") == "none":
            return None  # type: ignore[return-value]
        failed = await self._fail(ctx)
        return failed if failed is not None else AdoptionSummary(count=len(names), names=names)


@dataclass
class Served:
    """The service on the bridge in-process and, for tests marked loopback, on gRPC."""

    service: Misbehaving
    bridge: InProcessBridge
    loopback: LoopbackGrpc | None

    @property
    def grpc(self) -> LoopbackGrpc:
        assert self.loopback is not None, "a gRPC test must be marked loopback"
        return self.loopback


@pytest.fixture
async def served(files_dir: Path, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    service = Misbehaving(files_dir)
    options = BridgeOptions(max_message_size=LIMIT)
    async with bridge_for([service], options=options) as bridge:
        if request.node.get_closest_marker("loopback") is None:
            yield Served(service, bridge, None)
            return
        async with grpc_for([service], max_message_size=LIMIT) as grpc_served:
            yield Served(service, bridge, grpc_served)


Answer = tuple[Code, str, str]  # code, message, everything the client received as text
Call = Callable[[Served, str], Awaitable[Answer]]


def _from_error(error: RpcError) -> Answer:
    return error.code, error.message, repr(error) + repr(error.details)


def _from_http(response: httpx.Response) -> Answer:
    body = response.json()
    return Code.from_connect_name(body["code"]), body.get("message", ""), response.text


def _timeout(kind: str) -> float | None:
    return 0.3 if kind == "deadline" else None


async def _rpckit(served: Served, kind: str, transport: Any, call: str) -> Answer:
    client = StreamsServiceClient(transport)
    metadata = {"x-fail": kind}
    timeout = _timeout(kind)
    try:
        if call == "unary":
            await client.get_dog(GetDogRequest(index=1), metadata=metadata, timeout=timeout)
        elif call == "stream":
            stream = client.json_stream(JsonStreamRequest(), metadata=metadata, timeout=timeout)
            _ = [dog async for dog in stream]
        else:
            await client.adopt_dogs([Dog(name="Rex")], metadata=metadata, timeout=timeout)
    except RpcError as error:
        return _from_error(error)
    raise AssertionError(f"{kind} did not fail over {call}")


def _over(dialect: str, call: str) -> Call:
    async def over(served: Served, kind: str) -> Answer:
        if dialect == "grpc":
            async with served.grpc.transport() as transport:
                return await _rpckit(served, kind, transport, call)
        bridged = served.bridge.transport("connect" if dialect == "connect" else "grpc-web")
        return await _rpckit(served, kind, bridged, call)

    return over


def _plain_headers(kind: str) -> dict[str, str]:
    headers = {"x-fail": kind}
    if kind == "deadline":
        headers["connect-timeout-ms"] = "300"
    return headers


async def plain_unary(served: Served, kind: str) -> Answer:
    response = await served.bridge.http.get("/api/dogs/1", headers=_plain_headers(kind))
    assert response.status_code != 200, response.text
    return _from_http(response)


async def plain_stream(served: Served, kind: str) -> Answer:
    response = await served.bridge.http.get("/api/json_stream", headers=_plain_headers(kind))
    assert response.status_code != 200, response.text  # failed before the first item
    return _from_http(response)


async def plain_upload(served: Served, kind: str) -> Answer:
    headers = {**_plain_headers(kind), "content-type": "application/x-ndjson"}
    response = await served.bridge.http.post(
        "/api/dogs:adopt", content=b'{"name":"Rex"}\n', headers=headers
    )
    assert response.status_code != 200, response.text
    return _from_http(response)


TRANSPORTS: dict[str, Call] = {
    **{
        f"{dialect}_{call}": _over(dialect, call)
        for dialect in ("grpc", "connect", "grpc_web")
        for call in ("unary", "stream", "upload")
    },
    "plain_unary": plain_unary,
    "plain_stream": plain_stream,
    "plain_upload": plain_upload,
}
HANDLER_FAILURES = {
    "rpc_error": (Code.NOT_FOUND, "no such dog"),
    "exception": (Code.INTERNAL, "internal error"),
    "wrong_type": (Code.INTERNAL, "internal error"),
    "none": (Code.INTERNAL, "internal error"),
    "dict": (Code.INTERNAL, "internal error"),
    "deadline": (Code.DEADLINE_EXCEEDED, "deadline exceeded"),
    "drain": (Code.UNAVAILABLE, "the server is shutting down; retry"),
}


def _on_grpc(name: str) -> bool:
    """``grpc_unary``, ``grpc_raw``...: gRPC itself (``grpc_web_*`` is the bridge)."""
    return name.rsplit("_", 1)[0] == "grpc"


def _params(names: Iterable[str]) -> list[Any]:
    """Test parameters: the gRPC ones marked loopback, the others in-process."""
    return [
        pytest.param(name, marks=pytest.mark.loopback) if _on_grpc(name) else name for name in names
    ]


async def _still_serving(served: Served) -> None:
    if served.loopback is not None:
        async with served.grpc.transport() as transport:
            dog = await StreamsServiceClient(transport).get_dog(GetDogRequest(index=2))
        assert dog.name == "Dog 2"
    response = await served.bridge.http.get("/api/dogs/2")
    assert response.json()["name"] == "Dog 2"
    dog = await StreamsServiceClient(served.bridge.transport()).get_dog(GetDogRequest(index=3))
    assert dog.name == "Dog 3"


@pytest.mark.parametrize("kind", list(HANDLER_FAILURES))
@pytest.mark.parametrize("transport", _params(TRANSPORTS))
async def test_handler_failures_look_the_same_everywhere(
    served: Served, transport: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    call = asyncio.ensure_future(TRANSPORTS[transport](served, kind))
    if kind == "drain":
        await asyncio.wait_for(served.service.started.wait(), 10)
        if _on_grpc(transport):
            served.grpc.server.runner.drain.set()
        else:
            served.bridge.app.lifecycle.grace_over()
    code, message, seen = await asyncio.wait_for(call, 10)
    expected_code, expected_message = HANDLER_FAILURES[kind]
    assert code is expected_code, (code, message)
    # grpcio's client reports an expired deadline itself, in its own capitals; on a client
    # stream its core sometimes says "stream removed (deadline exceeded)" instead.
    if transport == "grpc_upload" and kind == "deadline":
        assert message.lower() in (expected_message, f"stream removed ({expected_message})")
    else:
        assert message.lower() == expected_message
    assert "Traceback" not in seen
    assert "secret-detail" not in seen
    if kind in ("wrong_type", "none", "dict"):
        assert "expected examples.streams.v1." in caplog.text  # the log names both types
    if kind != "drain":
        await _still_serving(served)


# --- failures before the handler: malformed, oversized, unknown -----------------------------


def _envelope(data: bytes) -> bytes:
    return struct.pack(">BI", 0, len(data)) + data


async def _grpc_raw(served: Served, method: str, data: bytes, streaming: bool) -> Answer:
    async with grpc.aio.insecure_channel(served.grpc.address) as channel:
        if streaming:
            call: Any = channel.unary_stream(f"/{SERVICE}/{method}")(data)
            try:
                _ = [item async for item in call]
            except grpc.aio.AioRpcError as error:
                return Code(error.code().value[0]), error.details() or "", str(error)
        else:
            try:
                await channel.unary_unary(f"/{SERVICE}/{method}")(data)
            except grpc.aio.AioRpcError as error:
                return Code(error.code().value[0]), error.details() or "", str(error)
    raise AssertionError("the call did not fail")


async def _connect_raw(served: Served, method: str, data: bytes, streaming: bool) -> Answer:
    http = served.bridge.http
    if not streaming:
        response = await http.post(
            f"/{SERVICE}/{method}", content=data, headers={"content-type": "application/proto"}
        )
        return _from_http(response)
    response = await http.post(
        f"/{SERVICE}/{method}",
        content=_envelope(data),
        headers={"content-type": "application/connect+proto"},
    )
    assert response.status_code == 200
    end = response.content[5:] if response.content[0] == 2 else response.content
    error = json.loads(end[end.index(b"{") :])["error"]
    return Code.from_connect_name(error["code"]), error["message"], response.text


async def _grpc_web_raw(served: Served, method: str, data: bytes, streaming: bool) -> Answer:
    response = await served.bridge.http.post(
        f"/{SERVICE}/{method}",
        content=_envelope(data),
        headers={"content-type": "application/grpc-web+proto"},
    )
    assert response.status_code == 200
    status: dict[str, str] = dict(response.headers)  # a trailers-only answer
    if "grpc-status" not in status:  # else the trailers frame (flag 0x80) ends the body
        body = response.content
        while body and body[0] != 0x80:
            body = body[5 + struct.unpack(">I", body[1:5])[0] :]
        assert body, "no trailers frame"
        lines = body[5:].decode().split("\r\n")
        status = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines if ln)}
    message = urllib.parse.unquote(status.get("grpc-message", ""))
    return Code(int(status["grpc-status"])), message, response.text


RAW: dict[str, Callable[[Served, str, bytes, bool], Awaitable[Answer]]] = {
    "grpc_raw": _grpc_raw,
    "connect_raw": _connect_raw,
    "grpc_web_raw": _grpc_web_raw,
}
BAD_REQUESTS = {"malformed": Code.INVALID_ARGUMENT, "oversized": Code.RESOURCE_EXHAUSTED}


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("payload", list(BAD_REQUESTS))
@pytest.mark.parametrize("side", _params(RAW))
async def test_bad_requests_look_the_same_everywhere(
    served: Served, side: str, payload: str, streaming: bool
) -> None:
    data = MALFORMED if payload == "malformed" else OVERSIZED
    method, input_type = (
        ("JsonStream", "JsonStreamRequest") if streaming else ("GetDog", "GetDogRequest")
    )
    if streaming:
        data = data.replace(b"\x08\x01", b"", 1)  # JsonStreamRequest has no field 1 varint
    code, message, seen = await RAW[side](served, method, data, streaming)
    assert code is BAD_REQUESTS[payload], seen
    if payload == "oversized":
        assert message == f"request message is larger than the limit of {LIMIT} bytes"
    else:  # the runner's prefix, then the protobuf runtime's own words (they name the type)
        assert message.startswith("invalid proto: "), message
        assert f"'examples.streams.v1.{input_type}'" in message, message
    await _still_serving(served)


async def test_oversized_and_malformed_uploads_on_plain_routes(served: Served) -> None:
    http = served.bridge.http
    big = b'{"name":"' + b"x" * LIMIT + b'"}\n'
    response = await http.post(
        "/api/dogs:adopt", content=big, headers={"content-type": "application/x-ndjson"}
    )
    code, message, _ = _from_http(response)
    assert code is Code.RESOURCE_EXHAUSTED
    assert message == f"request message is larger than the limit of {LIMIT} bytes"
    response = await http.post(
        "/api/dogs:adopt",
        content=b"{not json\n",
        headers={"content-type": "application/x-ndjson"},
    )
    assert _from_http(response)[0] is Code.INVALID_ARGUMENT
    await _still_serving(served)


async def test_unknown_methods_are_unimplemented_on_the_bridge(served: Served) -> None:
    http = served.bridge.http
    connect = await http.post(
        f"/{SERVICE}/Nope", content=b"{}", headers={"content-type": "application/json"}
    )
    plain = await http.get("/api/nope")
    assert (connect.status_code, connect.json()["code"]) == (404, "unimplemented")
    assert (plain.status_code, plain.json()["code"]) == (404, "unimplemented")
    grpc_web = await http.post(
        f"/{SERVICE}/Nope", content=_envelope(b""), headers={"content-type": "application/grpc-web"}
    )
    # No route, whatever the content type: the 404 a gRPC-Web client reads as unimplemented.
    assert grpc_web.status_code == 404
    assert Code.from_http_status(grpc_web.status_code) is Code.UNIMPLEMENTED


@pytest.mark.loopback
async def test_unknown_methods_are_unimplemented_on_grpc(served: Served) -> None:
    async with grpc.aio.insecure_channel(served.grpc.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(f"/{SERVICE}/Nope")(b"")
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_runner_finds_the_calls_task_with_and_without_its_loop() -> None:
    """``current_task`` is the running task, whether or not the runner was told its loop
    (``rpckit serve`` tells it, to avoid a system call per lookup), and a loop that is
    not the running one falls back to asyncio's own lookup."""
    from rpckit.call import CallRunner

    loop = asyncio.get_running_loop()
    other = asyncio.new_event_loop()
    try:
        here = asyncio.current_task()
        assert CallRunner().current_task() is here
        told, wrong = CallRunner(), CallRunner()
        told.loop, wrong.loop = loop, other  # what the bridge's Lifecycle.serving_on does
        assert told.current_task() is here
        assert wrong.current_task() is here
        inner = await asyncio.create_task(_current(told))
        assert inner is not here
    finally:
        other.close()


async def _current(runner: Any) -> Any:
    task = runner.current_task()
    assert task is asyncio.current_task()
    return task
