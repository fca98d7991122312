"""The streams example: every Dioxus "Streams and SSE" example, implemented once.

Serve it with ``rpckit serve examples.streams.server:create_service --grpc 127.0.0.1:50051``
(``--files DIR`` picks the directory DownloadFile serves; default: a temp dir with a sample).
``rpckit serve`` logs one access line per call; add ``--interceptor
examples.streams.server:upload_auth`` to make both uploads (UploadAsByteStream and
UploadWithProgress) need a bearer token (``demo-token``, or ``$STREAMS_UPLOAD_TOKEN``;
``guest-token`` is known but not allowed).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from examples.streams.v1.streams_pb2 import (
    AdoptionSummary,
    ChatMessage,
    CompleteRequest,
    Dog,
    DownloadFileRequest,
    DownloadRequest,
    FileInfo,
    GetDogRequest,
    JsonStreamRequest,
    ListFilesRequest,
    ListFilesResponse,
    TextStreamRequest,
    Token,
    UploadProgress,
    UploadSummary,
)
from examples.streams.v1.streams_rpckit import StreamsService
from rpckit import ByteStream, Code, Context, Event, FileStream, RpcError, Sender, Streaming
from rpckit.durable import durable
from rpckit.files import truncate_utf8
from rpckit.interceptors.auth import BearerAuth
from rpckit.numbers import parse_int

__all__ = ["StreamsExample", "create_service", "upload_auth"]

log = logging.getLogger("examples.streams")

DEFAULT_INTERVAL_MS = 500
#: How soon (ms) an EventSource reconnects after the server drops the stream.
SSE_RETRY_MS = 1000
DOG_COUNT = 10
#: File names are bounded in bytes: most file systems refuse names over 255 bytes.
MAX_NAME_BYTES = 255
#: Complete's defaults and bounds.
DEFAULT_TOKENS = 40
MAX_TOKENS = 10_000
DEFAULT_TOKEN_MS = 150
#: The words Complete's made-up answers are drawn from.
WORDS = [
    "streams",
    "survive",
    "reloads",
    "and",
    "deploys",
    "because",
    "every",
    "token",
    "goes",
    "to",
    "a",
    "log",
    "first",
    "then",
    "each",
    "reader",
    "follows",
    "that",
    "log",
    "from",
    "its",
    "own",
    "offset",
    "on",
    "any",
    "instance",
    "while",
    "the",
    "producer",
    "keeps",
    "its",
    "lease",
    "and",
    "writes",
    "once",
]


class StreamsExample(StreamsService):
    """The example handlers; ``files_dir`` is the only directory DownloadFile reads from."""

    def __init__(self, files_dir: Path) -> None:
        self.files_dir = files_dir.resolve()
        #: How many Complete generations this instance has started.
        self.generations = 0

    async def text_stream(self, request: TextStreamRequest, ctx: Context) -> Streaming[Event[str]]:
        count = _resume(ctx, request.start if request.HasField("start") else 0)
        interval = _interval(request.interval_ms if request.HasField("interval_ms") else None)

        async def produce(tx: Sender[Event[str]]) -> None:
            nonlocal count
            # Each item carries its number as an SSE id, so a reconnecting EventSource
            # resumes right after the last item it saw (see _resume); the first one also
            # asks for a quick reconnect.
            retry: int | None = SSE_RETRY_MS
            while await tx.send(Event(f"Hello, world! {count}", id=str(count), retry=retry)):
                count += 1
                retry = None
                await asyncio.sleep(interval)
            log.info("text stream: client gone at %d", count)

        return Streaming.spawn(produce)

    async def json_stream(self, request: JsonStreamRequest, ctx: Context) -> Streaming[Event[Dog]]:
        interval = _interval(request.interval_ms if request.HasField("interval_ms") else None)
        first = _resume(ctx, 0)

        async def produce(tx: Sender[Event[Dog]]) -> None:
            for count in range(first, DOG_COUNT):
                dog = Dog(name=f"Dog {count}", age=count % 10)
                if not await tx.send(Event(dog, id=str(count))):
                    break
                if count < DOG_COUNT - 1:
                    await asyncio.sleep(interval)

        return Streaming.spawn(produce)

    async def upload_as_byte_stream(self, requests: ByteStream, ctx: Context) -> UploadSummary:
        return await _summarise(requests, ctx.upload_filename or "")

    async def download_as_file_stream(self, request: DownloadRequest, ctx: Context) -> FileStream:
        return FileStream.from_path(__file__, content_type="text/x-python; charset=utf-8")

    async def download_file(self, request: DownloadFileRequest, ctx: Context) -> FileStream:
        # request.name is the client's (a percent-decoded path variable): from_root refuses
        # names that could leave files_dir, and hidden files such as unfinished .part uploads.
        return FileStream.from_root(self.files_dir, request.name)

    async def upload_file_as_file_stream(self, requests: FileStream, ctx: Context) -> UploadSummary:
        """Stream the upload to disk chunk by chunk (memory stays flat, whatever the size).

        The pattern for every file handler: write to a temporary name this handler created
        itself, and give the file its real name only once the whole upload has arrived. A
        stream cut short (client gone, deadline, drain, a size that disagrees with
        x-content-size) raises out of ``async for``, and only the temporary file is removed.
        """
        fd, temporary = tempfile.mkstemp(dir=self.files_dir, prefix=".upload-", suffix=".part")
        part = Path(temporary)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                disk = _DiskWriter(digest, out)
                try:
                    async for chunk in requests:
                        size += len(chunk)
                        await disk.add(chunk)
                    await disk.finish()
                finally:
                    disk.settle()  # no write may still run once the file is closed
            name = requests.filename or "upload.bin"
            target = await asyncio.to_thread(_publish, part, self.files_dir, name)
        finally:
            # Ours alone (mkstemp's). Not in a thread: a second cancellation (the deadline,
            # then grpcio's own) could cancel the job before it ran and leave the file.
            part.unlink(missing_ok=True)  # noqa: ASYNC240  # one quick unlink, on purpose
        return UploadSummary(size=size, sha256=digest.hexdigest(), filename=target.name)

    async def list_files(self, request: ListFilesRequest, ctx: Context) -> ListFilesResponse:
        entries = await asyncio.to_thread(_list_files, self.files_dir)
        return ListFilesResponse(files=entries)

    async def adopt_dogs(self, requests: AsyncIterator[Dog], ctx: Context) -> AdoptionSummary:
        summary = AdoptionSummary()
        async for dog in requests:
            if not dog.name:
                raise RpcError(Code.INVALID_ARGUMENT, f"dog {summary.count} has no name")
            summary.count += 1
            summary.total_age += dog.age
            summary.names.append(dog.name)
        return summary

    async def get_dog(self, request: GetDogRequest, ctx: Context) -> Dog:
        if request.index >= DOG_COUNT:
            raise RpcError(Code.NOT_FOUND, f"no dog {request.index}; there are {DOG_COUNT}")
        return Dog(name=f"Dog {request.index}", age=request.index % 10)

    async def chat(
        self, requests: AsyncIterator[ChatMessage], ctx: Context
    ) -> AsyncIterator[ChatMessage]:
        async def echo() -> AsyncIterator[ChatMessage]:
            async for message in requests:
                yield ChatMessage(text=message.text.upper())

        return echo()

    async def upload_with_progress(
        self, requests: ByteStream, ctx: Context
    ) -> AsyncIterator[UploadProgress]:
        async def report() -> AsyncIterator[UploadProgress]:
            digest = hashlib.sha256()
            received = 0
            async for chunk in requests:
                digest.update(chunk)
                received += len(chunk)
                yield UploadProgress(received=received)
            yield UploadProgress(received=received, sha256=digest.hexdigest())

        return report()

    @durable(ttl=600, max_items=MAX_TOKENS + 1, lease_seconds=3)
    async def complete(self, request: CompleteRequest, ctx: Context) -> AsyncIterator[Token]:
        """Tokens at a human pace, as a language model streams them: expensive and not
        repeatable, so durable: produced once, read by every reader from its offset."""
        count = request.tokens or DEFAULT_TOKENS
        if count > MAX_TOKENS:
            raise RpcError(Code.INVALID_ARGUMENT, f"tokens: at most {MAX_TOKENS}")
        interval = (request.interval_ms or DEFAULT_TOKEN_MS) / 1000
        generation = os.urandom(8).hex()
        self.generations += 1
        log.info("complete: generation %s started (%d tokens)", generation, count)
        start = int.from_bytes(hashlib.sha256(request.prompt.encode()).digest()[:4], "big")
        for index in range(count):
            if index:
                await asyncio.sleep(interval)
            word = WORDS[(start + index) % len(WORDS)]
            yield Token(text=word + " ", index=index, generation=generation)
        log.info("complete: generation %s finished", generation)


#: Bytes of an upload gathered before they are hashed and written in one worker-thread job.
UPLOAD_BATCH = 1024 * 1024
#: Seconds one write() may take on the event loop before the rest of the upload goes to a
#: worker thread: the page cache takes a 256 KiB chunk in well under a millisecond; a disk
#: that throttles writes takes far longer, and then it stalls only the thread.
SLOW_WRITE = 0.005


class _DiskWriter:
    """Hashes and writes an upload's chunks on the event loop while the disk keeps up, and
    in a worker thread once it does not.

    On the event loop each chunk costs what bare Starlette's ``request.stream()`` loop costs:
    a thread hand-off per batch took 0.2-0.4 s more CPU per GB (1.45-1.64 against 1.27 s/GB)
    for no more throughput, measured both ways with ``bench/peers.py --only upload``
    (``bench/README.md``). A write that takes longer than ``SLOW_WRITE`` switches the rest
    of the upload to batches of ``UPLOAD_BATCH`` bytes hashed and written in a worker thread
    (at most one job running and one batch waiting: memory stays flat), so that a slow disk
    stalls one upload, not every call on the event loop."""

    def __init__(self, digest: Any, out: Any) -> None:
        self._digest = digest
        self._out = out
        #: Whether chunks are still hashed and written on the event loop.
        self.inline = True
        self._batch: list[bytes] = []
        self._size = 0
        self._job: concurrent.futures.Future[None] | None = None

    async def add(self, chunk: bytes) -> None:
        if self.inline:
            self._digest.update(chunk)
            started = time.perf_counter()
            self._out.write(chunk)
            took = time.perf_counter() - started
            if took > SLOW_WRITE:  # the disk is slow: the rest goes to a worker thread
                self.inline = False
                log.debug("upload: a write took %.1f ms; the rest goes to a thread", took * 1e3)
            return
        self._batch.append(chunk)
        self._size += len(chunk)
        if self._size >= UPLOAD_BATCH:
            await self._flush()

    async def finish(self) -> None:
        """Hash and write what is left and wait for it."""
        await self._flush()
        await self._wait()

    def settle(self) -> None:
        """Block until the running job (at most one batch) is done: after a failure or a
        cancellation, before the file is closed."""
        if self._job is not None:
            concurrent.futures.wait([self._job])

    async def _flush(self) -> None:
        await self._wait()  # the previous batch first: the hash takes the bytes in order
        batch, self._batch, self._size = self._batch, [], 0
        if batch:
            self._job = _UPLOAD_THREADS.submit(self._absorb, batch)

    async def _wait(self) -> None:
        if self._job is not None:
            await asyncio.wrap_future(self._job)
            self._job = None

    def _absorb(self, batch: list[bytes]) -> None:
        for chunk in batch:
            self._digest.update(chunk)
        self._out.writelines(batch)


_UPLOAD_THREADS = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="uploads")


def _publish(temporary: Path, directory: Path, name: str) -> Path:
    """Give a complete upload its name: ``name`` in ``directory``, or ``name (1)`` ... when
    taken (by anything, a dangling symlink included). A hard link never replaces an existing
    entry, so no other file is ever overwritten; every candidate fits in 255 UTF-8 bytes."""
    for n in range(1000):
        candidate = directory / truncate_utf8(name, MAX_NAME_BYTES, f" ({n})" if n else "")
        try:
            os.link(temporary, candidate)
        except FileExistsError:
            continue
        return candidate
    raise RpcError(Code.ALREADY_EXISTS, f"too many files named {name!r}")


def _list_files(directory: Path) -> list[FileInfo]:
    files = (
        p
        for p in sorted(directory.iterdir())
        if p.is_file() and not p.is_symlink() and not p.name.startswith(".")  # .part: unfinished
    )
    return [FileInfo(name=p.name, size=p.stat().st_size) for p in files]


def _resume(ctx: Context, start: int) -> int:
    """Where a stream starts: after the Last-Event-ID a reconnecting client sent, if any."""
    last = ctx.last_event_id
    if last is None:
        return start
    return parse_int(last, "Last-Event-ID", maximum=2**62) + 1


def _interval(interval_ms: int | None) -> float:
    return (DEFAULT_INTERVAL_MS if interval_ms is None else interval_ms) / 1000


async def _summarise(chunks: ByteStream | FileStream, filename: str) -> UploadSummary:
    digest = hashlib.sha256()
    size = 0
    async for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return UploadSummary(size=size, sha256=digest.hexdigest(), filename=filename)


def sample_files() -> Path:
    """A temp directory with a couple of small files to download."""
    directory = Path(tempfile.mkdtemp(prefix="rpckit-files-"))
    (directory / "hello.txt").write_text("Hello from rpckit!\n")
    (directory / "numbers.csv").write_text("".join(f"{i},{i * i}\n" for i in range(1000)))
    return directory


def create_service(argv: Sequence[str] = ()) -> StreamsExample:
    """Build the service from ``rpckit serve`` extra arguments: ``[--files DIR]``."""
    parser = argparse.ArgumentParser(prog="examples.streams.server")
    parser.add_argument("--files", type=Path, help="directory DownloadFile serves")
    args = parser.parse_args(list(argv))
    files = args.files if args.files is not None else sample_files()
    if not files.is_dir():
        parser.error(f"--files {files} is not a directory")
    return StreamsExample(files)


#: The token the demo accepts for uploads unless ``STREAMS_UPLOAD_TOKEN`` names another.
DEMO_TOKEN = "demo-token"
#: A token the demo knows but does not let upload (answered ``permission_denied``).
GUEST_TOKEN = "guest-token"


#: The uploads ``upload_auth`` protects: both take raw bytes from the caller.
UPLOAD_METHODS = frozenset(
    {
        "examples.streams.v1.StreamsService/UploadAsByteStream",
        "examples.streams.v1.StreamsService/UploadWithProgress",
    }
)


def upload_auth() -> BearerAuth:
    """``--interceptor examples.streams.server:upload_auth``: UploadAsByteStream and
    UploadWithProgress need ``Authorization: Bearer <token>``; the caller's name goes on
    ``ctx.principal``."""
    upload_token = os.environ.get("STREAMS_UPLOAD_TOKEN") or DEMO_TOKEN

    def verify(token: str, ctx: Context) -> str | None:
        if token == GUEST_TOKEN:
            raise PermissionError("guests may not upload")
        return "uploader" if token == upload_token else None

    return BearerAuth(verify, methods=UPLOAD_METHODS)
