"""What a handler controls through its Context, the same on gRPC and Connect, checked on
the wire: headers sent with an error, headers before the first message, and response
compression per call and per message (grpc's interop cases ``echo_metadata_with_status``,
``server_compressed_unary`` and ``server_compressed_streaming``); what it reads from it: the
transport and dialect (typed enums), the request's compression (``unknown`` on gRPC, where
grpcio hides it: grpc's ``client_compressed_unary`` must not read it as uncompressed) and an
upload's file name."""

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
from examples.streams.v1.streams_rpckit import StreamsServiceMethods
from rpckit import Code, Context, Metadata, RpcError
from rpckit.context import UNKNOWN_COMPRESSION, Dialect, Transport
from rpckit.grpc import GrpcServer
from rpckit.http import create_app
from rpckit.serving.http_server import HttpServer
from tests.h2wire import grpc_call

pytestmark = pytest.mark.loopback

SERVICE = "examples.streams.v1.StreamsService"
ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"


class Controlled(StreamsExample):
    """Handlers that set headers, fail and choose compression as the request asks."""

    def __init__(self, files_dir: Path) -> None:
        super().__init__(files_dir)
        self.go = asyncio.Event()
        #: (transport, dialect, request_compression) of every GetDog call, in order.
        self.seen: list[tuple[Transport, Dialect, str | None]] = []

    def _apply(self, ctx: Context) -> None:
        headers = ctx.request_headers
        if (value := headers.get(ECHO_INITIAL)) is not None:
            ctx.response_headers[ECHO_INITIAL] = value
        if (value := headers.get(ECHO_TRAILING)) is not None:
            ctx.response_trailers[ECHO_TRAILING] = value
        if (choice := headers.get("x-compress")) is not None:
            ctx.set_response_compression(None if choice == "none" else choice)

    async def get_dog(self, request: GetDogRequest, ctx: Context) -> Dog:
        self.seen.append((ctx.transport, ctx.dialect, ctx.request_compression))
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


# --- transport and dialect ------------------------------------------------------------------

GET_DOG = StreamsServiceMethods.get_dog


@pytest.mark.parametrize(
    ("transport", "dialect", "expected"),
    [
        ("grpc", None, (Transport.GRPC, Dialect.GRPC)),
        ("http", "connect", (Transport.HTTP, Dialect.CONNECT)),
        ("http", "grpc-web", (Transport.HTTP, Dialect.GRPC_WEB)),
        ("http", "plain", (Transport.HTTP, Dialect.PLAIN)),
        ("websocket", "websocket", (Transport.WEBSOCKET, Dialect.WEBSOCKET)),
        ("websocket", None, (Transport.WEBSOCKET, Dialect.WEBSOCKET)),
        (Transport.HTTP, Dialect.CONNECT, (Transport.HTTP, Dialect.CONNECT)),
    ],
)
def test_context_turns_the_strings_transports_pass_into_enums(
    transport: str, dialect: str | None, expected: tuple[Transport, Dialect]
) -> None:
    ctx = Context(GET_DOG, transport=transport, dialect=dialect)
    assert (ctx.transport, ctx.dialect) == expected
    assert type(ctx.transport) is Transport
    assert type(ctx.dialect) is Dialect
    # string enums: the values the endpoints and interceptors compare with still match
    assert ctx.transport == expected[0].value
    assert ctx.dialect == expected[1].value
    assert f"{ctx.transport} {ctx.dialect}" == f"{expected[0].value} {expected[1].value}"


def test_context_refuses_an_unknown_transport_or_dialect_or_an_http_call_without_one() -> None:
    with pytest.raises(ValueError, match="'h3'"):
        Context(GET_DOG, transport="h3")
    with pytest.raises(ValueError, match="'soap'"):
        Context(GET_DOG, transport="http", dialect="soap")
    with pytest.raises(ValueError, match="needs a dialect"):
        Context(GET_DOG, transport="http")


async def test_grpc_and_connect_calls_see_their_transport_and_dialect(served: Served) -> None:
    async with grpc.aio.insecure_channel(served.grpc_address) as channel:
        get_dog: Any = channel.unary_unary(
            f"/{SERVICE}/GetDog",
            request_serializer=GetDogRequest.SerializeToString,
            response_deserializer=Dog.FromString,
        )
        await asyncio.wait_for(get_dog(GetDogRequest(index=1)), 5)
    async with httpx.AsyncClient(base_url=served.http_url) as http:
        response = await http.post(f"/{SERVICE}/GetDog", json={"index": 1})
        assert response.status_code == 200
    kinds = [(transport, dialect) for transport, dialect, _ in served.service.seen]
    assert kinds == [(Transport.GRPC, Dialect.GRPC), (Transport.HTTP, Dialect.CONNECT)]
    assert all(type(t) is Transport and type(d) is Dialect for t, d in kinds)


# --- client_compressed_unary: the request's compression -------------------------------------


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.NoCompression])
async def test_grpc_request_compression_is_unknown_never_uncompressed(
    served: Served, compression: grpc.Compression
) -> None:
    """grpcio strips ``grpc-encoding`` from the metadata it gives the handler and offers no
    other way to read it: the context says ``unknown`` either way, never None."""
    async with grpc.aio.insecure_channel(served.grpc_address) as channel:
        get_dog: Any = channel.unary_unary(
            f"/{SERVICE}/GetDog",
            request_serializer=GetDogRequest.SerializeToString,
            response_deserializer=Dog.FromString,
        )
        dog = await asyncio.wait_for(get_dog(GetDogRequest(index=300), compression=compression), 5)
    assert dog.name == "x" * 300
    [(_, _, seen)] = served.service.seen
    assert seen == UNKNOWN_COMPRESSION == "unknown"
    assert seen is not None


# --- an upload's file name ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ('attachment; filename="report.pdf"', "report.pdf"),
        ("attachment; filename*=UTF-8''%C3%A9t%C3%A9.txt", "\u00e9t\u00e9.txt"),
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ('attachment; filename=".."', None),
        ("attachment", None),
        (None, None),
    ],
)
def test_upload_filename_is_the_sanitised_content_disposition_name(
    disposition: str | None, expected: str | None
) -> None:
    headers = Metadata() if disposition is None else Metadata({"content-disposition": disposition})
    ctx = Context(GET_DOG, transport="grpc", request_headers=headers)
    assert ctx.upload_filename == expected
