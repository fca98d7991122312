"""Hardening 2, item 7: a gRPC upload buffers in the server no more than its stream window
(``--grpc-window``, 1 MiB by default) ahead of a handler that reads slowly.

grpc core's BDP probing grows the HTTP/2 windows with the measured bandwidth-delay
product; on loopback 20 uploads to a slow reader grew the server by ~8 MiB each. With the
probing off and the window bounded, each upload in flight costs the server about its
window. RSS from /proc; the uploads are real grpcio client streams.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from examples.streams.v1.streams_pb2 import UploadSummary
from rpckit.v1.stream_pb2 import Bytes
from tests.serving.process import Served
from tests.support import rss

pytestmark = pytest.mark.process

TARGET = "tests.hardening.slow_reader:create_service"
METHOD = "/examples.streams.v1.StreamsService/UploadAsByteStream"
UPLOADS = 20
SIZE = 40 << 20
CHUNK = 64 << 10
#: Seconds the uploads run against the slow reader while the server's RSS is sampled.
WATCH = 6.0
MiB = 1 << 20


@contextlib.contextmanager
def _serve(files: Path, *args: str) -> Iterator[tuple[Served, str]]:
    with Served(
        TARGET, "--grpc", "127.0.0.1:0", "--files", str(files), "--log-level", "warning", *args
    ) as served:
        port = served.ports(("gRPC",))["gRPC"]
        yield served, f"127.0.0.1:{port}"


def _method(channel: grpc.aio.Channel) -> grpc.aio.StreamUnaryMultiCallable:
    return channel.stream_unary(
        METHOD,
        request_serializer=Bytes.SerializeToString,
        response_deserializer=UploadSummary.FromString,
    )


async def _upload(call: grpc.aio.StreamUnaryCall, size: int, sent: list[int]) -> UploadSummary:
    chunk = Bytes(data=b"u" * CHUNK)
    while sent[0] < size:
        await call.write(chunk)
        sent[0] += CHUNK
    await call.done_writing()
    summary: UploadSummary = await call
    return summary


async def _slow_uploads(address: str, pid: int) -> tuple[int, int, int]:
    """Start the uploads against the slow reader, sample the server's RSS while they
    run; (RSS before, peak RSS, bytes sent in all)."""
    async with grpc.aio.insecure_channel(address) as channel:
        upload = _method(channel)
        warm = upload()  # the first call's one-time costs are not the uploads'
        await warm.write(Bytes(data=b"w"))
        await warm.done_writing()
        await asyncio.wait_for(warm, 20)
        before = rss(pid)
        sent = [[0] for _ in range(UPLOADS)]
        calls = [upload(timeout=120) for _ in range(UPLOADS)]
        tasks = [asyncio.create_task(_upload(c, SIZE, s)) for c, s in zip(calls, sent, strict=True)]
        peak = before
        loop = asyncio.get_running_loop()
        end = loop.time() + WATCH
        while loop.time() < end:
            await asyncio.sleep(0.25)
            peak = max(peak, rss(pid))
        assert not any(t.done() for t in tasks), "an upload ended early"
        for call in calls:
            call.cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
        return before, peak, sum(s[0] for s in sent)


def test_slow_reader_uploads_are_bounded_by_the_stream_window(files_dir: Path) -> None:
    with _serve(files_dir, "--read-every", "1") as (served, address):
        before, peak, sent = asyncio.run(_slow_uploads(address, served.process.pid))
    per_upload = (peak - before) / UPLOADS
    # What the clients sent beyond the handler's ~6 reads is what flow control let through.
    assert sent < UPLOADS * (2 * MiB + 8 * CHUNK), sent
    assert per_upload <= 2 * MiB, f"{per_upload / MiB:.2f} MiB per upload in flight"


async def _fast_uploads(address: str) -> list[UploadSummary]:
    async with grpc.aio.insecure_channel(address) as channel:
        upload = _method(channel)
        return await asyncio.wait_for(
            asyncio.gather(*(_upload(upload(timeout=120), SIZE, [0]) for _ in range(UPLOADS))),
            120,
        )


def test_fast_reader_uploads_complete_through_the_window(files_dir: Path) -> None:
    with _serve(files_dir, "--read-every", "0", "--grpc-window", str(256 << 10)) as (_, address):
        summaries = asyncio.run(_fast_uploads(address))
    assert [s.size for s in summaries] == [SIZE] * UPLOADS
