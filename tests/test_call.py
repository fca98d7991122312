"""One failure, one answer: every outcome maps to the same status on every transport.

A handler misbehaves in the way the ``x-fail`` header names; the table checks the code and
message a real client sees over gRPC, Connect (unary and stream) and plain routes (unary,
stream and upload), that no traceback text leaks, and that the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
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
from rpckit.call import Drain
from rpckit.grpc import GrpcServer, GrpcTransport
from rpckit.http import ConnectTransport, create_app
from rpckit.serving.http_server import HttpServer
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
    service: Misbehaving
    grpc_address: str
    http_url: str
    grpc_drain: Drain
    http_drain: Drain


@pytest.fixture
async def served(files_dir: Path) -> AsyncIterator[Served]:
    service = Misbehaving(files_dir)
    grpc_server = GrpcServer([service], max_message_size=LIMIT)
    grpc_port = await grpc_server.start("127.0.0.1:0")
    app = create_app([service], max_message_size=LIMIT)
    http_server = HttpServer(app, grace=1)
    http_port = await http_server.start("127.0.0.1:0")
    try:
        yield Served(
            service,
            f"127.0.0.1:{grpc_port}",
            f"http://127.0.0.1:{http_port}",
            grpc_server.runner.drain,
            app.drain,
        )
    finally:
        await http_server.stop()
        await grpc_server.stop(0)


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


async def grpc_unary(served: Served, kind: str) -> Answer:
    async with GrpcTransport(served.grpc_address) as transport:
        return await _rpckit(served, kind, transport, "unary")


async def grpc_stream(served: Served, kind: str) -> Answer:
    async with GrpcTransport(served.grpc_address) as transport:
        return await _rpckit(served, kind, transport, "stream")


async def connect_unary(served: Served, kind: str) -> Answer:
    async with ConnectTransport(served.http_url) as transport:
        return await _rpckit(served, kind, transport, "unary")


async def connect_stream(served: Served, kind: str) -> Answer:
    async with ConnectTransport(served.http_url) as transport:
        return await _rpckit(served, kind, transport, "stream")


def _plain_headers(kind: str) -> dict[str, str]:
    headers = {"x-fail": kind}
    if kind == "deadline":
        headers["connect-timeout-ms"] = "300"
    return headers


async def plain_unary(served: Served, kind: str) -> Answer:
    async with httpx.AsyncClient(base_url=served.http_url) as http:
        response = await http.get("/api/dogs/1", headers=_plain_headers(kind))
    assert response.status_code != 200, response.text
    return _from_http(response)


async def plain_stream(served: Served, kind: str) -> Answer:
    async with httpx.AsyncClient(base_url=served.http_url) as http:
        response = await http.get("/api/json_stream", headers=_plain_headers(kind))
    assert response.status_code != 200, response.text  # failed before the first item
    return _from_http(response)


async def plain_upload(served: Served, kind: str) -> Answer:
    headers = {**_plain_headers(kind), "content-type": "application/x-ndjson"}
    async with httpx.AsyncClient(base_url=served.http_url) as http:
        response = await http.post("/api/dogs:adopt", content=b'{"name":"Rex"}\n', headers=headers)
    assert response.status_code != 200, response.text
    return _from_http(response)


TRANSPORTS: dict[str, Call] = {
    "grpc_unary": grpc_unary,
    "grpc_stream": grpc_stream,
    "connect_unary": connect_unary,
    "connect_stream": connect_stream,
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


async def _still_serving(served: Served) -> None:
    async with GrpcTransport(served.grpc_address) as transport:
        dog = await StreamsServiceClient(transport).get_dog(GetDogRequest(index=2))
    assert dog.name == "Dog 2"
    async with httpx.AsyncClient(base_url=served.http_url) as http:
        response = await http.get("/api/dogs/2")
    assert response.json()["name"] == "Dog 2"


@pytest.mark.parametrize("kind", list(HANDLER_FAILURES))
@pytest.mark.parametrize("transport", list(TRANSPORTS))
async def test_handler_failures_look_the_same_everywhere(
    served: Served, transport: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    call = asyncio.ensure_future(TRANSPORTS[transport](served, kind))
    if kind == "drain":
        await asyncio.wait_for(served.service.started.wait(), 10)
        drain = served.grpc_drain if transport.startswith("grpc") else served.http_drain
        drain.set()
    code, message, seen = await asyncio.wait_for(call, 10)
    expected_code, expected_message = HANDLER_FAILURES[kind]
    assert code is expected_code, (code, message)
    # grpcio's client reports an expired deadline itself, in its own capitals.
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
    async with grpc.aio.insecure_channel(served.grpc_address) as channel:
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
    async with httpx.AsyncClient(base_url=served.http_url) as http:
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


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("payload", ["malformed", "oversized"])
async def test_bad_requests_look_the_same_on_grpc_and_connect(
    served: Served, payload: str, streaming: bool
) -> None:
    data = MALFORMED if payload == "malformed" else OVERSIZED
    method = "JsonStream" if streaming else "GetDog"
    if streaming:
        data = data.replace(b"\x08\x01", b"", 1)  # JsonStreamRequest has no field 1 varint
    over_grpc = await _grpc_raw(served, method, data, streaming)
    over_connect = await _connect_raw(served, method, data, streaming)
    expected = Code.INVALID_ARGUMENT if payload == "malformed" else Code.RESOURCE_EXHAUSTED
    assert over_grpc[0] is expected
    assert over_connect[0] is expected
    assert over_grpc[1] == over_connect[1], (over_grpc, over_connect)
    if payload == "oversized":
        assert over_grpc[1] == f"request message is larger than the limit of {LIMIT} bytes"
    await _still_serving(served)


async def test_oversized_and_malformed_uploads_on_plain_routes(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.http_url) as http:
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


async def test_unknown_methods_are_unimplemented_everywhere(served: Served) -> None:
    async with grpc.aio.insecure_channel(served.grpc_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(f"/{SERVICE}/Nope")(b"")
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    async with httpx.AsyncClient(base_url=served.http_url) as http:
        connect = await http.post(
            f"/{SERVICE}/Nope", content=b"{}", headers={"content-type": "application/json"}
        )
        plain = await http.get("/api/nope")
    assert (connect.status_code, connect.json()["code"]) == (404, "unimplemented")
    assert (plain.status_code, plain.json()["code"]) == (404, "unimplemented")


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
        assert CallRunner(loop=loop).current_task() is here
        assert CallRunner(loop=other).current_task() is here
        inner = await asyncio.create_task(_current(CallRunner(loop=loop)))
        assert inner is not here
    finally:
        other.close()


async def _current(runner: Any) -> Any:
    task = runner.current_task()
    assert task is asyncio.current_task()
    return task
