"""``rpckit.testing``: every dialect and call shape of the streams example through the harness.

Connect and gRPC-Web run in-process (no socket: the guard in conftest.py would fail these
tests otherwise); gRPC binds a loopback port and is marked so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.streams.server import DEMO_TOKEN, StreamsExample, upload_auth
from examples.streams.v1.streams_pb2 import (
    AdoptionSummary,
    ChatMessage,
    Dog,
    DownloadFileRequest,
    GetDogRequest,
    JsonStreamRequest,
    ListFilesRequest,
    TextStreamRequest,
)
from examples.streams.v1.streams_rpckit import StreamsServiceClient
from rpckit import Code, Context, RpcError, Streaming
from rpckit.testing import (
    BASE_URL,
    Dialect,
    StreamingASGITransport,
    bridge_for,
    transport_for,
)
from rpckit.v1.stream_pb2 import Bytes
from tests.docs.blocks import parse
from tests.support import ROOT

WAIT = 10  # seconds: a bound on every wait, never a pause

DIALECTS = [
    "connect",
    "grpc-web",
    pytest.param("grpc", marks=pytest.mark.loopback),
]


class Observed(StreamsExample):
    """The example, telling the test what its handlers saw."""

    def __init__(self, files_dir: Path) -> None:
        super().__init__(files_dir)
        self.first_dog = asyncio.Event()
        self.text_ended = asyncio.Event()

    async def text_stream(self, request: TextStreamRequest, ctx: Context) -> Streaming[Any]:
        inner = await super().text_stream(request, ctx)

        async def watched() -> AsyncIterator[Any]:
            try:
                async for item in inner:
                    yield item
            finally:
                self.text_ended.set()

        return Streaming(watched())

    async def adopt_dogs(self, requests: AsyncIterator[Dog], ctx: Context) -> AdoptionSummary:
        names = []
        async for dog in requests:
            names.append(dog.name)
            self.first_dog.set()
        return AdoptionSummary(count=len(names), names=names)


@pytest.fixture
def observed(files_dir: Path) -> Observed:
    return Observed(files_dir)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_unary_and_its_errors(service: StreamsExample, dialect: Dialect) -> None:
    async with transport_for([service], dialect) as transport:
        client = StreamsServiceClient(transport)
        dog = await client.get_dog(GetDogRequest(index=3))
        assert (dog.name, dog.age) == ("Dog 3", 3)
        with pytest.raises(RpcError) as caught:
            await client.get_dog(GetDogRequest(index=99))
        assert caught.value.code is Code.NOT_FOUND
        assert caught.value.message == "no dog 99; there are 10"
        files = await client.list_files(ListFilesRequest())
        assert sorted(f.name for f in files.files) == ["data.bin", "hello.txt"]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_server_stream_finite(service: StreamsExample, dialect: Dialect) -> None:
    async with transport_for([service], dialect) as transport:
        client = StreamsServiceClient(transport)
        dogs = [dog.name async for dog in client.json_stream(JsonStreamRequest(interval_ms=0))]
    assert dogs == [f"Dog {n}" for n in range(10)]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_endless_stream_arrives_as_sent_and_closing_it_is_a_disconnect(
    observed: Observed, dialect: Dialect
) -> None:
    """The first items arrive while the handler still runs (a buffering transport would
    wait for an end that never comes), and leaving early ends the handler's stream."""
    async with transport_for([observed], dialect) as transport:
        stream = StreamsServiceClient(transport).text_stream(TextStreamRequest(interval_ms=1))
        texts = []
        async with stream:
            async for item in stream:
                texts.append(item.text)
                if len(texts) == 3:
                    break
        assert texts == [f"Hello, world! {n}" for n in range(3)]
        await asyncio.wait_for(observed.text_ended.wait(), WAIT)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_client_stream_reaches_the_handler_as_produced(
    observed: Observed, dialect: Dialect
) -> None:
    """The second request is produced only after the handler has the first: a transport
    that buffered the whole request body would never get there."""

    async def dogs() -> AsyncIterator[Dog]:
        yield Dog(name="Rex")
        await asyncio.wait_for(observed.first_dog.wait(), WAIT)
        yield Dog(name="Fido")

    async with transport_for([observed], dialect) as transport:
        summary = await StreamsServiceClient(transport).adopt_dogs(dogs())
    assert (summary.count, list(summary.names)) == (2, ["Rex", "Fido"])


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_client_stream_error(service: StreamsExample, dialect: Dialect) -> None:
    async with transport_for([service], dialect) as transport:
        with pytest.raises(RpcError) as caught:
            await StreamsServiceClient(transport).adopt_dogs([Dog(name="Rex"), Dog()])
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert caught.value.message == "dog 1 has no name"


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_bytes_up_and_file_down(service: StreamsExample, dialect: Dialect) -> None:
    data = (service.files_dir / "data.bin").read_bytes()
    async with transport_for([service], dialect) as transport:
        client = StreamsServiceClient(transport)
        chunks = [
            item.data async for item in client.download_file(DownloadFileRequest(name="data.bin"))
        ]
        assert b"".join(chunks) == data
        pieces = [Bytes(data=data[i : i + 65536]) for i in range(0, len(data), 65536)]
        summary = await client.upload_as_byte_stream(pieces)
    assert summary.size == len(data)
    async with transport_for([service], dialect) as transport:
        stream = StreamsServiceClient(transport).download_file(DownloadFileRequest(name="../x"))
        with pytest.raises(RpcError) as caught:
            _ = [item async for item in stream]
    assert caught.value.code is Code.INVALID_ARGUMENT


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_bidi(service: StreamsExample, dialect: Dialect) -> None:
    async with transport_for([service], dialect) as transport:
        chat = StreamsServiceClient(transport).chat(
            [ChatMessage(text="hi"), ChatMessage(text="yo")]
        )
        if dialect == "grpc":
            assert [m.text async for m in chat] == ["HI", "YO"]
            return
        with pytest.raises(RpcError) as caught:
            _ = [m async for m in chat]
    assert caught.value.code is Code.UNIMPLEMENTED  # HTTP/1.1 dialects refuse bidi


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_deadline(service: StreamsExample, dialect: Dialect) -> None:
    async with transport_for([service], dialect) as transport:
        stream = StreamsServiceClient(transport).text_stream(
            TextStreamRequest(interval_ms=60_000), timeout=0.2
        )
        with pytest.raises(RpcError) as caught:
            _ = [item async for item in stream]
    assert caught.value.code is Code.DEADLINE_EXCEEDED


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_interceptors_run_on_the_server(service: StreamsExample, dialect: Dialect) -> None:
    async with transport_for([service], dialect, interceptors=[upload_auth()]) as transport:
        client = StreamsServiceClient(transport)
        with pytest.raises(RpcError) as caught:
            await client.upload_as_byte_stream([Bytes(data=b"x")])
        assert caught.value.code is Code.UNAUTHENTICATED
        auth = {"authorization": f"Bearer {DEMO_TOKEN}"}
        summary = await client.upload_as_byte_stream([Bytes(data=b"xyz")], metadata=auth)
        assert summary.size == 3


@pytest.mark.parametrize("encoding", ["json", "cbor", "msgpack"])
@pytest.mark.parametrize("dialect", ["connect", "grpc-web"])
async def test_http_encodings(service: StreamsExample, dialect: Dialect, encoding: str) -> None:
    async with transport_for([service], dialect, encoding=encoding) as transport:
        dog = await StreamsServiceClient(transport).get_dog(GetDogRequest(index=4))
    assert dog.name == "Dog 4"


async def test_rest_routes_on_the_same_app(service: StreamsExample) -> None:
    async with bridge_for([service]) as bridge:
        response = await bridge.http.get("/api/dogs/2")
        assert (response.status_code, response.json()) == (200, {"name": "Dog 2", "age": 2})
        missing = await bridge.http.get("/api/dogs/42")
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
        async with bridge.http.stream("GET", "/api/json_stream?interval_ms=0") as stream:
            assert stream.headers["content-type"].startswith("application/x-ndjson")
            lines = [line async for line in stream.aiter_lines() if line]
        assert len(lines) == 10
        grpc_web = bridge.transport("grpc-web")
        assert (await StreamsServiceClient(grpc_web).get_dog(GetDogRequest(index=1))).age == 1


async def test_transport_for_refuses_unknown_dialects(service: StreamsExample) -> None:
    with pytest.raises(ValueError, match="unknown dialect 'websocket'"):
        async with transport_for([service], "websocket"):  # type: ignore[arg-type]
            pass


# --- the streaming ASGI transport on its own -----------------------------------------------


async def _fails_before_start(scope: Any, receive: Any, send: Any) -> None:
    raise LookupError("before the response")


async def _fails_mid_body(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"half", "more_body": True})
    raise LookupError("mid-body")


async def test_app_failures_reach_the_client() -> None:
    transport = StreamingASGITransport(_fails_before_start)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        with pytest.raises(LookupError, match="before the response"):
            await http.get("/")
    transport = StreamingASGITransport(_fails_mid_body)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        with pytest.raises(httpx.RemoteProtocolError, match="mid-body"):
            await http.get("/")


async def test_a_reader_that_stops_holds_the_app_back() -> None:
    """Backpressure: the app waits in send() once ``buffer`` chunks are unread, and leaving
    the response is an ``http.disconnect`` that ends it."""
    sent = 0
    disconnected = asyncio.Event()

    async def endless(scope: Any, receive: Any, send: Any) -> None:
        nonlocal sent

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass  # the (empty) request body
            disconnected.set()

        watcher = asyncio.ensure_future(watch())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while not disconnected.is_set():
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            sent += 1
            await asyncio.sleep(0)  # a turn for the watcher, not a pause
        await watcher

    transport = StreamingASGITransport(endless, buffer=4)
    async with (
        httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http,
        http.stream("GET", "/"),
    ):
        for _ in range(200):  # plenty of turns for an app that is not held back
            await asyncio.sleep(0)
        assert sent == 4
    assert disconnected.is_set()
    assert sent == 5  # the send that waited returned; then the app saw the disconnect


# --- the docs page's example, as printed ---------------------------------------------------


@pytest.mark.parametrize("dialect", ["connect", "grpc-web"])
async def test_the_docs_example_runs_as_printed(dialect: str, tmp_path: Path) -> None:
    """The "Testing your service" file of the Python clients page, its in-process cases."""
    page = ROOT / "examples" / "site" / "docs" / "howto" / "python.md"
    blocks = parse(page.read_text(), lambda path: "")
    [block] = [b for b in blocks if b.title == "tests/test_dogs.py"]
    namespace: dict[str, Any] = {}
    exec(compile(block.text, str(page), "exec"), namespace)
    await namespace["test_dogs"](dialect, tmp_path)
