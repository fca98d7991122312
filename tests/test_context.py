"""What a handler controls through its Context, the same on gRPC and Connect, checked on
the wire: headers sent with an error, headers before the first message, and response
compression per call and per message (grpc's interop cases ``echo_metadata_with_status``,
``server_compressed_unary`` and ``server_compressed_streaming``)."""

from __future__ import annotations

import asyncio
import gzip
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from examples.streams.server import StreamsExample
from examples.streams.v1.streams_pb2 import ChatMessage, Dog, GetDogRequest, JsonStreamRequest
from rpckit import Code, Context, RpcError
from rpckit.grpc import GrpcServer
from rpckit.http import create_app
from rpckit.serving.http_server import HttpServer
from tests.h2wire import grpc_call

SERVICE = "examples.streams.v1.StreamsService"
ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"


class Controlled(StreamsExample):
    """Handlers that set headers, fail and choose compression as the request asks."""

    def __init__(self, files_dir: Path) -> None:
        super().__init__(files_dir)
        self.go = asyncio.Event()

    def _apply(self, ctx: Context) -> None:
        headers = ctx.request_headers
        if (value := headers.get(ECHO_INITIAL)) is not None:
            ctx.response_headers[ECHO_INITIAL] = value
        if (value := headers.get(ECHO_TRAILING)) is not None:
            ctx.response_trailers[ECHO_TRAILING] = value
        if (choice := headers.get("x-compress")) is not None:
            ctx.set_response_compression(None if choice == "none" else choice)

    async def get_dog(self, request: GetDogRequest, ctx: Context) -> Dog:
        self._apply(ctx)
        if ctx.request_headers.get("x-fail"):
            raise RpcError(Code.UNKNOWN, "test status message")
        return Dog(name="x" * request.index)

    async def json_stream(  # type: ignore[override]
        self, request: JsonStreamRequest, ctx: Context
    ) -> AsyncIterator[Dog]:
        self._apply(ctx)
        if ctx.request_headers.get("x-early"):
            await ctx.send_headers()
            await self.go.wait()  # the client has seen the headers, before any message
        yield Dog(name="first " + "x" * 100)
        ctx.disable_next_message_compression()
        yield Dog(name="second " + "x" * 100)

    async def chat(  # type: ignore[override]
        self, requests: AsyncIterator[ChatMessage], ctx: Context
    ) -> AsyncIterator[ChatMessage]:
        ctx.response_headers["x-ready"] = "yes"
        await ctx.send_headers()  # before the first message: the client may wait for it
        async for message in requests:
            yield ChatMessage(text=message.text.upper())


@dataclass
class Served:
    service: Controlled
    grpc_address: str
    http_url: str


@pytest.fixture
async def served(files_dir: Path) -> AsyncIterator[Served]:
    service = Controlled(files_dir)
    grpc_server = GrpcServer([service])
    grpc_port = await grpc_server.start("127.0.0.1:0")
    http_server = HttpServer(create_app([service]), grace=1)
    http_port = await http_server.start("127.0.0.1:0")
    try:
        yield Served(service, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}")
    finally:
        await http_server.stop()
        await grpc_server.stop(0)


# --- echo_metadata_with_status --------------------------------------------------------------


async def test_grpc_headers_set_before_a_failure_are_sent(served: Served) -> None:
    response = await grpc_call(
        served.grpc_address,
        f"/{SERVICE}/GetDog",
        [GetDogRequest(index=1).SerializeToString()],
        [(ECHO_INITIAL, "test_initial_metadata_value"), (ECHO_TRAILING, "q6urqw"), ("x-fail", "1")],
    )
    assert response.headers[ECHO_INITIAL] == "test_initial_metadata_value"
    assert response.trailers["grpc-status"] == "2"
    assert response.trailers["grpc-message"] == "test status message"
    assert response.trailers[ECHO_TRAILING] == "q6urqw"


async def test_connect_headers_set_before_a_failure_are_sent(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.http_url) as http:
        response = await http.post(
            f"/{SERVICE}/GetDog",
            json={"index": 1},
            headers={ECHO_INITIAL: "v1", ECHO_TRAILING: "q6urqw", "x-fail": "1"},
        )
    assert response.status_code == 500
    assert response.json() == {"code": "unknown", "message": "test status message"}
    assert response.headers[ECHO_INITIAL] == "v1"
    assert response.headers[f"trailer-{ECHO_TRAILING}"] == "q6urqw"


# --- headers before the first message -------------------------------------------------------


async def test_grpc_bidi_client_gets_headers_before_sending(served: Served) -> None:
    async with grpc.aio.insecure_channel(served.grpc_address) as channel:
        chat: Any = channel.stream_stream(
            f"/{SERVICE}/Chat",
            request_serializer=ChatMessage.SerializeToString,
            response_deserializer=ChatMessage.FromString,
        )
        call = chat()
        metadata = await asyncio.wait_for(call.initial_metadata(), 5)
        assert ("x-ready", "yes") in list(metadata)
        await call.write(ChatMessage(text="hi"))
        assert (await call.read()).text == "HI"
        await call.done_writing()
        assert await call.code() is grpc.StatusCode.OK


async def test_connect_stream_headers_arrive_before_the_first_message(served: Served) -> None:
    async with (
        httpx.AsyncClient(base_url=served.http_url) as http,
        http.stream(
            "POST",
            f"/{SERVICE}/JsonStream",
            content=struct.pack(">BI", 0, 2) + b"{}",
            headers={"content-type": "application/connect+json", "x-early": "1", ECHO_INITIAL: "v"},
        ) as response,
    ):
        # The handler is still waiting for ``go``: these headers came from send_headers().
        assert response.headers[ECHO_INITIAL] == "v"
        served.service.go.set()
        body = await response.aread()
    assert b"first" in body
    assert b"second" in body


# --- server_compressed_unary / server_compressed_streaming ----------------------------------


@pytest.mark.parametrize("compress", [True, False])
async def test_grpc_server_compressed_unary(served: Served, compress: bool) -> None:
    response = await grpc_call(
        served.grpc_address,
        f"/{SERVICE}/GetDog",
        [GetDogRequest(index=314).SerializeToString()],
        [("x-compress", "gzip" if compress else "none")],
    )
    assert response.trailers["grpc-status"] == "0"
    [(flag, payload)] = response.messages
    assert flag == (1 if compress else 0)
    assert Dog.FromString(payload).name == "x" * 314
    if compress:
        assert response.headers["grpc-encoding"] == "gzip"


async def test_grpc_server_compressed_streaming(served: Served) -> None:
    response = await grpc_call(
        served.grpc_address,
        f"/{SERVICE}/JsonStream",
        [JsonStreamRequest().SerializeToString()],
        [("x-compress", "gzip")],
    )
    assert response.trailers["grpc-status"] == "0"
    flags = [flag for flag, _ in response.messages]
    names = [Dog.FromString(payload).name.split()[0] for _, payload in response.messages]
    assert (flags, names) == ([1, 0], ["first", "second"])


@pytest.mark.parametrize(("choice", "size"), [("gzip", 10), ("none", 4000)])
async def test_connect_unary_compression_chosen_by_the_handler(
    served: Served, choice: str, size: int
) -> None:
    async with httpx.AsyncClient(base_url=served.http_url) as http:
        response = await http.post(
            f"/{SERVICE}/GetDog",
            json={"index": size},
            headers={"x-compress": choice, "accept-encoding": "gzip"},
        )
    assert response.status_code == 200
    # gzip on a 10-name message the bridge would not compress by itself; none on 4 kB it would.
    assert response.headers.get("content-encoding") == ("gzip" if choice == "gzip" else None)
    assert response.json()["name"] == "x" * size


async def test_connect_stream_compression_per_message(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.http_url) as http:
        response = await http.post(
            f"/{SERVICE}/JsonStream",
            content=struct.pack(">BI", 0, 2) + b"{}",
            headers={
                "content-type": "application/connect+json",
                "connect-accept-encoding": "gzip",
                "x-compress": "gzip",
            },
        )
    assert response.headers["connect-content-encoding"] == "gzip"
    body, frames = response.content, []
    while body:
        flag, length = struct.unpack_from(">BI", body)
        frames.append((flag, body[5 : 5 + length]))
        body = body[5 + length :]
    assert [flag for flag, _ in frames] == [1, 0, 2]
    assert b"first" in gzip.decompress(frames[0][1])
    assert b"second" in frames[1][1]
