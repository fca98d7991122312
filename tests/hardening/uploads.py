"""The example service, recording how each file upload ended (for the hardening tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from examples.streams.server import StreamsExample
from examples.streams.v1.streams_pb2 import UploadSummary
from rpckit import Context, FileStream

__all__ = ["RecordingUploads"]


class RecordingUploads(StreamsExample):
    """``upload_file_as_file_stream`` as the example has it, plus: ``receiving`` is set once
    the first ``signal_after`` bytes have arrived (the test clears it before each call, so a
    set left by the previous call is never mistaken for this one's), and ``ends`` gets "ok"
    or the name of the exception the handler ended with."""

    def __init__(self, files_dir: Path, signal_after: int = 1) -> None:
        super().__init__(files_dir)
        self.signal_after = signal_after
        self.receiving = asyncio.Event()
        self.ends: asyncio.Queue[str] = asyncio.Queue()

    async def upload_file_as_file_stream(self, requests: FileStream, ctx: Context) -> UploadSummary:
        async def counted() -> AsyncIterator[bytes]:
            received = 0
            async for chunk in requests:
                received += len(chunk)
                if received >= self.signal_after:
                    self.receiving.set()
                yield chunk

        watched = FileStream(
            counted(), filename=requests.filename, size=requests.size,
            content_type=requests.content_type,
        )  # fmt: skip
        try:
            summary = await super().upload_file_as_file_stream(watched, ctx)
        except BaseException as exc:
            self.ends.put_nowait(type(exc).__name__)
            raise
        self.ends.put_nowait("ok")
        return summary
