"""Stream types handlers return and receive: Streaming[T], TextStream, ByteStream, FileStream.

They follow Dioxus Fullstack's stream API: build a stream from an async iterable, or with
``spawn(producer)``, where the producer gets a ``Sender`` whose ``send()`` returns False once
the client is gone. Unlike the seed's unbounded channel, the sender is bounded: ``send()``
waits while ``bound`` items are unread and resumes once half of them have been read, so a
slow client slows the producer (and a fast one is fed in batches, not item by item).
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Self, TypeVar

from rpckit.errors import Code, RpcError
from rpckit.files import BadFileName, relative_parts

__all__ = [
    "DEFAULT_BOUND",
    "ByteStream",
    "Event",
    "FileStream",
    "Sender",
    "Streaming",
    "TextStream",
    "aclose",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

#: Items a spawned producer may run ahead of its reader.
DEFAULT_BOUND = 16
#: Seconds a spawned producer gets to notice ``send() -> False`` before it is cancelled.
PRODUCER_GRACE = 5.0
#: Bytes per read when streaming a file from disk.
FILE_CHUNK_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Event(Generic[T_co]):
    """A stream item with server-sent-event fields: over SSE they become ``id:``, ``event:``
    and ``retry:`` lines (``id`` comes back as ``Last-Event-ID`` on reconnect); every other
    framing and transport sees only ``data``."""

    data: T_co
    id: str | None = None
    event: str | None = None
    retry: int | None = None


class _Channel(Generic[T]):
    """A bounded single-reader queue that knows when either end has gone."""

    def __init__(self, bound: int) -> None:
        if bound < 1:
            raise ValueError("bound must be at least 1")
        self.bound = bound
        self._low_water = bound // 2
        self.items: deque[T] = deque()
        self.reader_gone = False
        self.writer_done = False
        self.error: BaseException | None = None
        self._reader: asyncio.Future[None] | None = None
        self._writers: deque[asyncio.Future[None]] = deque()

    async def put(self, item: T) -> bool:
        while not self.reader_gone:
            if len(self.items) < self.bound:
                self.items.append(item)
                self._wake_reader()
                return True
            waiter = asyncio.get_running_loop().create_future()
            self._writers.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._writers.remove(waiter)
        return False

    async def get(self) -> T:
        while not self.items:
            if self.writer_done:
                if self.error is not None:
                    raise self.error
                raise StopAsyncIteration
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        item = self.items.popleft()
        # Writers blocked on a full buffer resume once it has drained to half: each wake-up
        # then refills many slots, instead of one task switch per item.
        if self._writers and len(self.items) <= self._low_water:
            for waiter in self._writers:
                _resolve(waiter)
        return item

    def finish(self, error: BaseException | None = None) -> None:
        self.writer_done = True
        self.error = error
        self._wake_reader()

    def close_reader(self) -> None:
        self.reader_gone = True
        self.items.clear()
        for waiter in self._writers:
            _resolve(waiter)

    def _wake_reader(self) -> None:
        if self._reader is not None:
            _resolve(self._reader)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Sender(Generic[T]):
    """The producer's end of a spawned stream."""

    __slots__ = ("_channel",)

    def __init__(self, channel: _Channel[T]) -> None:
        self._channel = channel

    async def send(self, item: T) -> bool:
        """Queue ``item``, waiting while the buffer is full (until it is half read); False
        once the client is gone."""
        return await self._channel.put(item)

    @property
    def closed(self) -> bool:
        """True once the reader (the client) is gone; further sends return False."""
        return self._channel.reader_gone


Producer = Callable[[Sender[T]], Awaitable[None]]


class _Spawned(Generic[T]):
    """The reading end of ``spawn``: starts the producer task on first read."""

    def __init__(self, producer: Producer[T], bound: int, grace: float) -> None:
        self._producer = producer
        self._channel: _Channel[T] = _Channel(bound)
        self._grace = grace
        self._task: asyncio.Task[None] | None = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        if self._task is None and not self._channel.reader_gone:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return await self._channel.get()

    async def _run(self) -> None:
        try:
            await self._producer(Sender(self._channel))
        except asyncio.CancelledError:
            self._channel.finish(RpcError(Code.CANCELLED, "stream producer was cancelled"))
            raise
        except BaseException as exc:  # handed to the reader, which reports it
            self._channel.finish(exc)
        else:
            self._channel.finish()

    async def aclose(self) -> None:
        self._channel.close_reader()
        task = self._task
        if task is not None and not task.done():
            # The producer sees send() -> False at its next send; one that never sends again
            # (or ignores False) is cancelled after the grace period.
            handle = asyncio.get_running_loop().call_later(self._grace, task.cancel)
            task.add_done_callback(lambda _: handle.cancel())


class Streaming(Generic[T]):
    """A stream of items of one type: ``Streaming(aiter)`` or ``Streaming.spawn(producer)``.

    Over gRPC each item is one message; over plain HTTP the items are framed in the
    encoding the client asks for (NDJSON, SSE, CBOR or MsgPack sequences, protobuf).
    """

    def __init__(self, source: AsyncIterable[T]) -> None:
        self._source: AsyncIterator[T] = aiter(source)

    @classmethod
    def spawn(
        cls,
        producer: Callable[[Sender[T]], Awaitable[None]],
        *,
        bound: int = DEFAULT_BOUND,
        grace: float = PRODUCER_GRACE,
    ) -> Self:
        """Run ``producer(sender)`` as a task once the stream is read; items it sends flow out."""
        return cls(_Spawned(producer, bound, grace))

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        return await self._source.__anext__()

    async def aclose(self) -> None:
        """Stop reading: a spawned producer's ``send()`` returns False from now on."""
        await aclose(self._source)


class TextStream(Streaming[str]):
    """A stream of UTF-8 text chunks (``rpckit.v1.Text`` on gRPC, raw text over HTTP)."""


class ByteStream(Streaming[bytes]):
    """A stream of raw byte chunks (``rpckit.v1.Bytes`` on gRPC, raw octets over HTTP)."""


class FileStream:
    """A file: sent from disk with ``from_path``, or received from a client as an upload.

    Name, size and content type travel as ``Content-Disposition``, ``X-Content-Size`` and
    ``Content-Type`` (HTTP headers, or gRPC metadata and ``HttpBody.content_type``).
    """

    def __init__(
        self,
        chunks: AsyncIterable[bytes],
        *,
        filename: str | None = None,
        size: int | None = None,
        content_type: str = "application/octet-stream",
        path: Path | None = None,
        mtime: float | None = None,
    ) -> None:
        self._chunks: AsyncIterator[bytes] = aiter(chunks)
        self.filename = filename
        self.size = size
        self.content_type = content_type
        self.path = path
        self.mtime = mtime

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        filename: str | None = None,
        content_type: str | None = None,
        *,
        chunk_size: int = FILE_CHUNK_SIZE,
    ) -> FileStream:
        """Stream the regular file at ``path`` in bounded chunks; ``not_found`` if there is none.

        For trusted paths only: ``path`` is opened as given, ``..`` and symlinks included.
        A name from the client (a path variable, a query parameter) goes to ``from_root``.
        """
        file_path = Path(path)
        try:
            stat = file_path.stat()
        except OSError:
            raise RpcError(Code.NOT_FOUND, "file not found") from None
        if not file_path.is_file():
            raise RpcError(Code.NOT_FOUND, "file not found")
        name = filename if filename is not None else file_path.name
        guessed = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        return cls(
            _read_file(file_path, chunk_size),
            filename=name,
            size=stat.st_size,
            content_type=guessed,
            path=file_path,
            mtime=stat.st_mtime,
        )

    @classmethod
    def from_root(
        cls,
        root: str | os.PathLike[str],
        name: str,
        content_type: str | None = None,
        *,
        hidden: bool = False,
        chunk_size: int = FILE_CHUNK_SIZE,
    ) -> FileStream:
        """Stream the file an untrusted ``name`` (``a.txt``, ``sub/a.txt``) names under ``root``.

        A name that could leave ``root`` (empty, absolute, NUL, backslash, an empty, ``.``
        or ``..`` component) is ``invalid_argument``; a missing file, a directory, a hidden
        one (a component starting with ``.``, unless ``hidden``) or a symlink that resolves
        outside ``root`` is ``not_found``. Messages never show a server path. The checks
        run when the stream is made: ``root`` must not be writable by those who name files.
        """
        try:
            parts = relative_parts(name, hidden=hidden)
        except BadFileName as bad:
            raise RpcError(Code.INVALID_ARGUMENT, str(bad)) from None
        not_found = RpcError(Code.NOT_FOUND, "file not found")
        if parts is None:
            raise not_found
        try:
            base = Path(root).resolve(strict=True)
            resolved = base.joinpath(*parts).resolve(strict=True)
        except (OSError, RuntimeError):  # missing, unreadable, a symlink loop
            raise not_found from None
        if not resolved.is_relative_to(base) or resolved == base:
            raise not_found  # a symlink that leads out of the root
        return cls.from_path(resolved, parts[-1], content_type, chunk_size=chunk_size)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        """Stop reading and release the file or the upload."""
        await aclose(self._chunks)

    async def save(self, path: str | os.PathLike[str]) -> int:
        """Write the remaining chunks to ``path``; returns the number of bytes written."""
        written = 0
        with open(path, "wb") as out:  # noqa: ASYNC230 - writes go through a thread below
            async for chunk in self:
                await asyncio.to_thread(out.write, chunk)
                written += len(chunk)
        return written


async def _read_file(path: Path, chunk_size: int) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:  # noqa: ASYNC230 - reads go through a thread below
        while chunk := await asyncio.to_thread(f.read, chunk_size):
            yield chunk


async def aclose(stream: object) -> None:
    """Close an async iterator if it can be closed; errors while closing are not the caller's."""
    close: Any = getattr(stream, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()
