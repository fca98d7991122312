"""Dioxus Fullstack's framed streams (``application/stream+json|+cbor|+msgpack|+postcard``):
the frame header byte for byte from RFC 6455's layout, the deframer's refusals, and the
plain routes end to end in-process (responses by Accept, uploads by Content-Type, and a
mid-stream error that never looks like a clean end)."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cbor2
import msgpack  # type: ignore[import-untyped]  # msgpack ships no stubs
import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.streams.server import StreamsExample
from examples.streams.v1.streams_pb2 import AdoptionSummary, Dog, JsonStreamRequest
from rpckit import Code, Context, Event, RpcError, Streaming, postcard
from rpckit.encodings import encodings
from rpckit.errors import Code as ErrorCode
from rpckit.http.rest.framing import (
    FRAMED_TYPES,
    FrameDeframer,
    FrameError,
    deframer_for,
    frame,
    frame_header,
    negotiate_stream,
    read_frame_header,
)
from rpckit.testing import bridge_for

DOGS = [Dog(name=f"Dog {i}", age=i % 10) for i in range(10)]
MAX = 4 * 1024 * 1024


def expected_header(length: int) -> bytes:
    """RFC 6455 section 5.2 by hand: FIN|opcode 2, then the 7-bit, 16-bit or 64-bit length."""
    if length < 126:
        return struct.pack("!BB", 0x82, length)
    if length < 65536:
        return struct.pack("!BBH", 0x82, 126, length)
    return struct.pack("!BBQ", 0x82, 127, length)


def split_frames(body: bytes) -> list[bytes]:
    """The payloads of a framed body, read independently of rpckit's reader."""
    payloads, offset = [], 0
    while offset < len(body):
        assert body[offset] == 0x82
        size = body[offset + 1]
        offset += 2
        if size == 126:
            (size,) = struct.unpack_from("!H", body, offset)
            offset += 2
        elif size == 127:
            (size,) = struct.unpack_from("!Q", body, offset)
            offset += 8
        payloads.append(body[offset : offset + size])
        offset += size
    assert offset == len(body)
    return payloads


# --- the frame, byte for byte -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, b"\x82\x00"),
        (1, b"\x82\x01"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        (2**32, b"\x82\x7f\x00\x00\x00\x01\x00\x00\x00\x00"),
        (2**63 - 1, b"\x82\x7f\x7f\xff\xff\xff\xff\xff\xff\xff"),
    ],
)
def test_frame_header_bytes(length: int, header: bytes) -> None:
    assert frame_header(length) == header == expected_header(length)
    buffer = header + b"\x00" * min(length, 70000)
    assert read_frame_header(buffer, 0, 2**63) == (len(header), length)


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536, 70000])
def test_frame_round_trip(length: int) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    data = frame(payload)
    assert data == expected_header(length) + payload
    deframer = FrameDeframer(Dog, _Raw(), MAX)
    assert [getattr(m, "name", None) for m in deframer.feed(data)] == [payload.hex()]
    deframer.close()


def test_frame_header_refuses_impossible_lengths() -> None:
    for length in (-1, 2**63):
        with pytest.raises(ValueError, match="cannot hold"):
            frame_header(length)


class _Raw:
    """A test codec: the payload's hex as the dog's name (to see payloads exactly)."""

    name = "raw"
    content_type = "application/x-raw"
    stream_content_type = "application/x-raw-seq"

    def encode(self, message: Any) -> bytes:
        return bytes.fromhex(message.name)

    def decode(self, data: bytes, message_type: Any) -> Any:
        return message_type(name=data.hex())


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"\x02\x00", "FIN not set"),
        (b"\x00\x00", "opcode 0, not 2"),  # a continuation frame
        (b"\x81\x00", "opcode 1, not 2"),  # text
        (b"\x88\x00", "opcode 8, not 2"),  # close
        (b"\x89\x00", "opcode 9, not 2"),  # ping
        (b"\xc2\x00", "reserved bits"),  # RSV1 (permessage-deflate)
        (b"\xa2\x00", "reserved bits"),
        (b"\x92\x00", "reserved bits"),
        (b"\x82\x80\x00\x00\x00\x00", "masked"),
        (b"\x82\x85\x01\x02\x03\x04hello", "masked"),
    ],
)
def test_deframer_refuses_other_frames(data: bytes, needle: str) -> None:
    deframer = FrameDeframer(Dog, _Raw(), MAX)
    with pytest.raises(FrameError, match=needle) as caught:
        list(deframer.feed(data))
    assert caught.value.code is Code.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "header",
    [
        b"\x82\x7e\x01\x00",  # 256 > 255
        b"\x82\x7f\x00\x00\x00\x00\x00\x00\x01\x00",
        b"\x82\x7f\xff\xff\xff\xff\xff\xff\xff\xff",  # 2**64-1: refused before any payload
    ],
)
def test_deframer_refuses_oversized_lengths_from_the_header(header: bytes) -> None:
    deframer = FrameDeframer(Dog, _Raw(), 255)
    with pytest.raises(RpcError) as caught:
        list(deframer.feed(header))
    assert caught.value.code is Code.RESOURCE_EXHAUSTED
    assert "limit of 255 bytes" in caught.value.message


def test_deframer_takes_any_split_and_refuses_a_cut_frame() -> None:
    body = b"".join(frame(postcard.encode(dog)) for dog in DOGS)
    for size in (1, 2, 3, 7, len(body)):
        deframer = FrameDeframer(Dog, postcard.PostcardEncoding(), MAX)
        got = [m for i in range(0, len(body), size) for m in deframer.feed(body[i : i + size])]
        deframer.close()
        assert got == DOGS
    deframer = FrameDeframer(Dog, postcard.PostcardEncoding(), MAX)
    assert list(deframer.feed(body[:-1])) == DOGS[:-1]
    with pytest.raises(FrameError, match="ended inside a frame"):
        deframer.close()
    deframer = FrameDeframer(Dog, postcard.PostcardEncoding(), MAX)
    assert list(deframer.feed(b"\x82")) == []
    with pytest.raises(FrameError, match="ended inside a frame"):
        deframer.close()


def test_non_minimal_lengths_are_accepted() -> None:
    payload = postcard.encode(DOGS[3])
    long_form = b"\x82\x7e" + len(payload).to_bytes(2, "big") + payload
    deframer = FrameDeframer(Dog, postcard.PostcardEncoding(), MAX)
    assert list(deframer.feed(long_form)) == [DOGS[3]]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40), st.integers(1, 8))
def test_deframer_random_bytes_fail_cleanly(data: bytes, step: int) -> None:
    deframer = deframer_for("application/stream+postcard", Dog, encodings, 64)
    try:
        for i in range(0, len(data), step):
            list(deframer.feed(data[i : i + step]))
        deframer.close()
    except RpcError as error:
        failure: RpcError | None = error
    else:
        failure = None
    assert failure is None or failure.code in (Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED)


def test_negotiation_offers_framed_types() -> None:
    for media in FRAMED_TYPES:
        framing = negotiate_stream(media, Dog, encodings)
        assert framing is not None
        assert framing.content_type == media
        assert framing.error(RpcError(ErrorCode.INTERNAL, "x")) is None  # no in-band error
        assert framing.end() == b""
    # nothing changes for clients that name none of them
    framing = negotiate_stream("*/*", Dog, encodings)
    assert framing is not None
    assert framing.content_type == "application/x-ndjson"


def test_postcard_is_not_offered_for_outputs_it_cannot_carry() -> None:
    from google.protobuf import struct_pb2

    with pytest.raises(RpcError) as caught:
        negotiate_stream("application/stream+postcard", struct_pb2.Struct, encodings)
    assert getattr(caught.value, "http_status", None) == 406
    assert negotiate_stream("application/stream+json", struct_pb2.Struct, encodings) is not None


# --- end to end, in-process -------------------------------------------------------------------


def _dog_tree(dog: Dog) -> dict[str, Any]:
    return json_format.MessageToDict(dog)


DECODERS = {
    "application/stream+json": lambda b: json_format.ParseDict(json.loads(b), Dog()),
    "application/stream+cbor": lambda b: json_format.ParseDict(cbor2.loads(b), Dog()),
    "application/stream+msgpack": lambda b: json_format.ParseDict(msgpack.unpackb(b), Dog()),
    "application/stream+postcard": lambda b: postcard.decode(b, Dog),
}


@pytest.mark.parametrize("media", FRAMED_TYPES)
async def test_json_stream_framed(service: StreamsExample, media: str) -> None:
    async with bridge_for([service]) as bridge:
        response = await bridge.http.get(
            "/api/json_stream?interval_ms=0", headers={"accept": media}
        )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media
    payloads = split_frames(response.content)
    assert [DECODERS[media](p) for p in payloads] == DOGS


async def test_postcard_stream_bytes(service: StreamsExample) -> None:
    async with bridge_for([service]) as bridge:
        response = await bridge.http.get(
            "/api/json_stream?interval_ms=0", headers={"accept": "application/stream+postcard"}
        )
    # Dog {name: String, age: u32}: the length-prefixed name, then the age as a varint
    expected = b"".join(
        b"\x82\x07" + b"\x05" + f"Dog {i}".encode() + bytes([i % 10]) for i in range(10)
    )
    assert response.content == expected


ADOPTED = [Dog(name="Rex", age=3), Dog(name="Fido", age=5), Dog(name="Bella", age=0)]
ENCODERS = {
    "application/stream+json": lambda d: json.dumps(_dog_tree(d)).encode(),
    "application/stream+cbor": lambda d: cbor2.dumps(_dog_tree(d)),
    "application/stream+msgpack": lambda d: msgpack.packb(_dog_tree(d)),
    "application/stream+postcard": postcard.encode,
}


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("media", FRAMED_TYPES)
async def test_adopt_dogs_framed(service: StreamsExample, media: str) -> None:
    body = b"".join(expected_header(len(p)) + p for p in map(ENCODERS[media], ADOPTED))
    async with bridge_for([service]) as bridge:
        response = await bridge.http.post(
            "/api/dogs:adopt", content=_chunks(body, 3), headers={"content-type": media}
        )
    assert response.status_code == 200, response.text
    assert json_format.Parse(response.text, AdoptionSummary()) == AdoptionSummary(
        count=3, total_age=8, names=["Rex", "Fido", "Bella"]
    )


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"\x81\x00", "opcode 1"),
        (b"\x82\x83abc\x00\x01\x02", "masked"),
        (b"\x82\x05\x03Rex", "inside a frame"),
        (b"\x82\x02\x03R", "invalid postcard"),
        (b"\x82\x06\x03Rex\x03\x00", "bytes after the message"),
    ],
)
async def test_adopt_dogs_malformed_frames(
    service: StreamsExample, body: bytes, needle: str
) -> None:
    async with bridge_for([service]) as bridge:
        response = await bridge.http.post(
            "/api/dogs:adopt", content=body, headers={"content-type": "application/stream+postcard"}
        )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_argument"
    assert needle in response.json()["message"]


class Failing(StreamsExample):
    """json_stream yields two dogs, then fails."""

    async def json_stream(self, request: JsonStreamRequest, ctx: Context) -> Streaming[Event[Dog]]:
        async def dogs() -> AsyncIterator[Event[Dog]]:
            yield Event(DOGS[1])
            yield Event(DOGS[2])
            raise RpcError(Code.DATA_LOSS, "disk on fire")

        return Streaming(dogs())


async def _asgi_get(app: Any, path: str, accept: str) -> list[dict[str, Any]]:
    """Every message the app sends for a GET, recorded at the ASGI interface.

    Read there, not through ``bridge.http``: rpckit.testing's in-process transport ends a
    body cleanly when the app returns, where a real server drops the connection unless the
    final ``more_body: False`` message was sent."""
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1", "method": "GET", "scheme": "http", "path": path,
        "raw_path": path.encode(), "query_string": b"interval_ms=0", "root_path": "",
        "headers": [(b"host", b"test"), (b"accept", accept.encode())],
        "server": ("test", 80), "client": ("127.0.0.1", 1234), "extensions": {},
    }  # fmt: skip
    sent: list[dict[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    return sent


@pytest.mark.parametrize("media", FRAMED_TYPES)
async def test_mid_stream_error_is_never_a_clean_end(files_dir: Path, media: str) -> None:
    async with bridge_for([Failing(files_dir)]) as bridge:
        sent = await _asgi_get(bridge.app, "/api/json_stream", media)
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 200
    bodies = [m for m in sent[1:] if m["type"] == "http.response.body"]
    # the body is never finished: no more_body False, so the server cuts the connection
    assert all(m.get("more_body", False) for m in bodies)
    received = b"".join(m.get("body", b"") for m in bodies)
    # what was produced before the failure went out whole; no error record follows it
    assert [DECODERS[media](p) for p in split_frames(received)] == DOGS[1:3]


@pytest.mark.parametrize("media", FRAMED_TYPES)
async def test_a_clean_end_finishes_the_body(service: StreamsExample, media: str) -> None:
    async with bridge_for([service]) as bridge:
        sent = await _asgi_get(bridge.app, "/api/json_stream", media)
    assert sent[-1]["type"] == "http.response.body"
    assert sent[-1].get("more_body", False) is False
