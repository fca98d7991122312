"""The gRPC-Web Python client: its pure helpers (property-tested), its handling of odd servers
(httpx mock transports), and every call shape against ``rpckit serve`` as a real process, in
binary and ``-text`` bodies, ``proto`` and ``json``; ``rpckit call --protocol grpc-web``."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.streams.v1.streams_pb2 import (
    ChatMessage,
    Dog,
    GetDogRequest,
    JsonStreamRequest,
    TextStreamRequest,
)
from examples.streams.v1.streams_rpckit import StreamsServiceClient, StreamsServiceMethods
from rpckit.client import CallOptions, ResponseMetadata, StreamCall
from rpckit.errors import Code, RpcError
from rpckit.http import GrpcWebTransport
from rpckit.http.grpc_web.protocol import (
    FLAG_TRAILER,
    RESPONSE_PROTOCOL_HEADERS,
    encode_grpc_timeout,
    parse_grpc_timeout,
    parse_trailers,
    status_from_trailers,
    trailer_frame,
)
from rpckit.http.wire import envelope
from rpckit.metadata import Metadata
from rpckit.status import STATUS_DETAILS_KEY
from rpckit.v1.stream_pb2 import Text
from tests.http.connect.test_connect_interop import SERVER_START_TIMEOUT, _http_address, _terminate
from tests.support import ROOT

T = TypeVar("T")
EXAMPLES = int(os.environ.get("RPCKIT_FUZZ_EXAMPLES", "200"))
DOGS = [Dog(name=f"Dog {i}", age=i) for i in range(10)]
VARIANTS = [("proto", False), ("proto", True), ("json", False), ("json", True)]


# --- pure helpers ---------------------------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.floats(min_value=0.0, max_value=1e11, allow_nan=False))
def test_grpc_timeout_round_trip_never_shortens(seconds: float) -> None:
    value = encode_grpc_timeout(seconds)
    assert len(value) <= 9
    back = parse_grpc_timeout(value)
    assert back is not None
    assert back >= seconds * (1 - 1e-12)
    assert back <= seconds * (1 + 1e-5) + 1e-9  # a coarser unit starts at 100000 of it


_TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)
_VALUE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**31 - 1),
    st.text(max_size=40),
    st.lists(st.tuples(_TOKEN.map(lambda k: "x-" + k), _VALUE), max_size=5),
)
def test_status_from_trailer_frame_round_trip(
    code: int, message: str, pairs: list[tuple[str, str]]
) -> None:
    data = trailer_frame(Code(code), message, pairs)
    error = status_from_trailers(parse_trailers(data[5:]))
    if code == 0:
        assert error is None
        return
    assert error is not None
    assert int(error.code) == code
    assert error.message == message
    assert error.details == []
    assert error.metadata == pairs


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.binary(max_size=200))
def test_status_from_any_trailer_bytes_is_an_error_or_ok(data: bytes) -> None:
    try:
        trailers = parse_trailers(data)
    except RpcError as refused:
        code = refused.code
        assert code is Code.INTERNAL
        return
    error = status_from_trailers(trailers)
    assert error is None or isinstance(error, RpcError)
    if error is not None:
        assert all(key not in RESPONSE_PROTOCOL_HEADERS for key, _ in error.metadata)


def test_status_details_and_missing_status() -> None:
    info = error_details_pb2.ErrorInfo(reason="R")
    status = status_pb2.Status(code=5, message="m")
    status.details.add().Pack(info)
    trailers = Metadata(
        [
            ("grpc-status", "5"),
            ("grpc-message", "no dog"),
            (STATUS_DETAILS_KEY, base64.b64encode(status.SerializeToString()).decode().rstrip("=")),
        ]
    )
    error = status_from_trailers(trailers)
    assert error is not None
    assert (error.code, error.message, error.metadata) == (Code.NOT_FOUND, "no dog", [])
    got = error_details_pb2.ErrorInfo()
    detail = error.details[0]
    assert isinstance(detail, any_pb2.Any)
    assert detail.Unpack(got)
    assert got.reason == "R"
    missing = status_from_trailers(Metadata([("x-a", "1")]))
    assert missing is not None
    assert (missing.code, missing.metadata) == (Code.UNKNOWN, [("x-a", "1")])
    bad = status_from_trailers(Metadata([("grpc-status", "five")]))
    assert bad is not None
    assert bad.code is Code.UNKNOWN
    assert "malformed grpc-status" in bad.message


# --- odd servers (httpx mock transport) -----------------------------------------------------


class _Body(httpx.AsyncByteStream):
    """A response body from chunks; remembers whether the client closed it."""

    def __init__(self, chunks: list[bytes], endless: bool = False) -> None:
        self.chunks = chunks
        self.endless = endless
        self.closed = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.endless:
            await asyncio.Event().wait()  # never ends; the client must close it

    async def aclose(self) -> None:
        self.closed.set()


def _mock(
    status: int,
    headers: list[tuple[str, str]],
    body: _Body,
    seen: list[httpx.Request],
    *,
    text: bool = False,
) -> GrpcWebTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, headers=headers, stream=body)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return GrpcWebTransport("http://mock", client=client, text=text)


_WEB = [("content-type", "application/grpc-web+proto")]
_OK = trailer_frame(Code.OK, "", [])


async def _get_dog(transport: GrpcWebTransport, options: CallOptions | None = None) -> Dog:
    method = StreamsServiceMethods.get_dog
    return await transport.unary(method, GetDogRequest(index=1), options or CallOptions())


async def test_request_headers_and_trailers_only_response() -> None:
    seen: list[httpx.Request] = []
    headers = [*_WEB, ("grpc-status", "7"), ("grpc-message", "go%20away"), ("x-why", "policy")]
    response = ResponseMetadata()
    sent_metadata: dict[str, str | bytes] = {"x-a": "1", "x-b-bin": b"\x00"}
    transport = _mock(200, headers, _Body([]), seen)
    with pytest.raises(RpcError) as denied:
        await _get_dog(transport, CallOptions(2.5, sent_metadata, response))
    assert (denied.value.code, denied.value.message) == (Code.PERMISSION_DENIED, "go away")
    assert response.trailers == Metadata([("x-why", "policy")])
    sent = seen[0].headers
    assert sent["content-type"] == "application/grpc-web+proto"
    assert sent["x-grpc-web"] == "1"
    assert sent["grpc-timeout"] == "2500000u"
    assert (sent["x-a"], sent["x-b-bin"]) == ("1", "AA==")
    assert seen[0].url.path == "/examples.streams.v1.StreamsService/GetDog"


@pytest.mark.parametrize(
    ("status", "chunks", "code", "text"),
    [
        (200, [envelope(Dog(name="a").SerializeToString())], Code.INTERNAL, "without trailers"),
        (200, [envelope(b"abc")[:4]], Code.INTERNAL, "without trailers"),
        (200, [_OK], Code.INTERNAL, "without a response message"),
        (200, [envelope(b"no colon\r\n", FLAG_TRAILER)], Code.INTERNAL, "malformed"),
        (404, [b"not here"], Code.UNIMPLEMENTED, "HTTP 404"),
        (415, [b'{"code":"unimplemented","message":"no"}'], Code.UNKNOWN, "HTTP 415: no"),
        (503, [], Code.UNAVAILABLE, "HTTP 503"),
    ],
)
async def test_bad_responses_are_one_line_errors(
    status: int, chunks: list[bytes], code: Code, text: str
) -> None:
    transport = _mock(status, _WEB, _Body(chunks), [])
    with pytest.raises(RpcError) as failed:
        await _get_dog(transport)
    assert failed.value.code is code
    assert text in failed.value.message
    assert "\n" not in failed.value.message


async def test_text_response_with_bad_base64_is_internal() -> None:
    transport = _mock(200, _WEB, _Body([b"!!!!"]), [], text=True)
    with pytest.raises(RpcError) as failed:
        await _get_dog(transport)
    assert failed.value.code is Code.INTERNAL
    assert failed.value.message == "grpc-web-text response body is not valid base64"


async def test_aclose_cancels_the_request() -> None:
    body = _Body([envelope(Dog(name="a").SerializeToString())], endless=True)
    transport = _mock(200, _WEB, body, [])
    stream = transport.server_stream(
        StreamsServiceMethods.json_stream, JsonStreamRequest(), CallOptions()
    )
    first = await anext(stream)
    assert isinstance(first, Dog)
    assert not body.closed.is_set()
    await stream.aclose()
    await asyncio.wait_for(body.closed.wait(), 5)


# --- against rpckit serve -------------------------------------------------------------------


@pytest.fixture
async def base_url(tmp_path: Path) -> AsyncIterator[str]:
    """``rpckit serve`` of the example (error details, metadata echo) as a real process."""
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rpckit", "serve",
            "tests.http.grpc_web.grpc_web_client_service:create_service",
            "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=log,
        )  # fmt: skip
    try:
        address = await asyncio.wait_for(_http_address(process), SERVER_START_TIMEOUT)
        assert address, f"no HTTP address from rpckit serve:\n{log_path.read_text()}"
        yield f"http://{address}"
    finally:
        await _terminate(process)


async def _drain(stream: StreamCall[T], into: list[T], *, limit: int) -> None:
    """Read a stream to its end into ``into`` (at most ``limit`` items), then close it."""
    async with stream:
        async for item in stream:
            into.append(item)
            assert len(into) < limit


@pytest.mark.process
async def test_every_call_shape(base_url: str) -> None:
    for encoding, text in VARIANTS:
        async with GrpcWebTransport(base_url, encoding=encoding, text=text) as transport:
            client = StreamsServiceClient(transport)
            where = f"{encoding}, text={text}"
            assert await client.get_dog(GetDogRequest(index=3)) == Dog(name="Dog 3", age=3), where

            with pytest.raises(RpcError) as missing:
                await client.get_dog(GetDogRequest(index=42))
            assert missing.value.code is Code.NOT_FOUND, where
            assert missing.value.message == "no dog 42; there are 10"
            info = error_details_pb2.ErrorInfo()
            detail = missing.value.details[0]
            assert isinstance(detail, any_pb2.Any)
            assert detail.Unpack(info)
            assert info.reason == "NO_SUCH_DOG"
            assert ("x-dog-count", "10") in missing.value.metadata

            async with client.json_stream(JsonStreamRequest(interval_ms=1)) as dogs:
                assert [dog async for dog in dogs] == DOGS, where

            summary = await client.adopt_dogs(Dog(name=f"d{i}", age=i) for i in range(5))
            assert (summary.count, summary.total_age) == (5, 10), where
            assert list(summary.names) == [f"d{i}" for i in range(5)]


@pytest.mark.process
async def test_client_stream_is_streamed_and_rejected_midway(base_url: str) -> None:
    sent: list[int] = []

    async def dogs() -> AsyncIterator[Dog]:
        for i in range(3):
            sent.append(i)
            yield Dog(name=f"d{i}" if i != 1 else "", age=i)

    async with GrpcWebTransport(base_url) as transport:
        with pytest.raises(RpcError) as refused:
            await StreamsServiceClient(transport).adopt_dogs(dogs())
    assert refused.value.code is Code.INVALID_ARGUMENT
    assert refused.value.message == "dog 1 has no name"
    assert sent[:2] == [0, 1]


@pytest.mark.process
async def test_deadline_on_an_endless_stream(base_url: str) -> None:
    async with GrpcWebTransport(base_url, text=True) as transport:
        client = StreamsServiceClient(transport)
        got: list[Text] = []
        loop = asyncio.get_running_loop()
        started = loop.time()
        endless = client.text_stream(TextStreamRequest(interval_ms=20), timeout=0.5)
        with pytest.raises(RpcError) as late:
            await _drain(endless, got, limit=10_000)
        assert late.value.code is Code.DEADLINE_EXCEEDED
        assert loop.time() - started < 5
        assert [text.text for text in got][:2] == ["Hello, world! 0", "Hello, world! 1"]


@pytest.mark.process
async def test_metadata_both_ways(base_url: str) -> None:
    for text in (False, True):
        async with GrpcWebTransport(base_url, text=text) as transport:
            response = ResponseMetadata()
            dog = await StreamsServiceClient(transport).get_dog(
                GetDogRequest(index=2),
                metadata=[("x-echo", "hello"), ("x-echo-bin", b"\x00\x01\xff")],
                response=response,
            )
            assert dog.name == "Dog 2"
            assert response.headers.get("x-echo") == "hello"
            assert "content-type" not in response.headers
            assert "grpc-status" not in response.trailers
            assert response.trailers.get_bytes("x-echo-bin") == b"\xff\x01\x00"

            failed = ResponseMetadata()
            with pytest.raises(RpcError):
                await StreamsServiceClient(transport).get_dog(
                    GetDogRequest(index=99), response=failed
                )
            assert failed.trailers.get("x-dog-count") == "10"


@pytest.mark.process
async def test_bidi_is_refused(base_url: str) -> None:
    async with GrpcWebTransport(base_url) as transport:
        replies = StreamsServiceClient(transport).chat([ChatMessage(text="hi")])
        with pytest.raises(RpcError) as refused:
            await _drain(replies, [], limit=10)
    assert refused.value.code is Code.UNIMPLEMENTED
    assert "bidi" in refused.value.message
    assert "\n" not in refused.value.message


async def _rpckit_call(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rpckit", "call", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.process
async def test_rpckit_call_over_grpc_web(base_url: str) -> None:
    method = "examples.streams.v1.StreamsService/GetDog"
    code, out, err = await _rpckit_call(
        "--protocol", "grpc-web", base_url, method, "-d", '{"index":3}'
    )
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [{"name": "Dog 3", "age": 3}]

    code, out, err = await _rpckit_call(
        "--protocol", "grpc-web", base_url, method, "-d", '{"index":99}'
    )
    assert code == 64 + int(Code.NOT_FOUND)
    assert err.startswith("rpckit call: not_found (code 5): no dog 99; there are 10")
    assert "Traceback" not in err

    code, out, err = await _rpckit_call(
        "--protocol", "grpc-web", base_url, "examples.streams.v1.StreamsService/JsonStream",
        "-d", '{"intervalMs":1}',
    )  # fmt: skip
    assert code == 0, err
    assert len(out.splitlines()) == 10
