"""The example served by rpckit's grpc.aio server, called by grpcio's own stubs and by
rpckit's typed client: every stream kind, errors, deadlines, cancellation, metadata."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.api.httpbody_pb2 import HttpBody
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import examples.streams.server as example_module
from examples.streams.server import StreamsExample
from examples.streams.v1.streams_pb2 import (
    ChatMessage,
    Dog,
    DownloadFileRequest,
    DownloadRequest,
    GetDogRequest,
    JsonStreamRequest,
    TextStreamRequest,
)
from examples.streams.v1.streams_rpckit import StreamsServiceClient
from rpckit import Code, Context, RpcError
from rpckit.client import ResponseMetadata
from rpckit.grpc import GrpcTransport
from rpckit.v1.stream_pb2 import Bytes
from rpckit.wellknown import upload_headers
from tests.support import serve_grpc

PAYLOAD = hashlib.sha256(b"seed").digest() * (1024 * 1024 // 32)  # 1 MiB, not all zeros
CHUNK = 64 * 1024


def chunks(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# --- through grpcio's own generated stubs ---------------------------------------------


async def test_stubs_unary_and_not_found(grpc_address: str, grpc_stubs: ModuleType) -> None:
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = grpc_stubs.StreamsServiceStub(channel)
        dog = await stub.GetDog(GetDogRequest(index=7), timeout=5)
        assert dog == Dog(name="Dog 7", age=7)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetDog(GetDogRequest(index=10), timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert caught.value.details() == "no dog 10; there are 10"


async def test_stubs_text_stream_items_in_order(grpc_address: str, grpc_stubs: ModuleType) -> None:
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = grpc_stubs.StreamsServiceStub(channel)
        call = stub.TextStream(TextStreamRequest(start=3, interval_ms=5), timeout=10)
        texts = []
        async for item in call:
            texts.append(item.text)
            if len(texts) == 4:
                break
        call.cancel()
    assert texts == [f"Hello, world! {n}" for n in range(3, 7)]


async def test_stubs_json_stream_all_dogs(grpc_address: str, grpc_stubs: ModuleType) -> None:
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = grpc_stubs.StreamsServiceStub(channel)
        call = stub.JsonStream(JsonStreamRequest(interval_ms=1), timeout=10)
        dogs = [dog async for dog in call]
        assert await call.code() == grpc.StatusCode.OK
    assert dogs == [Dog(name=f"Dog {i}", age=i % 10) for i in range(10)]


async def test_stubs_upload_bytes(grpc_address: str, grpc_stubs: ModuleType) -> None:
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = grpc_stubs.StreamsServiceStub(channel)
        summary = await stub.UploadAsByteStream(
            iter([Bytes(data=c) for c in chunks(PAYLOAD)]),
            metadata=upload_headers("../../etc/passwd", None),
            timeout=10,
        )
    assert summary.size == len(PAYLOAD)
    assert summary.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert summary.filename == "passwd"  # directory parts never reach the handler


async def test_stubs_download_own_source(grpc_address: str, grpc_stubs: ModuleType) -> None:
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = grpc_stubs.StreamsServiceStub(channel)
        call = stub.DownloadAsFileStream(DownloadRequest(), timeout=10)
        bodies = [body async for body in call]
        headers = dict(await call.initial_metadata())
    assert b"".join(b.data for b in bodies) == Path(example_module.__file__).read_bytes()
    assert bodies[0].content_type == "text/x-python; charset=utf-8"
    assert headers["content-disposition"] == 'attachment; filename="server.py"'
    assert headers["x-content-size"] == str(Path(example_module.__file__).stat().st_size)


async def test_stubs_download_file_and_traversal(
    grpc_address: str, grpc_stubs: ModuleType, files_dir: Path
) -> None:
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = grpc_stubs.StreamsServiceStub(channel)
        bodies = [b async for b in stub.DownloadFile(DownloadFileRequest(name="data.bin"))]
        assert b"".join(b.data for b in bodies) == (files_dir / "data.bin").read_bytes()
        assert len(bodies) > 1  # chunked, not one message
        bad = grpc.StatusCode.INVALID_ARGUMENT  # a name that can never be a file under the root
        missing = grpc.StatusCode.NOT_FOUND
        for name, code in [
            ("../secret.txt", bad),
            ("/etc/passwd", bad),
            ("..", bad),
            ("", bad),
            ("nope.txt", missing),
            ("%2e%2e/secret.txt", missing),  # no decoding on gRPC: a literal directory name
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stub.DownloadFile(DownloadFileRequest(name=name), timeout=5):
                    pass
            assert caught.value.code() == code, name


async def test_stubs_download_refuses_symlink_out(
    grpc_address: str, grpc_stubs: ModuleType, files_dir: Path
) -> None:
    (files_dir / "link.txt").symlink_to(files_dir.parent / "secret.txt")
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = grpc_stubs.StreamsServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.DownloadFile(DownloadFileRequest(name="link.txt"), timeout=5):
                pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_stubs_upload_file_stream(grpc_address: str, grpc_stubs: ModuleType) -> None:
    bodies = [HttpBody(content_type="application/pdf", data=c) for c in chunks(PAYLOAD)]
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = grpc_stubs.StreamsServiceStub(channel)
        summary = await stub.UploadFileAsFileStream(
            iter(bodies), metadata=upload_headers("résumé.pdf", len(PAYLOAD)), timeout=10
        )
    assert summary.size == len(PAYLOAD)
    assert summary.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert summary.filename == "résumé.pdf"


@pytest.mark.parametrize("slow_write", [0.0, 60.0])
async def test_example_upload_goes_to_a_thread_once_a_write_is_slow(
    grpc_address: str,
    grpc_stubs: ModuleType,
    files_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    slow_write: float,
) -> None:
    """The example hashes and writes each chunk on the event loop; once one write takes
    longer than ``SLOW_WRITE`` (0: the first one does), the rest of the upload goes to its
    worker thread in batches. Either way the file and its sha256 are the upload's."""
    handed: list[int] = []  # bytes per worker-thread job
    submit = example_module._UPLOAD_THREADS.submit

    def counting(fn: Any, batch: list[bytes]) -> Any:
        handed.append(sum(map(len, batch)))
        return submit(fn, batch)

    monkeypatch.setattr(example_module, "SLOW_WRITE", slow_write)
    monkeypatch.setattr(example_module._UPLOAD_THREADS, "submit", counting)
    payload = PAYLOAD * 3 + b"tail"
    bodies = [HttpBody(content_type="application/pdf", data=c) for c in chunks(payload)]
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = grpc_stubs.StreamsServiceStub(channel)
        summary = await stub.UploadFileAsFileStream(
            iter(bodies), metadata=upload_headers("slow.bin", len(payload)), timeout=10
        )
    assert summary.sha256 == hashlib.sha256(payload).hexdigest()
    assert (files_dir / summary.filename).read_bytes() == payload
    if slow_write == 0:  # the first chunk on the loop, every other byte in the thread
        assert sum(handed) == len(payload) - CHUNK
        assert max(handed) >= example_module.UPLOAD_BATCH
    else:
        assert handed == []


async def test_stubs_upload_size_mismatch_is_invalid_argument(
    grpc_address: str, grpc_stubs: ModuleType
) -> None:
    """The server rejects the upload as soon as it knows (for "10", at the first chunk),
    while the client may still be writing. grpcio's *aio* client can then report its own
    failed write ("Internal error from Core") instead of the server's status, so this uses
    grpcio's blocking client, which keeps the status the server sent."""

    def upload(declared: str) -> grpc.RpcError:
        with grpc.insecure_channel(grpc_address) as channel:
            stub = grpc_stubs.StreamsServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.UploadFileAsFileStream(
                    iter([HttpBody(data=c) for c in chunks(PAYLOAD)]),
                    metadata=[("x-content-size", declared)],
                    timeout=10,
                )
            return caught.value

    for declared in ["10", "not-a-number", str(len(PAYLOAD) + 1)]:
        error: Any = await asyncio.to_thread(upload, declared)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, declared
        assert "x-content-size" in (error.details() or "")


async def test_stubs_bidi_chat(grpc_address: str, grpc_stubs: ModuleType) -> None:
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = grpc_stubs.StreamsServiceStub(channel)
        call = stub.Chat(timeout=10)
        replies = []
        for text in ["hello", "rpckit"]:
            await call.write(ChatMessage(text=text))
            replies.append((await call.read()).text)  # one reply per message, as they go
        await call.done_writing()
        assert await call.read() == grpc.aio.EOF
    assert replies == ["HELLO", "RPCKIT"]


# --- through rpckit's typed client -------------------------------------------------------


async def test_client_every_method(grpc_client: StreamsServiceClient, files_dir: Path) -> None:
    assert await grpc_client.get_dog(GetDogRequest(index=2)) == Dog(name="Dog 2", age=2)

    async with grpc_client.text_stream(TextStreamRequest(interval_ms=1)) as texts:
        got = [(await anext(texts)).text for _ in range(3)]
    assert got == ["Hello, world! 0", "Hello, world! 1", "Hello, world! 2"]

    dogs = [d async for d in grpc_client.json_stream(JsonStreamRequest(interval_ms=0))]
    assert [d.name for d in dogs] == [f"Dog {i}" for i in range(10)]

    summary = await grpc_client.upload_as_byte_stream(
        [Bytes(data=c) for c in chunks(PAYLOAD)], metadata=upload_headers("a.bin", None)
    )
    assert (summary.size, summary.sha256, summary.filename) == (
        len(PAYLOAD),
        hashlib.sha256(PAYLOAD).hexdigest(),
        "a.bin",
    )

    response = ResponseMetadata()
    bodies = [
        b
        async for b in grpc_client.download_file(
            DownloadFileRequest(name="hello.txt"), response=response
        )
    ]
    assert b"".join(b.data for b in bodies) == b"Hello from rpckit!\n"
    assert bodies[0].content_type == "text/plain"
    assert response.headers.get("x-content-size") == "19"

    source = b"".join(
        [b.data async for b in grpc_client.download_as_file_stream(DownloadRequest())]
    )
    assert source == Path(example_module.__file__).read_bytes()

    async def file_chunks() -> AsyncIterator[HttpBody]:
        for c in chunks(PAYLOAD):
            yield HttpBody(content_type="application/octet-stream", data=c)

    summary = await grpc_client.upload_file_as_file_stream(
        file_chunks(), metadata=upload_headers("f.bin", len(PAYLOAD))
    )
    assert (summary.size, summary.filename) == (len(PAYLOAD), "f.bin")

    replies = [
        m.text async for m in grpc_client.chat([ChatMessage(text="a"), ChatMessage(text="b")])
    ]
    assert replies == ["A", "B"]


async def test_client_errors_carry_code_and_message(grpc_client: StreamsServiceClient) -> None:
    with pytest.raises(RpcError) as caught:
        await grpc_client.get_dog(GetDogRequest(index=99))
    assert caught.value.code is Code.NOT_FOUND
    assert caught.value.message == "no dog 99; there are 10"

    with pytest.raises(RpcError) as caught:
        async for _ in grpc_client.download_file(DownloadFileRequest(name="../secret.txt")):
            pass
    assert caught.value.code is Code.INVALID_ARGUMENT


# --- behaviour that needs an instrumented service ------------------------------------------


class Instrumented(StreamsExample):
    """The example with observable handlers for metadata, failures and deadlines."""

    def __init__(self, files_dir: Path) -> None:
        super().__init__(files_dir)
        self.seen_remaining: float | None = None
        self.handler_cancelled = asyncio.Event()
        self.seen_cancelled_flag = False

    async def get_dog(self, request: GetDogRequest, ctx: Context) -> Dog:
        if request.index == 100:  # slow: waits until the deadline cancels it
            self.seen_remaining = ctx.time_remaining()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.seen_cancelled_flag = ctx.cancelled
                self.handler_cancelled.set()
                raise
        if request.index == 101:
            raise ValueError("secret internal detail")
        if request.index == 102:
            raise RpcError(
                Code.FAILED_PRECONDITION,
                "dog asleep",
                [Dog(name="Rex", age=3)],
                metadata=[("x-why", "nap")],
            )
        ctx.response_headers.add("x-echo", ctx.request_headers.get("x-token") or "")
        ctx.response_headers.add("x-raw-bin", bytes([0, 1, 2, 255]))
        ctx.response_trailers.add("x-trailer", f"peer={bool(ctx.peer)}")
        return await super().get_dog(request, ctx)


@pytest.fixture
async def instrumented(files_dir: Path) -> AsyncIterator[tuple[Instrumented, str]]:
    service = Instrumented(files_dir)
    async with serve_grpc(service) as address:
        yield service, address


@pytest.mark.loopback
async def test_metadata_both_ways_client(instrumented: tuple[Instrumented, str]) -> None:
    _, address = instrumented
    async with GrpcTransport(address) as transport:
        client = StreamsServiceClient(transport)
        response = ResponseMetadata()
        dog = await client.get_dog(
            GetDogRequest(index=1), metadata={"x-token": "abc"}, response=response
        )
    assert dog.name == "Dog 1"
    assert response.headers.get("x-echo") == "abc"
    assert response.headers.get_bytes("x-raw-bin") == bytes([0, 1, 2, 255])
    assert response.trailers.get("x-trailer") == "peer=True"


@pytest.mark.loopback
async def test_metadata_both_ways_stubs(
    instrumented: tuple[Instrumented, str], grpc_stubs: ModuleType
) -> None:
    _, address = instrumented
    async with grpc.aio.insecure_channel(address) as channel:
        call = grpc_stubs.StreamsServiceStub(channel).GetDog(
            GetDogRequest(index=1), metadata=[("x-token", "xyz")], timeout=5
        )
        await call
        headers = dict(await call.initial_metadata())
        trailers = dict(await call.trailing_metadata())
    assert headers["x-echo"] == "xyz"
    assert headers["x-raw-bin"] == bytes([0, 1, 2, 255])
    assert trailers["x-trailer"] == "peer=True"


@pytest.mark.loopback
async def test_unexpected_exception_is_internal_without_details(
    instrumented: tuple[Instrumented, str], caplog: pytest.LogCaptureFixture
) -> None:
    _, address = instrumented
    async with GrpcTransport(address) as transport:
        client = StreamsServiceClient(transport)
        with (
            caplog.at_level(logging.ERROR, logger="rpckit.grpc"),
            pytest.raises(RpcError) as caught,
        ):
            await client.get_dog(GetDogRequest(index=101))
        assert caught.value.code is Code.INTERNAL
        assert caught.value.message == "internal error"
        assert "secret" not in str(caught.value)
        assert "secret internal detail" in caplog.text  # logged on the server, not sent
        assert (await client.get_dog(GetDogRequest(index=1))).name == "Dog 1"  # still serving


@pytest.mark.loopback
async def test_error_details_and_metadata(instrumented: tuple[Instrumented, str]) -> None:
    _, address = instrumented
    async with GrpcTransport(address) as transport:
        with pytest.raises(RpcError) as caught:
            await StreamsServiceClient(transport).get_dog(GetDogRequest(index=102))
    error = caught.value
    assert (error.code, error.message) == (Code.FAILED_PRECONDITION, "dog asleep")
    assert len(error.details) == 1
    dog = Dog()
    assert error.details[0].Unpack(dog)  # type: ignore[attr-defined]
    assert dog == Dog(name="Rex", age=3)
    assert ("x-why", "nap") in error.metadata


@pytest.mark.loopback
async def test_deadline_reaches_handler_and_cancels_it(
    instrumented: tuple[Instrumented, str],
) -> None:
    service, address = instrumented
    async with GrpcTransport(address) as transport:
        with pytest.raises(RpcError) as caught:
            await StreamsServiceClient(transport).get_dog(GetDogRequest(index=100), timeout=0.3)
    assert caught.value.code is Code.DEADLINE_EXCEEDED
    await asyncio.wait_for(service.handler_cancelled.wait(), timeout=5)
    assert service.seen_remaining is not None
    # The client's 0.3 s, as the server's deadline: grpc-timeout may round up by <1 ms.
    assert 0 < service.seen_remaining <= 0.301
    assert service.seen_cancelled_flag


async def test_deadline_on_stream(grpc_client: StreamsServiceClient) -> None:
    got: list[str] = []

    async def read_all() -> None:
        request = TextStreamRequest(interval_ms=10_000)
        async for item in grpc_client.text_stream(request, timeout=0.3):
            got.append(item.text)

    with pytest.raises(RpcError) as caught:
        await read_all()
    assert caught.value.code is Code.DEADLINE_EXCEEDED
    assert got == ["Hello, world! 0"]


class _Records(logging.Handler):
    """Sets an event when a log record matching ``needle`` arrives."""

    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle
        self.seen = asyncio.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        if self.needle in message:
            self.seen.set()


def _producer_tasks() -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and getattr(t.get_coro(), "__qualname__", "") == "_Spawned._run"
    ]


@pytest.mark.parametrize("client_kind", ["stubs", "rpckit"])
async def test_cancel_mid_stream_stops_the_producer(
    grpc_address: str, grpc_stubs: ModuleType, client_kind: str
) -> None:
    records = _Records("text stream: client gone")
    logger = logging.getLogger("examples.streams")
    logger.addHandler(records)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        async with grpc.aio.insecure_channel(grpc_address) as channel:
            if client_kind == "stubs":
                call = grpc_stubs.StreamsServiceStub(channel).TextStream(
                    TextStreamRequest(interval_ms=50), timeout=30
                )
                first = [(await call.read()).text for _ in range(3)]
                assert _producer_tasks()  # the producer is running while we read
                call.cancel()
            else:
                stream = StreamsServiceClient(GrpcTransport(channel)).text_stream(
                    TextStreamRequest(interval_ms=50)
                )
                first = [(await anext(stream)).text for _ in range(3)]
                assert _producer_tasks()
                await stream.aclose()
            loop = asyncio.get_running_loop()
            cancelled_at = loop.time()
            await asyncio.wait_for(records.seen.wait(), timeout=1.0)
            gone_after = loop.time() - cancelled_at
    finally:
        logger.removeHandler(records)
        logger.setLevel(old_level)
    assert first == ["Hello, world! 0", "Hello, world! 1", "Hello, world! 2"]
    assert gone_after < 1.0
    await asyncio.sleep(0)  # let the producer task finish the step that logged
    assert _producer_tasks() == []


@pytest.mark.loopback
async def test_max_message_size_is_resource_exhausted(files_dir: Path) -> None:
    service = StreamsExample(files_dir)
    async with (
        serve_grpc(service, max_message_size=64 * 1024) as address,
        grpc.aio.insecure_channel(address) as channel,
    ):
        upload = channel.stream_unary(
            "/examples.streams.v1.StreamsService/UploadAsByteStream",
            request_serializer=Bytes.SerializeToString,
            response_deserializer=lambda raw: raw,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await upload(iter([Bytes(data=b"x" * 100_000)]), timeout=5)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        client = StreamsServiceClient(GrpcTransport(channel))
        assert (await client.get_dog(GetDogRequest(index=4))).name == "Dog 4"


async def test_unknown_method_is_unimplemented(grpc_address: str) -> None:
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        call = channel.unary_unary("/examples.streams.v1.StreamsService/Nope")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_health_and_reflection(grpc_address: str) -> None:
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = await health.Check(
            health_pb2.HealthCheckRequest(service="examples.streams.v1.StreamsService"), timeout=5
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(timeout=5)
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        answer = await call.read()
        await call.done_writing()
    names = {s.name for s in answer.list_services_response.service}
    assert "examples.streams.v1.StreamsService" in names
    assert "grpc.health.v1.Health" in names
