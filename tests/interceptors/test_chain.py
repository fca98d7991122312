"""Server interceptors on every transport: order, rejection before the handler, per-message
wrapping, and the final outcome for success, error, cancel and deadline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.streams.server import StreamsExample
from examples.streams.v1.streams_pb2 import (
    ChatMessage,
    Dog,
    GetDogRequest,
    JsonStreamRequest,
    TextStreamRequest,
)
from examples.streams.v1.streams_rpckit import StreamsServiceClient
from rpckit import Code, Context, RpcError
from rpckit.grpc import GrpcServer, GrpcTransport
from rpckit.http import ConnectTransport, create_app
from rpckit.interceptors import Interceptor, InterceptorChain, Outcome
from rpckit.serving.http_server import HttpServer

pytestmark = pytest.mark.loopback


@dataclass
class Recorder(Interceptor):
    """Records every hook call into a shared log; rewrites messages when asked to."""

    name: str
    log: list[tuple[str, ...]]
    ended: dict[str, Outcome] = field(default_factory=dict)
    end_event: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_start(self, ctx: Context) -> None:
        self.log.append((self.name, "start", ctx.method.name, ctx.transport, ctx.dialect))
        if ctx.request_headers.get("x-deny") == self.name:
            raise RpcError(Code.PERMISSION_DENIED, f"{self.name} says no")

    async def on_request(self, ctx: Context, message: Any) -> Any:
        self.log.append((self.name, "request", type(message).__name__))
        if isinstance(message, GetDogRequest) and ctx.request_headers.get("x-bump"):
            return GetDogRequest(index=message.index + 1)
        return message

    async def on_response(self, ctx: Context, message: Any) -> Any:
        self.log.append((self.name, "response", type(message).__name__))
        if isinstance(message, Dog) and ctx.request_headers.get("x-bump"):
            return Dog(name=message.name + f" ({self.name})", age=message.age)
        return message

    def on_end(self, ctx: Context, outcome: Outcome) -> None:
        self.log.append((self.name, "end", outcome.code.name))
        self.ended[ctx.method.name] = outcome
        self.end_event.set()


class Counting(StreamsExample):
    def __init__(self, files_dir: Path) -> None:
        super().__init__(files_dir)
        self.handled = 0

    async def get_dog(self, request: GetDogRequest, ctx: Context) -> Dog:
        self.handled += 1
        if request.index == 99:
            await asyncio.Event().wait()  # until the deadline
        return await super().get_dog(request, ctx)


@dataclass
class Served:
    service: Counting
    first: Recorder
    second: Recorder
    log: list[tuple[str, ...]]
    grpc_address: str
    http_url: str

    def names(self, kind: str) -> list[str]:
        return [entry[0] for entry in self.log if entry[1] == kind]


@pytest.fixture
async def served(files_dir: Path) -> AsyncIterator[Served]:
    log: list[tuple[str, ...]] = []
    first, second = Recorder("A", log), Recorder("B", log)
    service = Counting(files_dir)
    grpc_server = GrpcServer([service], interceptors=[first, second])
    grpc_port = await grpc_server.start("127.0.0.1:0")
    http_server = HttpServer(create_app([service], interceptors=[first, second]), grace=1)
    http_port = await http_server.start("127.0.0.1:0")
    try:
        yield Served(
            service, first, second, log, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}"
        )
    finally:
        await http_server.stop()
        await grpc_server.stop(0)


def test_chain_calls_only_overridden_hooks() -> None:
    class OnlyEnd(Interceptor):
        def on_end(self, ctx: Context, outcome: Outcome) -> None:
            pass

    chain = InterceptorChain([OnlyEnd()])
    assert (chain.starts, chain.requests, chain.responses) == ((), (), ())
    assert len(chain.ends) == 1
    assert not InterceptorChain([])
    with pytest.raises(TypeError):
        InterceptorChain([object()])  # type: ignore[list-item]


@pytest.mark.parametrize("transport", ["grpc", "connect"])
async def test_order_and_wrapping_for_every_shape(served: Served, transport: str) -> None:
    make: Any = (
        (lambda: GrpcTransport(served.grpc_address))
        if transport == "grpc"
        else (lambda: ConnectTransport(served.http_url))
    )
    async with make() as t:
        client = StreamsServiceClient(t)
        dog = await client.get_dog(GetDogRequest(index=1), metadata={"x-bump": "1"})
        # Both bumped the index; per-message hooks run first to last in both directions.
        assert dog.name == "Dog 3 (A) (B)"
        assert served.names("start") == ["A", "B"]
        assert served.names("end") == ["B", "A"]
        assert served.first.ended["GetDog"].code is Code.OK
        assert served.first.ended["GetDog"].messages_out == 1
        served.log.clear()
        dogs = [d async for d in client.json_stream(JsonStreamRequest(interval_ms=0))]
        assert len(dogs) == 10
        assert served.names("response") == ["A", "B"] * 10
        assert served.first.ended["JsonStream"].messages_out == 10
        if transport == "grpc":  # every message counted as framed, the streamed ones too
            framed = sum(len(d.SerializeToString()) + 5 for d in dogs)
            assert served.first.ended["JsonStream"].bytes_out == framed
        served.log.clear()
        summary = await client.adopt_dogs([Dog(name="Rex"), Dog(name="Fido")])
        assert summary.count == 2
        assert served.names("request") == ["A", "B", "A", "B"]
        assert served.first.ended["AdoptDogs"].messages_in == 2
    expected_dialect = "grpc" if transport == "grpc" else "connect"
    assert served.log[0][4] == expected_dialect


async def test_grpc_bidi_is_intercepted(served: Served) -> None:
    async with GrpcTransport(served.grpc_address) as t:
        replies = StreamsServiceClient(t).chat([ChatMessage(text="a"), ChatMessage(text="b")])
        assert [m.text async for m in replies] == ["A", "B"]
    assert served.names("request") == ["A", "B", "A", "B"]
    assert served.names("response") == ["A", "B", "A", "B"]
    assert served.first.ended["Chat"].code is Code.OK


async def test_plain_routes_are_intercepted(served: Served, files_dir: Path) -> None:
    async with httpx.AsyncClient(base_url=served.http_url) as http:
        dog = await http.get("/api/dogs/1", headers={"x-bump": "1"})
        assert dog.json()["name"] == "Dog 3 (A) (B)"
        assert served.log[0] == ("A", "start", "GetDog", "http", "plain")
        served.log.clear()
        sse = await http.get("/api/json_stream", headers={"accept": "text/event-stream"})
        assert sse.text.count('"name":"Dog ') == 10
        assert served.names("response") == ["A", "B"] * 10
        served.log.clear()
        upload = await http.post(
            "/api/upload_as_bytestream", content=b"x" * 1000, headers={"x-content-size": "1000"}
        )
        assert upload.json()["size"] == "1000"  # int64 is a JSON string
        assert served.first.ended["UploadAsByteStream"].code is Code.OK
        assert served.first.ended["UploadAsByteStream"].bytes_in == 1000
        served.log.clear()
        download = await http.get("/api/files/data.bin")
        assert len(download.content) == 256 * 1024
        assert served.names("start") == ["A", "B"]
        assert served.first.ended["DownloadFile"].code is Code.OK


@pytest.mark.parametrize("who", ["A", "B"])
async def test_rejection_before_the_handler_on_every_transport(served: Served, who: str) -> None:
    headers = {"x-deny": who}
    async with GrpcTransport(served.grpc_address) as t:
        with pytest.raises(RpcError) as over_grpc:
            await StreamsServiceClient(t).get_dog(GetDogRequest(index=1), metadata=headers)
    async with ConnectTransport(served.http_url) as t:
        with pytest.raises(RpcError) as over_connect:
            await StreamsServiceClient(t).get_dog(GetDogRequest(index=1), metadata=headers)
    async with httpx.AsyncClient(base_url=served.http_url) as http:
        plain = await http.get("/api/dogs/1", headers=headers)
        stream = await http.get("/api/json_stream", headers=headers)
    for error in (over_grpc.value, over_connect.value):
        assert (error.code, error.message) == (Code.PERMISSION_DENIED, f"{who} says no")
    for response in (plain, stream):
        assert response.status_code == 403
        assert json.loads(response.text)["message"] == f"{who} says no"
    assert served.service.handled == 0
    # Every call still ends through every interceptor, with the rejection as its outcome.
    assert served.names("end") == ["B", "A"] * 4
    assert served.first.ended["GetDog"].code is Code.PERMISSION_DENIED


async def test_outcome_of_errors_deadlines_and_cancels(served: Served) -> None:
    async with GrpcTransport(served.grpc_address) as t:
        client = StreamsServiceClient(t)
        with pytest.raises(RpcError):
            await client.get_dog(GetDogRequest(index=50))
        assert served.first.ended["GetDog"].code is Code.NOT_FOUND
        served.first.end_event.clear()
        with pytest.raises(RpcError):
            await client.get_dog(GetDogRequest(index=99), timeout=0.2)
        await asyncio.wait_for(served.first.end_event.wait(), 5)
        assert served.first.ended["GetDog"].code in (Code.DEADLINE_EXCEEDED, Code.CANCELLED)
        served.first.end_event.clear()
        texts = client.text_stream(TextStreamRequest(interval_ms=10))
        await anext(texts)
        await texts.aclose()
        await asyncio.wait_for(served.first.end_event.wait(), 5)
        assert served.first.ended["TextStream"].code is Code.CANCELLED
    served.first.end_event.clear()
    async with httpx.AsyncClient(base_url=served.http_url) as http:
        late = await http.get("/api/dogs/99", headers={"connect-timeout-ms": "200"})
        assert late.status_code == 504
        assert served.first.ended["GetDog"].code is Code.DEADLINE_EXCEEDED
        served.first.end_event.clear()
        async with http.stream("GET", "/api/test_stream?interval_ms=10") as response:
            async for _ in response.aiter_bytes():
                break
    await asyncio.wait_for(served.first.end_event.wait(), 5)
    assert served.first.ended["TextStream"].code is Code.CANCELLED
    assert served.first.ended["TextStream"].messages_out >= 1
