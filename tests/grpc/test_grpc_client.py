"""rpckit's gRPC client transport against a plain grpcio server: request metadata, codes."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from examples.streams.server import StreamsExample
from examples.streams.v1.streams_pb2 import ChatMessage, Dog
from examples.streams.v1.streams_rpckit import StreamsServiceClient
from rpckit import Code, RpcError
from rpckit.client import CallOptions
from rpckit.grpc import GrpcTransport
from rpckit.grpc.client import grpc_request_metadata
from rpckit.http import ConnectTransport
from rpckit.metadata import Metadata
from rpckit.service import MethodKind, MethodSpec
from tests.support import serve_grpc, serve_http

ECHO = MethodSpec("test.Echo", "Echo", "echo", MethodKind.UNARY, Empty, Empty)
RAW = b"\x00\x01\xfe\xff binary"


@pytest.fixture
async def received() -> AsyncIterator[tuple[str, list[tuple[str, str | bytes]]]]:
    """A grpcio server whose Echo method records the metadata it was called with."""
    seen: list[tuple[str, str | bytes]] = []

    async def echo(request: Empty, context: grpc.aio.ServicerContext[Empty, Empty]) -> Empty:
        seen.extend(
            (key, value)
            for key, value in context.invocation_metadata() or ()
            if key.startswith("x-")
        )
        return Empty()

    handler = grpc.unary_unary_rpc_method_handler(
        echo,
        request_deserializer=Empty.FromString,
        response_serializer=Empty.SerializeToString,
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Echo", {"Echo": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", seen
    finally:
        await server.stop(0)


@pytest.mark.loopback
async def test_bin_metadata_as_bytes_and_base64_text_reaches_a_grpcio_server(
    received: tuple[str, list[tuple[str, str | bytes]]],
) -> None:
    address, seen = received
    padded = base64.b64encode(RAW).decode()
    metadata: list[tuple[str, str | bytes]] = [
        ("x-raw-bin", RAW),  # bytes
        ("x-text-bin", padded),  # base64 text, as Metadata holds it
        ("x-unpadded-bin", padded.rstrip("=")),
        ("x-plain", "hello"),
    ]
    async with GrpcTransport(address) as transport:
        await transport.unary(ECHO, Empty(), CallOptions(timeout=5, metadata=metadata))
        md = Metadata()
        md["x-md-bin"] = RAW
        await transport.unary(ECHO, Empty(), CallOptions(timeout=5, metadata=md))
    assert seen == [
        ("x-raw-bin", RAW),
        ("x-text-bin", RAW),
        ("x-unpadded-bin", RAW),
        ("x-plain", "hello"),
        ("x-md-bin", RAW),
    ]


def test_bin_metadata_that_is_not_base64_is_a_one_line_value_error() -> None:
    with pytest.raises(ValueError, match=r"^metadata 'x-id-bin': a -bin value must be bytes"):
        grpc_request_metadata(CallOptions(metadata={"x-id-bin": "not base64!"}))


def test_url_safe_base64_text_is_accepted() -> None:
    text = base64.urlsafe_b64encode(RAW).decode()
    assert grpc_request_metadata(CallOptions(metadata={"X-Id-Bin": text})) == (("x-id-bin", RAW),)


@pytest.mark.loopback
async def test_error_from_grpcio_server_keeps_its_code() -> None:
    async def fail(request: Empty, context: grpc.aio.ServicerContext[Empty, Empty]) -> Empty:
        await context.abort(grpc.StatusCode.DATA_LOSS, "gone")
        raise AssertionError("abort returned")

    handler = grpc.unary_unary_rpc_method_handler(
        fail,
        request_deserializer=Empty.FromString,
        response_serializer=Empty.SerializeToString,
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Echo", {"Echo": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with GrpcTransport(f"127.0.0.1:{port}") as transport:
            with pytest.raises(RpcError) as caught:
                await transport.unary(ECHO, Empty(), CallOptions(timeout=5))
    finally:
        await server.stop(0)
    assert (caught.value.code, caught.value.message) == (Code.DATA_LOSS, "gone")


def _broken(first: Message) -> Iterator[Message]:
    yield first
    raise ValueError("the request source broke")


@pytest.mark.loopback
async def test_failing_requests_raise_their_own_error_not_cancelled(
    service: StreamsExample,
) -> None:
    """grpcio cancels a call whose request iterator raises; the caller gets that error."""
    async with serve_grpc(service) as address, GrpcTransport(address) as transport:
        client = StreamsServiceClient(transport)
        with pytest.raises(ValueError, match="the request source broke"):
            await client.adopt_dogs(_broken(Dog(name="Rex")))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="the request source broke"):
            async for _ in client.chat(_broken(ChatMessage(text="hi"))):  # type: ignore[arg-type]
                pass


@pytest.mark.loopback
async def test_one_message_for_a_client_stream_is_the_same_type_error_on_grpc_and_connect(
    service: StreamsExample,
) -> None:
    messages = []
    async with serve_grpc(service) as address, serve_http(service) as url:
        for transport in (GrpcTransport(address), ConnectTransport(url)):
            async with transport:
                with pytest.raises(TypeError) as caught:
                    await StreamsServiceClient(transport).adopt_dogs(Dog(name="Rex"))  # type: ignore[arg-type]
                messages.append(str(caught.value))
    assert messages[0] == messages[1]
    assert messages[0] == (
        "a streaming call takes an iterable or async iterable of requests, not a Dog; "
        "pass [request] for a single one"
    )
