"""The Connect protocol on the HTTP bridge: rpckit's client in every encoding, and raw
HTTP for every kind of bad input (status, code, and that the server keeps serving)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf.message import Message

from examples.streams.server import StreamsExample
from examples.streams.v1.streams_pb2 import (
    ChatMessage,
    Dog,
    DownloadFileRequest,
    GetDogRequest,
    JsonStreamRequest,
    TextStreamRequest,
)
from examples.streams.v1.streams_rpckit import StreamsServiceClient
from rpckit import Code, Context, Event, RpcError, Sender, Streaming
from rpckit.client import ResponseMetadata
from rpckit.encodings import encodings
from rpckit.http import BridgeOptions, ConnectTransport
from rpckit.v1.stream_pb2 import Bytes
from rpckit.wellknown import upload_headers
from tests.support import serve_http

PAYLOAD = hashlib.sha256(b"connect").digest() * (1024 * 1024 // 32)  # 1 MiB
CHUNK = 64 * 1024
DOG_PATH = "/examples.streams.v1.StreamsService/GetDog"
TEXT_PATH = "/examples.streams.v1.StreamsService/TextStream"
UPLOAD_PATH = "/examples.streams.v1.StreamsService/UploadAsByteStream"


def frame(data: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(data)) + data


def unframe(body: bytes) -> list[tuple[int, bytes]]:
    out = []
    while body:
        flags, length = struct.unpack_from(">BI", body)
        out.append((flags, body[5 : 5 + length]))
        body = body[5 + length :]
    return out


async def check_every_method(client: StreamsServiceClient) -> None:
    assert await client.get_dog(GetDogRequest(index=3)) == Dog(name="Dog 3", age=3)
    with pytest.raises(RpcError) as caught:
        await client.get_dog(GetDogRequest(index=42))
    assert (caught.value.code, caught.value.message) == (Code.NOT_FOUND, "no dog 42; there are 10")

    async with client.text_stream(TextStreamRequest(start=5, interval_ms=5)) as texts:
        got = [(await anext(texts)).text for _ in range(4)]
    assert got == [f"Hello, world! {n}" for n in range(5, 9)]

    dogs = [d async for d in client.json_stream(JsonStreamRequest(interval_ms=0))]
    assert dogs == [Dog(name=f"Dog {i}", age=i % 10) for i in range(10)]

    async def chunks() -> AsyncIterator[Bytes]:
        for i in range(0, len(PAYLOAD), CHUNK):
            yield Bytes(data=PAYLOAD[i : i + CHUNK])

    summary = await client.upload_as_byte_stream(chunks(), metadata=upload_headers("up.bin", None))
    assert (summary.size, summary.sha256, summary.filename) == (
        len(PAYLOAD),
        hashlib.sha256(PAYLOAD).hexdigest(),
        "up.bin",
    )


@pytest.mark.parametrize("encoding", ["proto", "json", "cbor", "msgpack"])
async def test_client_every_encoding(http_url: str, encoding: str) -> None:
    async with ConnectTransport(http_url, encoding=encoding) as transport:
        await check_every_method(StreamsServiceClient(transport))


@pytest.mark.parametrize("compression", ["gzip", None])
async def test_client_compression_and_get(http_url: str, compression: str | None) -> None:
    async with ConnectTransport(
        http_url, encoding="json", compression=compression, use_get=True
    ) as transport:
        await check_every_method(StreamsServiceClient(transport))


class ReversedJson:
    """A user's own encoding: JSON with the bytes reversed, to prove nothing is hard-wired."""

    name = "rjson"
    content_type = "application/rjson"
    stream_content_type = "application/x-rjson-seq"

    def encode(self, message: Message) -> bytes:
        return encodings.get("json").encode(message)[::-1]  # type: ignore[union-attr]

    def decode(self, data: bytes, message_type: type[Any]) -> Any:
        return encodings.get("json").decode(data[::-1], message_type)  # type: ignore[union-attr]


@pytest.mark.loopback
async def test_user_registered_encoding(service: StreamsExample) -> None:
    registry = encodings.copy()
    registry.register(ReversedJson())
    async with (
        serve_http(service, options=BridgeOptions(encodings=registry)) as url,
        ConnectTransport(url, encoding="rjson", encodings=registry) as transport,
    ):
        await check_every_method(StreamsServiceClient(transport))
        response = await transport.client.post(
            url + DOG_PATH,
            content=b'{"index":1}'[::-1],
            headers={"content-type": "application/rjson"},
        )
        assert response.status_code == 200
        assert json.loads(response.content[::-1]) == {"name": "Dog 1", "age": 1}


async def test_bidi_over_http_answers_every_request(http_url: str) -> None:
    """The server takes bidi over HTTP/1.1 (answers go out as requests arrive: buf curl and
    Node read while they write); rpckit's httpx-based client cannot, and says so."""
    async with ConnectTransport(http_url) as transport:
        with pytest.raises(RpcError) as caught:
            async for _ in StreamsServiceClient(transport).chat([ChatMessage(text="hi")]):
                pass
        assert caught.value.code is Code.UNIMPLEMENTED
        response = await transport.client.post(
            http_url + "/examples.streams.v1.StreamsService/Chat",
            content=b"".join(
                frame(ChatMessage(text=text).SerializeToString()) for text in ("hi", "there")
            ),
            headers={"content-type": "application/connect+proto"},
        )
    *answers, (flags, data) = unframe(response.content)
    assert [ChatMessage.FromString(d).text for _, d in answers] == ["HI", "THERE"]
    assert flags == 2
    assert json.loads(data) == {}


# --- the wire, byte for byte -------------------------------------------------------------


async def test_unary_wire_format(http_url: str) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        ok = await http.post(
            DOG_PATH,
            content=b'{"index": 2}',
            headers={"content-type": "application/json", "connect-protocol-version": "1"},
        )
        assert ok.status_code == 200
        assert ok.headers["content-type"] == "application/json"
        assert ok.json() == {"name": "Dog 2", "age": 2}

        missing = await http.post(
            DOG_PATH, content=GetDogRequest(index=11).SerializeToString(),
            headers={"content-type": "application/proto"},
        )  # fmt: skip
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/json"
        assert missing.json() == {"code": "not_found", "message": "no dog 11; there are 10"}

        got = await http.get(
            DOG_PATH, params={"encoding": "json", "message": '{"index":4}', "connect": "v1"}
        )
        assert (got.status_code, got.json()) == (200, {"name": "Dog 4", "age": 4})


async def test_stream_wire_format(http_url: str) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.post(
            "/examples.streams.v1.StreamsService/JsonStream",
            content=frame(b'{"intervalMs": 0}'),
            headers={"content-type": "application/connect+json"},
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/connect+json"
    frames = unframe(response.content)
    assert [f for f, _ in frames] == [0] * 10 + [2]
    assert json.loads(frames[0][1]) == {"name": "Dog 0"}  # age 0 is the default: omitted
    assert json.loads(frames[-1][1]) == {}


async def test_gzip_both_ways_on_the_wire(http_url: str) -> None:
    big = GetDogRequest(index=5).SerializeToString()
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.post(
            DOG_PATH,
            content=gzip.compress(big),
            headers={"content-type": "application/proto", "content-encoding": "gzip",
                     "accept-encoding": "gzip"},
        )  # fmt: skip
        assert response.status_code == 200
        assert Dog.FromString(response.content) == Dog(name="Dog 5", age=5)

        upload = b"".join(
            frame(gzip.compress(Bytes(data=PAYLOAD[i : i + CHUNK]).SerializeToString()), 1)
            for i in range(0, len(PAYLOAD), CHUNK)
        )
        response = await http.post(
            UPLOAD_PATH, content=upload,
            headers={"content-type": "application/connect+proto",
                     "connect-content-encoding": "gzip", "connect-accept-encoding": "gzip"},
        )  # fmt: skip
    frames = unframe(response.content)
    assert frames[-1] == (2, b"{}")
    assert response.headers.get("connect-content-encoding") == "gzip"


# --- bad input: right status and code, one-line reason, server keeps serving ---------------


BAD_REQUESTS: list[tuple[str, str, dict[str, str], bytes, int, str]] = [
    # (name, path, headers, body, HTTP status, Connect code)
    ("unknown codec", DOG_PATH, {"content-type": "application/xml"}, b"<x/>", 415, "unimplemented"),
    ("stream type on unary", DOG_PATH, {"content-type": "application/connect+proto"}, b"", 415,
     "unimplemented"),
    ("bad json", DOG_PATH, {"content-type": "application/json"}, b"{not json", 400,
     "invalid_argument"),
    ("wrong json type", DOG_PATH, {"content-type": "application/json"}, b'{"index": "x"}', 400,
     "invalid_argument"),
    ("truncated proto", DOG_PATH, {"content-type": "application/proto"}, b"\x08\x96", 400,
     "invalid_argument"),
    ("unknown method", "/examples.streams.v1.StreamsService/Nope",
     {"content-type": "application/proto"}, b"", 404, "unimplemented"),
    ("unknown service", "/no.Such/Thing", {"content-type": "application/json"}, b"{}", 404,
     "unimplemented"),
    ("bad timeout", DOG_PATH, {"content-type": "application/json", "connect-timeout-ms": "soon"},
     b"{}", 400, "invalid_argument"),
    ("bad protocol version", DOG_PATH,
     {"content-type": "application/json", "connect-protocol-version": "2"}, b"{}", 400,
     "invalid_argument"),
    ("unknown compression", DOG_PATH,
     {"content-type": "application/json", "content-encoding": "lzma"}, b"{}", 501, "unimplemented"),
    ("bad gzip", DOG_PATH, {"content-type": "application/json", "content-encoding": "gzip"},
     b"not gzip", 400, "invalid_argument"),
    ("too large", DOG_PATH, {"content-type": "application/proto"}, b"\x00" * (4 * 1024 * 1024 + 1),
     429, "resource_exhausted"),
    ("unknown stream codec", TEXT_PATH, {"content-type": "application/connect+xml"}, b"", 415,
     "unimplemented"),
    ("unary type on stream", TEXT_PATH, {"content-type": "application/proto"}, b"", 415,
     "unimplemented"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "code"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
async def test_bad_unary_input(
    http_url: str, path: str, headers: dict[str, str], body: bytes, status: int, code: str
) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.post(path, content=body, headers=headers)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        error = response.json()
        assert error["code"] == code
        assert "\n" not in error.get("message", "")
        assert "Traceback" not in response.text
        if status == 415:
            assert "application/" in response.headers["accept-post"]
        again = await http.post(
            DOG_PATH, content=b"{}", headers={"content-type": "application/json"}
        )
        assert again.json() == {"name": "Dog 0"}  # still serving


STREAM_CASES: list[tuple[str, str, bytes, str]] = [
    # (name, path, body, Connect code in the end-of-stream message)
    ("no request", TEXT_PATH, b"", "invalid_argument"),
    ("two requests", TEXT_PATH, frame(b"") + frame(b""), "invalid_argument"),
    ("truncated envelope", TEXT_PATH, frame(b"\x08\x01")[:-1], "invalid_argument"),
    ("end flag in request", TEXT_PATH, frame(b"", flags=2), "invalid_argument"),
    ("compressed without encoding", TEXT_PATH, frame(b"", flags=1), "invalid_argument"),
    ("bad message", TEXT_PATH, frame(b"\xff\xff"), "invalid_argument"),
    ("oversized envelope", UPLOAD_PATH, struct.pack(">BI", 0, 5 << 20), "resource_exhausted"),
    ("truncated upload", UPLOAD_PATH, frame(Bytes(data=b"abc").SerializeToString()) + b"\x00\x00",
     "invalid_argument"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "code"), [c[1:] for c in STREAM_CASES], ids=[c[0] for c in STREAM_CASES]
)
async def test_bad_stream_input(http_url: str, path: str, body: bytes, code: str) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.post(
            path, content=body, headers={"content-type": "application/connect+proto"}
        )
        assert response.status_code == 200  # streams report errors in the end-of-stream message
        frames = unframe(response.content)
        flags, data = frames[-1]
        assert flags == 2
        assert json.loads(data)["error"]["code"] == code
        again = await http.post(
            DOG_PATH, content=b"{}", headers={"content-type": "application/json"}
        )
        assert again.status_code == 200


async def test_get_refused_for_methods_with_side_effects(http_url: str) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.get(UPLOAD_PATH, params={"encoding": "json", "message": "{}"})
    assert response.status_code == 405
    assert response.json()["code"] == "unimplemented"


# --- deadlines, cancellation, metadata, mid-stream errors --------------------------------


class Observed(StreamsExample):
    """The example plus handlers that expose deadlines, metadata and late failures."""

    def __init__(self, files_dir: Path) -> None:
        super().__init__(files_dir)
        self.remaining: float | None = None
        self.cancelled = asyncio.Event()

    async def get_dog(self, request: GetDogRequest, ctx: Context) -> Dog:
        if request.index == 100:
            self.remaining = ctx.time_remaining()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        ctx.response_headers.add("x-echo", ctx.request_headers.get("x-token") or "")
        ctx.response_trailers.add("x-cost", "7")
        return await super().get_dog(request, ctx)

    async def text_stream(self, request: TextStreamRequest, ctx: Context) -> Streaming[Event[str]]:
        if request.start != 666:
            return await super().text_stream(request, ctx)

        async def failing(tx: Sender[Event[str]]) -> None:
            await tx.send(Event("one"))
            await tx.send(Event("two"))
            raise RpcError(Code.DATA_LOSS, "disk on fire")

        ctx.response_headers.add("x-stream", "yes")
        ctx.response_trailers.add("x-items", "2")
        return Streaming.spawn(failing)


@pytest.fixture
async def observed(files_dir: Path) -> AsyncIterator[tuple[Observed, str]]:
    service = Observed(files_dir)
    async with serve_http(service) as url:
        yield service, url


@pytest.mark.loopback
async def test_deadline_reaches_handler(observed: tuple[Observed, str]) -> None:
    service, url = observed
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.post(
            DOG_PATH, content=b'{"index": 100}',
            headers={"content-type": "application/json", "connect-timeout-ms": "300"},
        )  # fmt: skip
    assert response.status_code == 504
    assert response.json()["code"] == "deadline_exceeded"
    await asyncio.wait_for(service.cancelled.wait(), timeout=5)
    assert service.remaining is not None
    assert 0 < service.remaining <= 0.3


@pytest.mark.parametrize("path", [DOG_PATH, "/api/dogs/100"])
@pytest.mark.loopback
async def test_client_leaving_cancels_a_unary_handler(
    observed: tuple[Observed, str], path: str
) -> None:
    """Connect and plain unary calls alike: a client that goes away cancels the handler."""
    service, url = observed
    if path == DOG_PATH:
        request = httpx.Request(
            "POST",
            url + path,
            content=b'{"index": 100}',
            headers={"content-type": "application/json"},
        )
    else:
        request = httpx.Request("GET", url + path)
    async with httpx.AsyncClient(timeout=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.send(request)
    await asyncio.wait_for(service.cancelled.wait(), timeout=5)
    assert service.remaining is None  # no deadline was sent: the disconnect did it


async def test_deadline_on_stream(http_url: str) -> None:
    async with ConnectTransport(http_url) as transport:
        client = StreamsServiceClient(transport)
        got: list[str] = []

        async def read_all() -> None:
            async for item in client.text_stream(
                TextStreamRequest(interval_ms=10_000), timeout=0.3
            ):
                got.append(item.text)

        with pytest.raises(RpcError) as caught:
            await read_all()
    assert caught.value.code is Code.DEADLINE_EXCEEDED
    assert got == ["Hello, world! 0"]


@pytest.mark.loopback
async def test_metadata_both_ways(observed: tuple[Observed, str]) -> None:
    _, url = observed
    async with ConnectTransport(url, encoding="json") as transport:
        client = StreamsServiceClient(transport)
        response = ResponseMetadata()
        await client.get_dog(GetDogRequest(index=1), metadata={"x-token": "t1"}, response=response)
        assert response.headers.get("x-echo") == "t1"
        assert response.trailers.get("x-cost") == "7"

        stream_meta = ResponseMetadata()
        items: list[str] = []

        async def read_all() -> None:
            request = TextStreamRequest(start=666)
            async for item in client.text_stream(request, response=stream_meta):
                items.append(item.text)

        with pytest.raises(RpcError) as caught:
            await read_all()
    assert items == ["one", "two"]  # items before the error are not lost
    assert (caught.value.code, caught.value.message) == (Code.DATA_LOSS, "disk on fire")
    assert stream_meta.headers.get("x-stream") == "yes"
    assert stream_meta.trailers.get("x-items") == "2"


async def test_client_abort_stops_the_producer(http_url: str) -> None:
    gone = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "client gone" in record.getMessage():
                gone.set()

    logger = logging.getLogger("examples.streams")
    handler = Watch()
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        async with ConnectTransport(http_url) as transport:
            stream = StreamsServiceClient(transport).text_stream(TextStreamRequest(interval_ms=50))
            assert [(await anext(stream)).text for _ in range(3)][-1] == "Hello, world! 2"
            await stream.aclose()
            await asyncio.wait_for(gone.wait(), timeout=1.0)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


async def test_download_over_connect_has_file_headers(http_url: str, files_dir: Path) -> None:
    async with ConnectTransport(http_url) as transport:
        meta = ResponseMetadata()
        bodies = [
            b
            async for b in StreamsServiceClient(transport).download_file(
                DownloadFileRequest(name="data.bin"), response=meta
            )
        ]
    assert b"".join(b.data for b in bodies) == (files_dir / "data.bin").read_bytes()
    assert meta.headers.get("x-content-size") == str(256 * 1024)
    assert meta.headers.get("content-disposition") == 'attachment; filename="data.bin"'
