"""Bidi over HTTP/1.1 (hardening 2, item 13): the bridge answers each request of a bidi
stream as it arrives, so a client that waits for an answer before it sends its next request
(a reflection client over HTTP/1.1) is never left hanging until the body ends; and a client
that leaves after its body has ended cancels the handler. Raw sockets, on uvicorn; Connect
and gRPC-Web."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpc_reflection.v1alpha import reflection_pb2 as pb

from examples.streams.server import StreamsExample
from examples.streams.v1.streams_pb2 import ChatMessage
from rpckit.context import Context
from rpckit.reflection import reflection_services
from tests.support import serve_http

pytestmark = pytest.mark.loopback

STREAMS = "examples.streams.v1.StreamsService"
PATH = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
DIALECTS = {
    "connect": ("application/connect+proto", 0x02),
    "grpc-web": ("application/grpc-web+proto", 0x80),
}


@pytest.fixture
async def bridge(service: StreamsExample) -> AsyncIterator[tuple[str, int]]:
    async with serve_http(service, *reflection_services([STREAMS])) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


class _Reader:
    """The response side of one HTTP/1.1 exchange: its head, then chunked-body envelopes."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buffer = b""

    async def head(self) -> dict[str, str]:
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 200"), lines[0]
        return {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}

    async def _more(self) -> None:
        size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
        assert size > 0, "the response body ended early"
        self.buffer += await self.reader.readexactly(size)
        await self.reader.readexactly(2)

    async def envelope(self) -> tuple[int, bytes]:
        while len(self.buffer) < 5:
            await self._more()
        flags, length = struct.unpack(">BI", self.buffer[:5])
        while len(self.buffer) < 5 + length:
            await self._more()
        data, self.buffer = self.buffer[5 : 5 + length], self.buffer[5 + length :]
        return flags, data


def _chunk(request: pb.ServerReflectionRequest) -> bytes:
    data: bytes = request.SerializeToString()
    frame = struct.pack(">BI", 0, len(data)) + data
    return f"{len(frame):x}\r\n".encode() + frame + b"\r\n"


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
async def test_each_reflection_request_is_answered_before_the_next_is_sent(
    bridge: tuple[str, int], dialect: str
) -> None:
    content_type, end_flag = DIALECTS[dialect]
    host, port = bridge
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"POST {PATH} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: {content_type}\r\n"
            "transfer-encoding: chunked\r\n\r\n".encode()
        )
        writer.write(_chunk(pb.ServerReflectionRequest(list_services="")))
        await writer.drain()
        response = _Reader(reader)
        async with asyncio.timeout(10):  # before the fix: no answer until the body ended
            head = await response.head()
            flags, data = await response.envelope()
        assert head["content-type"].startswith(content_type)
        assert flags == 0
        listed = pb.ServerReflectionResponse.FromString(data).list_services_response
        assert STREAMS in [s.name for s in listed.service]

        # The same stream, a second question, asked only now that the first is answered.
        writer.write(_chunk(pb.ServerReflectionRequest(file_containing_symbol=STREAMS)))
        await writer.drain()
        async with asyncio.timeout(10):
            flags, data = await response.envelope()
        files = pb.ServerReflectionResponse.FromString(data).file_descriptor_response
        assert flags == 0
        assert files.file_descriptor_proto

        writer.write(b"0\r\n\r\n")  # the request body ends: so does the stream, with OK
        await writer.drain()
        async with asyncio.timeout(10):
            flags, data = await response.envelope()
        assert flags & end_flag
        if dialect == "connect":
            assert json.loads(data) == {}
        else:
            assert b"grpc-status:0" in data.replace(b" ", b"")
    finally:
        writer.close()


class _Talker(StreamsExample):
    """Chat that keeps talking after the client's last message, until it is cancelled."""

    def __init__(self, files: Path) -> None:
        super().__init__(files)
        self.cancelled = asyncio.Event()

    async def chat(
        self, requests: AsyncIterator[ChatMessage], ctx: Context
    ) -> AsyncIterator[ChatMessage]:
        async def talk() -> AsyncIterator[ChatMessage]:
            async for message in requests:
                yield ChatMessage(text=message.text.upper())
            try:
                while True:  # the request body has ended; the answers go on
                    yield ChatMessage(text="more")
                    await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise

        return talk()


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
async def test_a_client_leaving_after_its_body_cancels_the_bidi_handler(
    files_dir: Path, dialect: str
) -> None:
    """Once the request body has ended, only the disconnect watch can notice the client
    leaving: the handler is cancelled, it does not talk to a closed socket for good."""
    content_type, _ = DIALECTS[dialect]
    talker = _Talker(files_dir)
    async with serve_http(talker) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        data = ChatMessage(text="hi").SerializeToString()
        body = struct.pack(">BI", 0, len(data)) + data
        writer.write(
            f"POST /{STREAMS}/Chat HTTP/1.1\r\nhost: {host}:{port}\r\n"
            f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        response = _Reader(reader)
        async with asyncio.timeout(10):
            await response.head()
            _, first = await response.envelope()
            _, second = await response.envelope()
        assert ChatMessage.FromString(first).text == "HI"
        assert ChatMessage.FromString(second).text == "more"
        writer.close()
        async with asyncio.timeout(10):
            await talker.cancelled.wait()
