"""Issue 11, items 1 and 9: a gRPC upload cut short (client cancel, deadline, drain) raises in
the handler, never ends cleanly, and the example stores nothing; its clean-up only ever
removes the temporary file it created itself. Real grpcio stubs on a real socket."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from google.api.httpbody_pb2 import HttpBody

from rpckit.grpc import GrpcServer
from rpckit.wellknown import upload_headers
from tests.hardening.uploads import RecordingUploads

pytestmark = pytest.mark.loopback

CHUNK = b"x" * 65536
ORIGINAL = {"hello.txt", "data.bin"}
TRIALS = 30


def _names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


async def _serve(service: RecordingUploads) -> tuple[GrpcServer, str]:
    server = GrpcServer([service])
    port = await server.start("127.0.0.1:0")
    return server, f"127.0.0.1:{port}"


async def _end(service: RecordingUploads) -> str:
    return await asyncio.wait_for(service.ends.get(), 10)


async def test_cancelled_upload_raises_in_handler_and_stores_nothing(
    files_dir: Path, grpc_stubs: ModuleType
) -> None:
    service = RecordingUploads(files_dir, signal_after=3 * len(CHUNK))
    server, address = await _serve(service)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = grpc_stubs.StreamsServiceStub(channel)
            for _ in range(TRIALS):  # the race between "stream ended" and "cancelled"
                service.receiving.clear()  # before the call: this call's handler sets it
                call = stub.UploadFileAsFileStream(
                    metadata=upload_headers("partial.bin", None), timeout=10
                )
                for _ in range(3):
                    await call.write(HttpBody(data=CHUNK))
                await asyncio.wait_for(service.receiving.wait(), 10)
                call.cancel()
                assert await _end(service) != "ok"
    finally:
        await server.stop(0)
    assert _names(files_dir) == ORIGINAL  # no partial file, no .part left over


async def test_deadline_mid_upload_raises_in_handler(
    files_dir: Path, grpc_stubs: ModuleType
) -> None:
    service = RecordingUploads(files_dir)
    server, address = await _serve(service)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = grpc_stubs.StreamsServiceStub(channel)
            call = stub.UploadFileAsFileStream(
                metadata=upload_headers("late.bin", None), timeout=0.5
            )
            await call.write(HttpBody(data=CHUNK))
            # never done_writing(): the deadline passes mid-upload
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert await _end(service) != "ok"
    finally:
        await server.stop(0)
    assert _names(files_dir) == ORIGINAL


async def test_drain_mid_upload_is_unavailable_and_stores_nothing(
    files_dir: Path, grpc_stubs: ModuleType
) -> None:
    service = RecordingUploads(files_dir)
    server, address = await _serve(service)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = grpc_stubs.StreamsServiceStub(channel)
        service.receiving.clear()
        call = stub.UploadFileAsFileStream(metadata=upload_headers("drained.bin", None), timeout=10)
        await call.write(HttpBody(data=CHUNK))
        await asyncio.wait_for(service.receiving.wait(), 10)
        stopping = asyncio.ensure_future(server.stop(0.2))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        await stopping
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await _end(service) != "ok"
    assert _names(files_dir) == ORIGINAL


async def test_complete_upload_is_stored_under_its_name(
    files_dir: Path, grpc_stubs: ModuleType
) -> None:
    service = RecordingUploads(files_dir)
    server, address = await _serve(service)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = grpc_stubs.StreamsServiceStub(channel)
            body = [HttpBody(data=CHUNK)] * 4
            summary = await stub.UploadFileAsFileStream(
                iter(body), metadata=upload_headers("whole.bin", None), timeout=10
            )
    finally:
        await server.stop(0)
    assert summary.filename == "whole.bin"
    assert (files_dir / "whole.bin").read_bytes() == CHUNK * 4
    assert _names(files_dir) == {*ORIGINAL, "whole.bin"}


async def test_cleanup_never_removes_what_it_did_not_create(
    files_dir: Path, grpc_stubs: ModuleType
) -> None:
    """Item 9: a dangling symlink with the uploaded name stays, and the upload is stored
    beside it under another name (no 500)."""
    (files_dir / "taken.bin").symlink_to(files_dir / "nowhere")
    service = RecordingUploads(files_dir)
    server, address = await _serve(service)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = grpc_stubs.StreamsServiceStub(channel)
            summary = await stub.UploadFileAsFileStream(
                iter([HttpBody(data=CHUNK)]), metadata=upload_headers("taken.bin", None), timeout=10
            )
    finally:
        await server.stop(0)
    assert (files_dir / "taken.bin").is_symlink()
    assert summary.filename == "taken (1).bin"
    assert (files_dir / "taken (1).bin").read_bytes() == CHUNK
