"""The example service with an UploadAsByteStream that reads slowly (for the flow-control
tests): one chunk every ``--read-every`` seconds, so that what a client sends piles up in
the server unless flow control stops it."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path

from examples.streams.server import StreamsExample
from examples.streams.v1.streams_pb2 import UploadSummary
from rpckit import ByteStream, Context

__all__ = ["SlowReader", "create_service"]


class SlowReader(StreamsExample):
    """``upload_as_byte_stream`` counts the bytes, waiting ``read_every`` seconds after each
    chunk (0: reads as fast as the data comes)."""

    def __init__(self, files_dir: Path, read_every: float) -> None:
        super().__init__(files_dir)
        self.read_every = read_every

    async def upload_as_byte_stream(self, requests: ByteStream, ctx: Context) -> UploadSummary:
        size = 0
        async for chunk in requests:
            size += len(chunk)
            if self.read_every:
                await asyncio.sleep(self.read_every)
        return UploadSummary(size=size, filename=ctx.upload_filename or "")


def create_service(argv: Sequence[str] = ()) -> SlowReader:
    """``--files DIR --read-every SECONDS``."""
    parser = argparse.ArgumentParser(prog="tests.hardening.slow_reader")
    parser.add_argument("--files", type=Path, required=True)
    parser.add_argument("--read-every", type=float, default=1.0)
    args = parser.parse_args(list(argv))
    return SlowReader(args.files, args.read_every)
