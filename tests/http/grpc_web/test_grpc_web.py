"""gRPC-Web on the bridge: the pure wire rules, raw ``application/grpc-web(-text)`` with httpx,
and connect-node's ``createGrpcWebTransport`` (binary and JSON), all through ``rpckit serve``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2

from examples.streams.v1.streams_pb2 import Dog, GetDogRequest, JsonStreamRequest
from rpckit.errors import Code, RpcError
from rpckit.http.grpc_web.protocol import (
    FLAG_TRAILER,
    Base64Decoder,
    parse_content_type,
    parse_grpc_timeout,
    parse_trailers,
    trailer_frame,
)
from rpckit.http.wire import EnvelopeReader, envelope
from tests.http.connect.test_connect_interop import (
    SERVER_START_TIMEOUT,
    _http_address,
    _terminate,
    es_code,
    payload,
    run_client,
)
from tests.support import ROOT

__all__ = ["es_code"]  # the fixture, re-used from the Connect interop tests

GET_DOG = "/examples.streams.v1.StreamsService/GetDog"
JSON_STREAM = "/examples.streams.v1.StreamsService/JsonStream"
TEXTS = [f"Hello, world! {n}" for n in range(5, 10)]
DOGS = [{"name": f"Dog {i}", "age": i} for i in range(10)]


# --- wire rules ---------------------------------------------------------------------------


def test_content_types() -> None:
    plain = parse_content_type("application/grpc-web")
    assert plain is not None
    assert (plain.codec, plain.text) == ("proto", False)
    text = parse_content_type("application/grpc-web-text+json; charset=utf-8")
    assert text is not None
    assert (text.codec, text.text) == ("json", True)
    assert text.content_type() == "application/grpc-web-text+json"
    assert parse_content_type("application/grpc") is None
    assert parse_content_type("application/grpc-web+") is None


def test_frames_split_across_chunks_and_limit() -> None:
    data = envelope(b"abc") + envelope(b"", 1) + envelope(b"xyz")
    reader = EnvelopeReader(max_size=10)
    got = [item for i in range(len(data)) for item in reader.feed(data[i : i + 1])]
    assert got == [(0, b"abc"), (1, b""), (0, b"xyz")]
    reader.close()
    with pytest.raises(RpcError) as too_big:
        list(EnvelopeReader(max_size=2).feed(envelope(b"abc")))
    assert too_big.value.code is Code.RESOURCE_EXHAUSTED
    cut = EnvelopeReader(10)
    list(cut.feed(envelope(b"abc")[:6]))
    with pytest.raises(RpcError, match="request body ended inside a message"):
        cut.close()


def test_base64_decoder_handles_padding_between_frames() -> None:
    body = base64.b64encode(envelope(b"ab")) + base64.b64encode(envelope(b"cde"))  # padded each
    assert b"=" in body[:-4]
    decoder = Base64Decoder()
    out = b"".join(decoder.feed(body[i : i + 3]) for i in range(0, len(body), 3))
    decoder.close()
    assert out == envelope(b"ab") + envelope(b"cde")
    with pytest.raises(RpcError, match="not valid base64"):
        Base64Decoder().feed(b"!!!!")
    dangling = Base64Decoder()
    dangling.feed(b"AAA")
    with pytest.raises(RpcError, match="inside a base64 group"):
        dangling.close()


@pytest.mark.parametrize(
    ("value", "seconds"), [("1S", 1.0), ("250m", 0.25), ("2M", 120.0), ("1H", 3600.0), ("5u", 5e-6)]
)
def test_grpc_timeout(value: str, seconds: float) -> None:
    assert parse_grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "1", "S", "123456789S", "1s", "-1S", "1.5S"])
def test_grpc_timeout_refused(value: str) -> None:
    with pytest.raises(RpcError) as refused:
        parse_grpc_timeout(value)
    assert refused.value.code is Code.INVALID_ARGUMENT


def test_trailer_frame_round_trip() -> None:
    data = trailer_frame(Code.NOT_FOUND, "no dog 42; 100% gone\n", [("x-a", "1"), ("X-B", "2")])
    assert data[0] == FLAG_TRAILER
    trailers = parse_trailers(data[5:])
    assert trailers.get("grpc-status") == "5"
    assert trailers.get("grpc-message") == "no dog 42; 100% gone\n"
    assert b"%25" in data
    assert b"%0A" in data
    assert (trailers.get("x-a"), trailers.get("x-b")) == ("1", "2")


# --- through rpckit serve -----------------------------------------------------------------


@pytest.fixture
async def base_url(tmp_path: Path) -> AsyncIterator[str]:
    """``rpckit serve`` of the example (with error details) as a real process."""
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rpckit", "serve",
            "tests.http.grpc_web.grpc_web_service:create_service",
            "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=log,
        )  # fmt: skip
    try:
        address = await asyncio.wait_for(_http_address(process), SERVER_START_TIMEOUT)
        assert address, f"no HTTP address from rpckit serve:\n{log_path.read_text()}"
        yield f"http://{address}"
    finally:
        await _terminate(process)


def unb64(text: bytes) -> bytes:
    """A grpc-web-text body: base64 whose frames may each carry their own padding."""
    return b"".join(base64.b64decode(text[i : i + 4]) for i in range(0, len(text), 4))


def split(body: bytes) -> tuple[list[bytes], dict[str, str]]:
    """The messages and the trailers of a gRPC-Web response body."""
    messages: list[bytes] = []
    trailers: dict[str, str] = {}
    for flags, data in EnvelopeReader(1 << 20).feed(body):
        if flags & FLAG_TRAILER:
            trailers = dict(parse_trailers(data))
        else:
            messages.append(data)
    return messages, trailers


@pytest.mark.process
async def test_grpc_web_text_with_httpx(base_url: str) -> None:
    headers = {"content-type": "application/grpc-web-text", "x-grpc-web": "1"}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        ok = await client.post(
            GET_DOG, content=base64.b64encode(envelope(GetDogRequest(index=3).SerializeToString()))
        )  # no content type: Connect answers; the same path
        assert ok.status_code == 415
        request = base64.b64encode(envelope(GetDogRequest(index=3).SerializeToString()))
        found = await client.post(GET_DOG, content=request, headers=headers)
        assert found.status_code == 200
        assert found.headers["content-type"] == "application/grpc-web-text+proto"
        messages, trailers = split(unb64(found.content))
        assert [Dog.FromString(m) for m in messages] == [Dog(name="Dog 3", age=3)]
        assert trailers["grpc-status"] == "0"

        # A body sent in pieces, each frame base64-encoded on its own (padding in between).
        async def pieces() -> AsyncIterator[bytes]:
            data = base64.b64encode(envelope(JsonStreamRequest(interval_ms=1).SerializeToString()))
            for i in range(0, len(data), 3):
                yield data[i : i + 3]

        stream = await client.post(JSON_STREAM, content=pieces(), headers=headers)
        messages, trailers = split(unb64(stream.content))
        assert [Dog.FromString(m).name for m in messages] == [d["name"] for d in DOGS]
        assert trailers["grpc-status"] == "0"

        missing = await client.post(
            GET_DOG,
            content=base64.b64encode(envelope(GetDogRequest(index=42).SerializeToString())),
            headers=headers,
        )
        assert missing.status_code == 200
        messages, trailers = split(unb64(missing.content))
        assert messages == []
        assert trailers["grpc-status"] == str(int(Code.NOT_FOUND))
        assert trailers["grpc-message"] == "no dog 42; there are 10"
        assert trailers["x-dog-count"] == "10"
        status = status_pb2.Status.FromString(
            base64.b64decode(trailers["grpc-status-details-bin"] + "==")
        )
        info = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(info)
        assert info.reason == "NO_SUCH_DOG"

        bad = await client.post(GET_DOG, content=b"!!!!", headers=headers)
        _, trailers = split(unb64(bad.content))
        assert trailers["grpc-status"] == str(int(Code.INVALID_ARGUMENT))
        assert trailers["grpc-message"] == "grpc-web-text request body is not valid base64"

        late = await client.post(
            GET_DOG,
            content=envelope(GetDogRequest(index=1).SerializeToString()),
            headers={"content-type": "application/grpc-web+proto", "grpc-timeout": "soon"},
        )
        _, trailers = split(late.content)
        assert trailers["grpc-status"] == str(int(Code.INVALID_ARGUMENT))
        assert "grpc-timeout" in trailers["grpc-message"]


@pytest.mark.parametrize("mode", ["binary", "json"])
@pytest.mark.process
async def test_connect_node_grpc_web_transport(base_url: str, es_code: Path, mode: str) -> None:
    script = ROOT / "tests" / "node" / "grpc_web_client.mjs"
    result = await run_client("node", str(script), base_url, str(es_code), mode)
    assert result["dog"] == {"name": "Dog 3", "age": 3}
    assert (
        result["contentType"] == f"application/grpc-web+{'proto' if mode == 'binary' else 'json'}"
    )
    not_found = result["notFound"]
    assert (not_found["code"], not_found["rawMessage"]) == ("NotFound", "no dog 42; there are 10")
    assert [d["type"] for d in not_found["details"]] == ["google.rpc.ErrorInfo"]
    info = error_details_pb2.ErrorInfo.FromString(
        base64.b64decode(not_found["details"][0]["value"])
    )
    assert (info.reason, info.metadata["index"]) == ("NO_SUCH_DOG", "42")
    assert result["texts"] == TEXTS
    assert result["abort"]["code"] == "Canceled"
    assert result["dogs"] == DOGS
    assert result["upload"] == {
        "size": 1024 * 1024,
        "sha256": hashlib.sha256(payload()).hexdigest(),
        "filename": "grpc-web.bin",
    }
    assert result["deadline"]["code"] == "DeadlineExceeded"
    assert len(result["deadlineTexts"]) <= 1
    assert result["bidi"] == {"ok": "X"}  # bidi over HTTP/1.1: Node reads while it writes


def test_frame_header_layout() -> None:
    assert envelope(b"xy", 0x80)[:5] == struct.pack(">BI", 0x80, 2)
