"""Plain-HTTP routes on a real socket: every framing of every example method, incremental
delivery, in-band errors, SSE resume and keep-alive, query binding, traversal and disconnects.

Synchronisation is by events (a gate the test opens after reading an item off the wire),
never by sleeps; every read loop is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cbor2
import httpx
import msgpack  # type: ignore[import-untyped]  # msgpack ships no stubs
import pytest
from google.protobuf import json_format
from google.rpc import status_pb2

from examples.streams.server import StreamsExample
from examples.streams.v1.streams_pb2 import (
    AdoptionSummary,
    Dog,
    JsonStreamRequest,
    ListFilesResponse,
    TextStreamRequest,
    UploadSummary,
)
from examples.streams.v1.streams_rpckit import StreamsServiceClient
from rpckit import Code, Context, Event, RpcError, Sender, Streaming
from rpckit.http import Bridge, BridgeOptions, ConnectTransport, create_app
from rpckit.http.rest.framing import varint
from rpckit.serving.http_server import HttpServer

ROOT = Path(__file__).resolve().parents[3]
SERVER_SOURCE = ROOT / "examples" / "streams" / "server.py"
DOGS = [Dog(name=f"Dog {i}", age=i % 10) for i in range(10)]
WAIT = 5.0  # upper bound for any single wait on the wire


# --- helpers -------------------------------------------------------------------------------


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value, shift = 0, 0
    for _ in range(10):
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, offset
    raise AssertionError("varint longer than 10 bytes")


def delimited(data: bytes) -> tuple[list[bytes], status_pb2.Status | None]:
    """Split a varint-delimited body into records and the trailing in-band Status, if any."""
    records: list[bytes] = []
    offset = 0
    for _ in range(len(data) + 1):
        if offset >= len(data):
            return records, None
        length, offset = _read_varint(data, offset)
        if length == 0xFFFFFFFF:
            size, offset = _read_varint(data, offset)
            status = status_pb2.Status.FromString(data[offset : offset + size])
            assert offset + size == len(data), "bytes after the error record"
            return records, status
        records.append(data[offset : offset + length])
        offset += length
    raise AssertionError("unreachable")


def cbor_items(data: bytes) -> list[Any]:
    stream = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(stream)
    items = []
    for _ in range(len(data)):
        if stream.tell() >= len(data):
            break
        items.append(decoder.decode())
    assert stream.tell() == len(data)
    return items


def msgpack_items(data: bytes) -> list[Any]:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    return list(unpacker)


def ndjson(text: str) -> list[Any]:
    assert text.endswith("\n")
    return [json.loads(line) for line in text.split("\n") if line]


def sse_events(text: str) -> list[dict[str, str]]:
    """Parse an SSE body into events (field -> value; ``comment`` for ``:`` lines)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block:
            continue
        event: dict[str, str] = {}
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            field = field or "comment"
            value = value.removeprefix(" ")
            if field == "data" and "data" in event:
                event["data"] += "\n" + value
            else:
                event[field] = value
        events.append(event)
    return events


def dog_tree(dog: Dog) -> dict[str, Any]:
    tree: dict[str, Any] = {"name": dog.name}
    if dog.age:
        tree["age"] = dog.age
    return tree


def dog_from_json(tree: Any) -> Dog:
    return json_format.ParseDict(tree, Dog())


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    """The response is a JSON error with this status and code; returns its one-line message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == code, body
    message: str = body.get("message", "")
    assert "\n" not in message
    return message


async def read_until(
    chunks: AsyncIterator[bytes], buffer: bytearray, done: Callable[[bytes], bool]
) -> None:
    """Append chunks from ``chunks`` to ``buffer`` until ``done(buffer)`` (bounded in time)."""
    async with asyncio.timeout(WAIT):
        while not done(bytes(buffer)):
            buffer += await anext(chunks)


async def drain(chunks: AsyncIterator[bytes], buffer: bytearray) -> None:
    """Append every remaining chunk to ``buffer`` (bounded in time)."""
    async with asyncio.timeout(WAIT):
        async for chunk in chunks:
            buffer += chunk


async def read_lines_until(
    lines: AsyncIterator[str], seen: list[str], done: Callable[[list[str]], bool]
) -> None:
    async with asyncio.timeout(WAIT):
        while not done(seen):
            seen.append(await anext(lines))


async def raw_get(url: str, target: str) -> tuple[int, dict[str, str], bytes]:
    """One request with an exact request target (no client-side path normalisation)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        async with asyncio.timeout(WAIT):
            data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ")[1]), headers, body


@asynccontextmanager
async def serve_app(app: Bridge) -> AsyncIterator[str]:
    server = HttpServer(app, grace=1)
    port = await server.start("127.0.0.1:0")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.stop()


class _Records(logging.Handler):
    """Sets an event when a log record containing ``needle`` arrives."""

    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.seen.set()


# --- services for the tests ----------------------------------------------------------------


class Gated(StreamsExample):
    """Streams whose second item waits for ``gate``; ``produced`` counts items made."""

    def __init__(self, files_dir: Path) -> None:
        super().__init__(files_dir)
        self.gate = asyncio.Event()
        self.produced = 0

    async def text_stream(self, request: TextStreamRequest, ctx: Context) -> Streaming[Event[str]]:
        async def produce(tx: Sender[Event[str]]) -> None:
            self.produced += 1
            await tx.send(Event("alpha", id="1"))
            await self.gate.wait()
            self.produced += 1
            await tx.send(Event("beta", id="2"))

        return Streaming.spawn(produce)

    async def json_stream(self, request: JsonStreamRequest, ctx: Context) -> Streaming[Event[Dog]]:
        async def produce(tx: Sender[Event[Dog]]) -> None:
            self.produced += 1
            await tx.send(Event(Dog(name="Alpha", age=1), id="1"))
            await self.gate.wait()
            self.produced += 1
            await tx.send(Event(Dog(name="Beta", age=2), id="2"))

        return Streaming.spawn(produce)


class Failing(StreamsExample):
    """json_stream yields two dogs then fails as ``mode`` says; text_stream fails after one."""

    def __init__(self, files_dir: Path, mode: str = "data_loss") -> None:
        super().__init__(files_dir)
        self.mode = mode
        #: When set, text_stream waits on it between its one chunk and its failure.
        self.gate: asyncio.Event | None = None

    async def json_stream(self, request: JsonStreamRequest, ctx: Context) -> Streaming[Event[Dog]]:
        if self.mode == "handler_not_found":
            raise RpcError(Code.NOT_FOUND, "no such kennel")

        async def dogs() -> AsyncIterator[Event[Dog]]:
            if self.mode == "early_not_found":
                raise RpcError(Code.NOT_FOUND, "no dogs today")
            yield Event(DOGS[1], id="1")
            yield Event(DOGS[2], id="2")
            if self.mode == "value_error":
                raise ValueError("secret internals /etc/shadow")
            raise RpcError(Code.DATA_LOSS, "disk on fire")

        return Streaming(dogs())

    async def text_stream(self, request: TextStreamRequest, ctx: Context) -> Streaming[Event[str]]:
        async def texts() -> AsyncIterator[Event[str]]:
            yield Event("one")
            if self.gate is not None:
                await self.gate.wait()
            raise RpcError(Code.DATA_LOSS, "disk on fire")

        return Streaming(texts())


class Recording(StreamsExample):
    """Records every TextStream request it binds."""

    def __init__(self, files_dir: Path) -> None:
        super().__init__(files_dir)
        self.requests: list[TextStreamRequest] = []

    async def text_stream(self, request: TextStreamRequest, ctx: Context) -> Streaming[Event[str]]:
        self.requests.append(request)
        return await super().text_stream(request, ctx)


class Decorated(StreamsExample):
    """json_stream items with every SSE field set; the first waits for ``gate``."""

    def __init__(self, files_dir: Path) -> None:
        super().__init__(files_dir)
        self.gate = asyncio.Event()
        self.gated = False

    async def json_stream(self, request: JsonStreamRequest, ctx: Context) -> Streaming[Event[Dog]]:
        async def dogs() -> AsyncIterator[Event[Dog]]:
            if self.gated:
                await self.gate.wait()
            yield Event(DOGS[3], id="a", event="dog", retry=2500)

        return Streaming(dogs())


# --- 1. every framing of every method ------------------------------------------------------

HELLO = re.compile(r"Hello, world! \d+")


async def test_text_stream_raw(http_url: str) -> None:
    async with (
        httpx.AsyncClient(base_url=http_url) as http,
        http.stream("GET", "/api/test_stream", params={"interval_ms": 0}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        buffer = bytearray()
        await read_until(response.aiter_raw(), buffer, lambda b: len(HELLO.findall(b.decode())) > 5)
    assert HELLO.findall(buffer.decode())[:5] == [f"Hello, world! {n}" for n in range(5)]
    assert buffer.decode().startswith("Hello, world! 0Hello, world! 1")


async def test_text_stream_sse(http_url: str) -> None:
    headers = {"accept": "text/event-stream"}
    async with (
        httpx.AsyncClient(base_url=http_url) as http,
        http.stream(
            "GET", "/api/test_stream", params={"interval_ms": 0}, headers=headers
        ) as response,
    ):
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache"
        buffer = bytearray()
        await read_until(response.aiter_raw(), buffer, lambda b: b.count(b"\n\n") > 3)
    events = sse_events(buffer.decode())[:3]
    assert [(e["id"], e["data"]) for e in events] == [
        (str(n), f"Hello, world! {n}") for n in range(3)
    ]
    assert events[0]["retry"] == "1000"
    assert "retry" not in events[1]


async def test_text_stream_ndjson(http_url: str) -> None:
    headers = {"accept": "application/x-ndjson"}
    async with (
        httpx.AsyncClient(base_url=http_url) as http,
        http.stream(
            "GET", "/api/test_stream", params={"interval_ms": 0}, headers=headers
        ) as response,
    ):
        assert response.headers["content-type"] == "application/x-ndjson"
        lines: list[str] = []
        await read_lines_until(response.aiter_lines(), lines, lambda seen: len(seen) >= 3)
    assert [json.loads(line) for line in lines[:3]] == [
        {"text": f"Hello, world! {n}"} for n in range(3)
    ]


@pytest.mark.parametrize("accept", [None, "*/*", "application/x-ndjson", "text/html, */*;q=0.8"])
async def test_json_stream_ndjson(http_url: str, accept: str | None) -> None:
    headers = {"accept": accept} if accept is not None else {}
    async with httpx.AsyncClient(base_url=http_url) as http:
        if accept is None:
            http.headers.pop("accept")
        response = await http.get("/api/json_stream?interval_ms=0", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert [dog_from_json(tree) for tree in ndjson(response.text)] == DOGS


async def test_json_stream_sse(http_url: str) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.get(
            "/api/json_stream?interval_ms=0", headers={"accept": "text/event-stream"}
        )
    assert response.headers["content-type"] == "text/event-stream"
    events = sse_events(response.text)
    assert [e["id"] for e in events[:-1]] == [str(n) for n in range(10)]
    assert [dog_from_json(json.loads(e["data"])) for e in events[:-1]] == DOGS
    assert events[-1] == {"event": "end", "data": ""}


async def test_json_stream_cbor_seq(http_url: str) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.get(
            "/api/json_stream?interval_ms=0", headers={"accept": "application/cbor-seq"}
        )
    assert response.headers["content-type"] == "application/cbor-seq"
    assert cbor_items(response.content) == [dog_tree(d) for d in DOGS]


async def test_json_stream_msgpack_seq(http_url: str) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.get(
            "/api/json_stream?interval_ms=0", headers={"accept": "application/vnd.msgpack-seq"}
        )
    assert response.headers["content-type"] == "application/vnd.msgpack-seq"
    assert msgpack_items(response.content) == [dog_tree(d) for d in DOGS]


async def test_json_stream_delimited_proto(http_url: str) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.get(
            "/api/json_stream?interval_ms=0",
            headers={"accept": "application/x-protobuf-delimited"},
        )
    assert response.headers["content-type"] == "application/x-protobuf-delimited"
    records, status = delimited(response.content)
    assert status is None
    assert [Dog.FromString(r) for r in records] == DOGS


async def test_json_stream_accept_q_values(http_url: str) -> None:
    accept = "application/x-ndjson;q=0.5, application/cbor-seq;q=0.9, text/event-stream;q=0"
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.get("/api/json_stream?interval_ms=0", headers={"accept": accept})
    assert response.headers["content-type"] == "application/cbor-seq"
    assert cbor_items(response.content) == [dog_tree(d) for d in DOGS]


async def test_get_dog_every_encoding(http_url: str) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        default = await http.get("/api/dogs/3")
        as_cbor = await http.get("/api/dogs/3", headers={"accept": "application/cbor"})
        as_msgpack = await http.get("/api/dogs/3", headers={"accept": "application/msgpack"})
        as_proto = await http.get("/api/dogs/3", headers={"accept": "application/proto"})
    assert default.status_code == 200
    assert default.headers["content-type"] == "application/json"
    assert default.json() == {"name": "Dog 3", "age": 3}
    assert as_cbor.headers["content-type"] == "application/cbor"
    assert cbor2.loads(as_cbor.content) == {"name": "Dog 3", "age": 3}
    assert as_msgpack.headers["content-type"] == "application/msgpack"
    assert msgpack.unpackb(as_msgpack.content, raw=False) == {"name": "Dog 3", "age": 3}
    assert as_proto.headers["content-type"] == "application/proto"
    assert Dog.FromString(as_proto.content) == Dog(name="Dog 3", age=3)
    assert int(as_proto.headers["content-length"]) == len(as_proto.content)


async def test_get_dog_errors(http_url: str) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        missing = await http.get("/api/dogs/10")
        bad = await http.get("/api/dogs/x")
    assert assert_error(missing, 404, "not_found") == "no dog 10; there are 10"
    assert "index" in assert_error(bad, 400, "invalid_argument")


async def test_list_files(http_url: str) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.get("/api/files")
    assert response.status_code == 200
    listing = json_format.Parse(response.text, ListFilesResponse())
    assert [(f.name, f.size) for f in listing.files] == [
        ("data.bin", 256 * 1024),
        ("hello.txt", len("Hello from rpckit!\n")),
    ]


async def test_download_file(http_url: str, files_dir: Path) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        small = await http.get("/api/files/hello.txt")
        big = await http.get("/api/files/data.bin")
    assert small.status_code == 200
    assert small.content == b"Hello from rpckit!\n"
    assert small.headers["content-length"] == str(len(small.content))
    assert small.headers["x-content-size"] == str(len(small.content))
    assert 'filename="hello.txt"' in small.headers["content-disposition"]
    assert small.headers["accept-ranges"] == "bytes"
    assert big.content == (files_dir / "data.bin").read_bytes()


async def test_download_as_filestream(http_url: str) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.get("/api/download_as_filestream")
    assert response.status_code == 200
    assert response.content == SERVER_SOURCE.read_bytes()
    assert response.headers["content-type"].startswith("text/x-python")
    assert 'filename="server.py"' in response.headers["content-disposition"]
    assert response.headers["content-length"] == str(SERVER_SOURCE.stat().st_size)


PAYLOAD = hashlib.sha256(b"plain").digest() * 4096  # 128 KiB


async def _chunks(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_upload_as_bytestream(http_url: str) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.post(
            "/api/upload_as_bytestream",
            content=_chunks(PAYLOAD),
            headers={"content-disposition": 'attachment; filename="../up.bin"'},
        )
    assert response.status_code == 200, response.text
    summary = json_format.Parse(response.text, UploadSummary())
    assert summary == UploadSummary(
        size=len(PAYLOAD), sha256=hashlib.sha256(PAYLOAD).hexdigest(), filename="up.bin"
    )


async def test_upload_as_file_stream_stores_sanitised(http_url: str, files_dir: Path) -> None:
    name = "../../résumé «final».txt"
    disposition = f"attachment; filename=\"fallback.txt\"; filename*=UTF-8''{quote(name, safe='')}"
    headers = {
        "content-type": "text/plain",
        "x-content-size": str(len(PAYLOAD)),
        "content-disposition": disposition,
    }
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.post(
            "/api/upload_as_file_stream", content=_chunks(PAYLOAD), headers=headers
        )
        assert response.status_code == 200, response.text
        summary = json_format.Parse(response.text, UploadSummary())
        stored = "résumé «final».txt"
        assert summary == UploadSummary(
            size=len(PAYLOAD), sha256=hashlib.sha256(PAYLOAD).hexdigest(), filename=stored
        )
        assert (files_dir / stored).read_bytes() == PAYLOAD
        assert not (files_dir.parent.parent / stored).exists()
        listing = json_format.Parse((await http.get("/api/files")).text, ListFilesResponse())
        assert (stored, len(PAYLOAD)) in [(f.name, f.size) for f in listing.files]
        download = await http.get(f"/api/files/{quote(stored)}")
    assert download.status_code == 200
    assert download.content == PAYLOAD


@pytest.mark.parametrize("declared", [len(PAYLOAD) + 1, len(PAYLOAD) - 1, "12abc"])
async def test_upload_as_file_stream_size_mismatch(
    http_url: str, files_dir: Path, declared: int | str
) -> None:
    before = sorted(p.name for p in files_dir.iterdir())
    headers = {
        "x-content-size": str(declared),
        "content-disposition": 'attachment; filename="partial.bin"',
    }
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.post("/api/upload_as_file_stream", content=PAYLOAD, headers=headers)
    assert "x-content-size" in assert_error(response, 400, "invalid_argument")
    assert sorted(p.name for p in files_dir.iterdir()) == before


ADOPTED = [Dog(name="Rex", age=3), Dog(name="Fido", age=5), Dog(name="Bella", age=0)]
ADOPT_BODIES = {
    "application/x-ndjson": b"".join(json.dumps(dog_tree(d)).encode() + b"\n" for d in ADOPTED),
    "application/cbor-seq": b"".join(cbor2.dumps(dog_tree(d)) for d in ADOPTED),
    "application/vnd.msgpack-seq": b"".join(msgpack.packb(dog_tree(d)) for d in ADOPTED),
    "application/x-protobuf-delimited": b"".join(
        varint(d.ByteSize()) + d.SerializeToString() for d in ADOPTED
    ),
}


@pytest.mark.parametrize("content_type", list(ADOPT_BODIES))
async def test_adopt_dogs(http_url: str, content_type: str) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.post(
            "/api/dogs:adopt",
            content=_chunks(ADOPT_BODIES[content_type], size=3),
            headers={"content-type": content_type},
        )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert json_format.Parse(response.text, AdoptionSummary()) == AdoptionSummary(
        count=3, total_age=8, names=["Rex", "Fido", "Bella"]
    )


@pytest.mark.parametrize(
    ("content_type", "body", "needle"),
    [
        ("application/x-ndjson", b'{"name":"Rex"}\n{bad\n', "json"),
        ("application/x-ndjson", b'{"name":"Rex"}\n{"name":"Fido"}', "newline"),
        ("application/x-protobuf-delimited", varint(10) + b"abc", "inside a message"),
        ("application/x-protobuf-delimited", b"\x80", "inside a message"),
        ("application/cbor-seq", cbor2.dumps({"name": "Rex"})[:-2], "inside an item"),
        ("application/vnd.msgpack-seq", msgpack.packb({"name": "Rex"})[:-2], "inside an item"),
    ],
)
async def test_adopt_dogs_malformed(
    http_url: str, content_type: str, body: bytes, needle: str
) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.post(
            "/api/dogs:adopt", content=body, headers={"content-type": content_type}
        )
    assert needle in assert_error(response, 400, "invalid_argument")


async def test_adopt_dogs_unsupported_type_is_415(http_url: str) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.post(
            "/api/dogs:adopt", content=b"Rex,3\n", headers={"content-type": "text/csv"}
        )
    message = assert_error(response, 415, "unimplemented")  # as on Connect and gRPC-Web
    assert "unsupported request stream type 'text/csv'" in message
    assert "application/x-ndjson" in response.headers["accept-post"]


async def test_chat_has_no_plain_route(http_url: str) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.post("/api/chat", content=b'{"text":"hi"}\n')
    assert_error(response, 404, "unimplemented")


# --- 2. incremental delivery ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "accept", "first", "second"),
    [
        ("/api/test_stream", None, b"alpha", b"beta"),
        ("/api/json_stream", None, b'{"name":"Alpha","age":1}\n', b'{"name":"Beta","age":2}\n'),
        (
            "/api/json_stream",
            "text/event-stream",
            b'id: 1\ndata: {"name":"Alpha","age":1}\n\n',
            b'id: 2\ndata: {"name":"Beta","age":2}\n\n',
        ),
    ],
)
@pytest.mark.loopback
async def test_each_item_is_flushed(
    files_dir: Path, path: str, accept: str | None, first: bytes, second: bytes
) -> None:
    service = Gated(files_dir)
    headers = {"accept": accept} if accept else {}
    async with (
        serve_app(create_app([service])) as url,
        httpx.AsyncClient(base_url=url) as http,
        http.stream("GET", path, headers=headers) as response,
    ):
        assert response.status_code == 200
        chunks = response.aiter_raw()
        buffer = bytearray()
        await read_until(chunks, buffer, lambda b: len(b) >= len(first))
        assert bytes(buffer) == first
        assert service.produced == 1  # item 1 reached us before item 2 existed
        service.gate.set()
        await read_until(chunks, buffer, lambda b: len(b) >= len(first + second))
        assert bytes(buffer) == first + second
        assert service.produced == 2


# --- 3. the same items on every transport --------------------------------------------------


async def test_same_items_everywhere(http_url: str, grpc_client: StreamsServiceClient) -> None:
    request = JsonStreamRequest(interval_ms=0)
    results: dict[str, list[Dog]] = {"grpc": [d async for d in grpc_client.json_stream(request)]}
    texts: dict[str, list[str]] = {}
    async with grpc_client.text_stream(TextStreamRequest(interval_ms=0)) as stream:
        texts["grpc"] = [(await anext(stream)).text for _ in range(5)]
    for encoding in ("proto", "json"):
        async with ConnectTransport(http_url, encoding=encoding) as transport:
            client = StreamsServiceClient(transport)
            results[encoding] = [d async for d in client.json_stream(request)]
            async with client.text_stream(TextStreamRequest(interval_ms=0)) as stream:
                texts[encoding] = [(await anext(stream)).text for _ in range(5)]
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.get("/api/json_stream?interval_ms=0")
        results["ndjson"] = [dog_from_json(tree) for tree in ndjson(response.text)]
        async with http.stream("GET", "/api/test_stream?interval_ms=0") as raw:
            buffer = bytearray()
            await read_until(raw.aiter_raw(), buffer, lambda b: len(HELLO.findall(b.decode())) > 5)
        texts["raw"] = HELLO.findall(buffer.decode())[:5]
    assert all(dogs == DOGS for dogs in results.values()), results
    expected = [f"Hello, world! {n}" for n in range(5)]
    assert all(got == expected for got in texts.values()), texts


# --- 4. errors, before and after the first byte --------------------------------------------

ERROR = {"code": "data_loss", "message": "disk on fire"}


@pytest.mark.parametrize(
    "accept",
    [
        "application/x-ndjson",
        "text/event-stream",
        "application/cbor-seq",
        "application/vnd.msgpack-seq",
        "application/x-protobuf-delimited",
    ],
)
@pytest.mark.loopback
async def test_mid_stream_error_is_in_band(files_dir: Path, accept: str) -> None:
    async with serve_app(create_app([Failing(files_dir)])) as url, httpx.AsyncClient() as http:
        response = await http.get(url + "/api/json_stream", headers={"accept": accept})
    assert response.status_code == 200
    body = response.content
    expected = [dog_tree(DOGS[1]), dog_tree(DOGS[2])]
    if accept == "application/x-ndjson":
        lines = body.split(b"\n")
        assert lines[-1] == b""
        assert [json.loads(line) for line in lines[:2]] == expected
        assert lines[2] == b'{"error":{"code":"data_loss","message":"disk on fire"}}'
        assert len(lines) == 4
    elif accept == "text/event-stream":
        events = sse_events(body.decode())
        assert [json.loads(e["data"]) for e in events[:2]] == expected
        assert events[2] == {"event": "error", "data": json.dumps(ERROR, separators=(",", ":"))}
        assert len(events) == 3
    elif accept == "application/cbor-seq":
        assert cbor_items(body) == [*expected, {"error": ERROR}]
    elif accept == "application/vnd.msgpack-seq":
        assert msgpack_items(body) == [*expected, {"error": ERROR}]
    else:
        records, status = delimited(body)
        assert [Dog.FromString(r) for r in records] == DOGS[1:3]
        assert status == status_pb2.Status(code=15, message="disk on fire")
        record = status.SerializeToString()
        assert body.endswith(b"\xff\xff\xff\xff\x0f" + varint(len(record)) + record)


@pytest.mark.parametrize("mode", ["early_not_found", "handler_not_found"])
@pytest.mark.loopback
async def test_error_before_first_item_is_http_status(files_dir: Path, mode: str) -> None:
    async with (
        serve_app(create_app([Failing(files_dir, mode)])) as url,
        httpx.AsyncClient() as http,
    ):
        for accept in ("application/x-ndjson", "application/cbor-seq", "*/*"):
            response = await http.get(url + "/api/json_stream", headers={"accept": accept})
            message = assert_error(response, 404, "not_found")
            assert message in ("no dogs today", "no such kennel")


@pytest.mark.loopback
async def test_unexpected_exception_mid_stream_is_internal(files_dir: Path) -> None:
    async with (
        serve_app(create_app([Failing(files_dir, "value_error")])) as url,
        httpx.AsyncClient() as http,
    ):
        response = await http.get(url + "/api/json_stream")
    assert response.status_code == 200
    items = ndjson(response.text)
    assert items[:2] == [dog_tree(DOGS[1]), dog_tree(DOGS[2])]
    assert items[2:] == [{"error": {"code": "internal", "message": "internal error"}}]
    for leak in ("Traceback", "ValueError", "shadow", "server.py"):
        assert leak not in response.text


@pytest.mark.loopback
async def test_raw_text_failing_mid_body_is_cut_off(files_dir: Path) -> None:
    service = Failing(files_dir)
    service.gate = asyncio.Event()
    received = bytearray()
    async with (
        serve_app(create_app([service])) as url,
        httpx.AsyncClient() as http,
        http.stream("GET", url + "/api/test_stream") as response,
    ):
        assert response.status_code == 200
        assert response.headers["transfer-encoding"] == "chunked"
        chunks = response.aiter_raw()
        await read_until(chunks, received, lambda b: len(b) >= 3)
        assert bytes(received) == b"one"
        service.gate.set()  # now the handler fails
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            await drain(chunks, received)
    assert bytes(received) == b"one"


@pytest.mark.loopback
async def test_raw_text_failing_at_once_is_cut_off(files_dir: Path) -> None:
    """The failure comes before the first chunk has been flushed: still an error, not an end."""
    received = bytearray()
    async with (
        serve_app(create_app([Failing(files_dir)])) as url,
        httpx.AsyncClient() as http,
        http.stream("GET", url + "/api/test_stream") as response,
    ):
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            await drain(response.aiter_raw(), received)
    assert b"one".startswith(bytes(received))


@pytest.mark.loopback
async def test_raw_text_failing_at_once_keeps_what_was_yielded(files_dir: Path) -> None:
    received = bytearray()
    async with (
        serve_app(create_app([Failing(files_dir)])) as url,
        httpx.AsyncClient() as http,
        http.stream("GET", url + "/api/test_stream") as response,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            await drain(response.aiter_raw(), received)
    assert bytes(received) == b"one"


# --- 5. SSE: resume, retry, keep-alive -----------------------------------------------------


async def test_sse_resume_json_stream(http_url: str) -> None:
    headers = {"accept": "text/event-stream", "last-event-id": "7"}
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.get("/api/json_stream?interval_ms=0", headers=headers)
    events = sse_events(response.text)
    assert [(e.get("id"), e.get("event")) for e in events] == [
        ("8", None),
        ("9", None),
        (None, "end"),
    ]
    assert [dog_from_json(json.loads(e["data"])) for e in events[:2]] == DOGS[8:]


async def test_sse_resume_text_stream(http_url: str) -> None:
    headers = {"accept": "text/event-stream", "last-event-id": "41"}
    async with (
        httpx.AsyncClient(base_url=http_url) as http,
        http.stream("GET", "/api/test_stream?interval_ms=10", headers=headers) as response,
    ):
        buffer = bytearray()
        await read_until(response.aiter_raw(), buffer, lambda b: b"\n\n" in b)
    first = sse_events(buffer.decode())[0]
    assert (first["id"], first["data"]) == ("42", "Hello, world! 42")


async def test_sse_bad_last_event_id(http_url: str) -> None:
    headers = {"accept": "text/event-stream", "last-event-id": "seven"}
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.get("/api/json_stream?interval_ms=0", headers=headers)
    assert "Last-Event-ID" in assert_error(response, 400, "invalid_argument")


@pytest.mark.loopback
async def test_sse_event_fields(files_dir: Path) -> None:
    async with serve_app(create_app([Decorated(files_dir)])) as url, httpx.AsyncClient() as http:
        sse = await http.get(url + "/api/json_stream", headers={"accept": "text/event-stream"})
        plain = await http.get(url + "/api/json_stream")
    assert sse.text.startswith('id: a\nevent: dog\nretry: 2500\ndata: {"name":"Dog 3","age":3}\n\n')
    assert sse_events(sse.text)[-1] == {"event": "end", "data": ""}
    assert ndjson(plain.text) == [dog_tree(DOGS[3])]  # other framings see only the data


@pytest.mark.loopback
async def test_sse_keep_alive_before_first_event(files_dir: Path) -> None:
    service = Decorated(files_dir)
    service.gated = True
    app = create_app([service], options=BridgeOptions(sse_keep_alive=0.02))
    async with (
        serve_app(app) as url,
        httpx.AsyncClient() as http,
        http.stream("GET", url + "/api/json_stream", headers={"accept": "text/event-stream"}) as r,
    ):
        assert r.status_code == 200
        lines = r.aiter_lines()
        seen: list[str] = []
        await read_lines_until(lines, seen, lambda s: ": keep-alive" in s)
        assert not any(line.startswith("data:") for line in seen)
        service.gate.set()
        await read_lines_until(lines, seen, lambda s: any(x.startswith("data:") for x in s))
    assert seen.index(": keep-alive") < next(
        i for i, line in enumerate(seen) if line.startswith("data:")
    )


# --- 6. query binding, verbs, unknown paths, traversal -------------------------------------


@pytest.mark.parametrize("query", ["start=5&interval_ms=10", "start=5&intervalMs=10"])
@pytest.mark.loopback
async def test_query_binding(files_dir: Path, query: str) -> None:
    service = Recording(files_dir)
    async with (
        serve_app(create_app([service])) as url,
        httpx.AsyncClient() as http,
        http.stream(
            "GET", f"{url}/api/test_stream?{query}", headers={"accept": "application/x-ndjson"}
        ) as response,
    ):
        lines: list[str] = []
        await read_lines_until(response.aiter_lines(), lines, lambda s: len(s) >= 1)
    assert json.loads(lines[0]) == {"text": "Hello, world! 5"}
    assert service.requests == [TextStreamRequest(start=5, interval_ms=10)]


@pytest.mark.parametrize(
    ("query", "needles"),
    [
        ("bogus=1", ["unknown query parameter", "bogus"]),
        ("interval_ms=-1", ["interval_ms", "unsigned", "-1"]),
        ("start=abc", ["start", "integer", "abc"]),
        ("start=99999999999", ["start", "32-bit"]),
    ],
)
async def test_query_binding_errors(http_url: str, query: str, needles: list[str]) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.get(f"/api/test_stream?{query}")
    message = assert_error(response, 400, "invalid_argument")
    for needle in needles:
        assert needle in message


async def test_head_and_wrong_verb(http_url: str) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        head = await http.head("/api/dogs/1")
        delete = await http.delete("/api/dogs/1")
        unknown = await http.get("/api/nope")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == "application/json"
    assert delete.headers["allow"] == "GET"
    assert_error(delete, 405, "unimplemented")
    assert_error(unknown, 404, "unimplemented")


@pytest.mark.parametrize(
    ("target", "status", "code"),
    [
        ("/api/files/..%2Fsecret.txt", 400, "invalid_argument"),
        ("/api/files/%2Fetc%2Fpasswd", 400, "invalid_argument"),
        ("/api/files/..", 400, "invalid_argument"),
        ("/api/files/.secret.txt", 404, "not_found"),  # hidden files are not served
    ],
)
async def test_traversal_is_refused(http_url: str, target: str, status: int, code: str) -> None:
    response_status, headers, body = await raw_get(http_url, target)
    assert response_status == status
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["code"] == code
    assert b"not for download" not in body


# --- 7. client disconnect ------------------------------------------------------------------


@pytest.mark.parametrize("accept", [None, "application/x-ndjson"])
async def test_disconnect_stops_the_producer(http_url: str, accept: str | None) -> None:
    records = _Records("text stream: client gone")
    logger = logging.getLogger("examples.streams")
    logger.addHandler(records)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    headers = {"accept": accept} if accept else {}
    try:
        async with httpx.AsyncClient(base_url=http_url) as http:
            async with http.stream(
                "GET", "/api/test_stream?interval_ms=20", headers=headers
            ) as response:
                buffer = bytearray()
                await read_until(response.aiter_raw(), buffer, lambda b: b.count(b"world") >= 3)
                assert not records.seen.is_set()
            # leaving the block closed the response (and its connection) mid-stream
            await asyncio.wait_for(records.seen.wait(), timeout=1.0)
    finally:
        logger.removeHandler(records)
        logger.setLevel(old_level)


# --- deviations found while testing ---------------------------------------------------------


async def test_text_stream_ndjson_refused_with_q0(http_url: str) -> None:
    headers = {"accept": "application/x-ndjson;q=0, text/plain"}
    async with (
        httpx.AsyncClient(base_url=http_url) as http,
        http.stream("GET", "/api/test_stream?interval_ms=0", headers=headers) as response,
    ):
        content_type = response.headers["content-type"]
    assert content_type == "text/plain; charset=utf-8"


async def test_unary_accept_q0_is_refused(http_url: str) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.get(
            "/api/dogs/3", headers={"accept": "application/cbor;q=0, application/json"}
        )
    assert response.headers["content-type"] == "application/json"
