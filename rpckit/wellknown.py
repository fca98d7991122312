"""How rpckit's stream types map onto the well-known stream messages (DESIGN.md §4).

``rpckit.v1.Text`` carries TextStream items, ``rpckit.v1.Bytes`` ByteStream items and
``google.api.HttpBody`` file chunks; file name and size travel as metadata. Every
transport uses these adapters, so one handler sees the same types everywhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import replace
from typing import Any

from google.api.httpbody_pb2 import HttpBody

from rpckit.errors import Code, RpcError
from rpckit.files import content_disposition, parse_content_disposition, sanitize_filename
from rpckit.metadata import Metadata
from rpckit.numbers import try_int
from rpckit.service import MethodSpec
from rpckit.streams import ByteStream, Event, FileStream, TextStream
from rpckit.v1.stream_pb2 import Bytes, Text

__all__ = [
    "adapt_requests",
    "checked_chunks",
    "declared_size",
    "encode_stream",
    "file_headers",
    "file_upload",
    "upload_filename",
    "upload_headers",
]

CONTENT_DISPOSITION = "content-disposition"
CONTENT_SIZE = "x-content-size"


def file_headers(stream: object) -> list[tuple[str, str]]:
    """Response metadata that describes a FileStream (name and size); empty for others."""
    if not isinstance(stream, FileStream):
        return []
    headers = [(CONTENT_DISPOSITION, content_disposition(stream.filename))]
    if stream.size is not None:
        headers.append((CONTENT_SIZE, str(stream.size)))
    return headers


def upload_headers(filename: str | None, size: int | None) -> list[tuple[str, str]]:
    """Request metadata a client sends with a file upload."""
    headers = [(CONTENT_DISPOSITION, content_disposition(filename))] if filename else []
    if size is not None:
        headers.append((CONTENT_SIZE, str(size)))
    return headers


def encode_stream(method: MethodSpec[Any, Any], stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The messages a handler's stream stands for: str becomes Text, bytes Bytes or HttpBody.

    ``Event`` wrappers are kept (with the converted message inside) for SSE."""
    if method.output is Text:
        return _texts(stream)
    if method.output is Bytes:
        return _bytes(stream)
    if method.output is HttpBody:
        content_type = stream.content_type if isinstance(stream, FileStream) else ""
        return _bodies(stream, content_type)
    return stream  # items may still be Events: transports unwrap them inline (hot path)


async def _texts(stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for item in stream:
        if type(item) is Event:
            if isinstance(item.data, str):
                item = replace(item, data=Text(text=item.data))
        elif isinstance(item, str):
            item = Text(text=item)
        yield item


async def _bytes(stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for item in stream:
        if type(item) is Event:
            if isinstance(item.data, bytes | bytearray | memoryview):
                item = replace(item, data=Bytes(data=bytes(item.data)))
        elif isinstance(item, bytes | bytearray | memoryview):
            item = Bytes(data=bytes(item))
        yield item


async def _bodies(stream: AsyncIterator[Any], content_type: str) -> AsyncIterator[Any]:
    async for item in stream:
        data = item.data if type(item) is Event else item
        if isinstance(data, bytes | bytearray | memoryview):
            data = HttpBody(content_type=content_type, data=bytes(data))
            item = replace(item, data=data) if type(item) is Event else data
        content_type = ""  # the content type rides on the first chunk only
        yield item


async def adapt_requests(
    method: MethodSpec[Any, Any], requests: AsyncIterable[Any], headers: Metadata
) -> AsyncIterable[Any]:
    """What a client-streaming handler receives: TextStream, ByteStream, FileStream or messages."""
    if method.input is Text:
        return TextStream(_field(requests, "text"))
    if method.input is Bytes:
        return ByteStream(_field(requests, "data"))
    if method.input is HttpBody:
        return await _upload(requests, headers)
    return requests


async def _field(requests: AsyncIterable[Any], name: str) -> AsyncIterator[Any]:
    async for message in requests:
        yield getattr(message, name)


_BAD_SIZE = -1


def declared_size(headers: Metadata) -> int | None:
    """The ``x-content-size`` a client declared; None if absent, -1 if malformed."""
    raw = headers.get(CONTENT_SIZE)
    if raw is None:
        return None
    size = try_int(raw.strip())
    return _BAD_SIZE if size is None else size


def upload_filename(headers: Metadata) -> str | None:
    """The sanitised file name a client gave in ``Content-Disposition``, or None."""
    return sanitize_filename(parse_content_disposition(headers.get(CONTENT_DISPOSITION)))


def file_upload(
    chunks: AsyncIterator[bytes],
    headers: Metadata,
    content_type: str | None,
    *,
    size: int | None = None,
) -> FileStream:
    """An upload as a handler receives it: name and size from the metadata (``size`` when
    none is declared), chunks checked against the declared size as they arrive."""
    declared = declared_size(headers)
    if declared is None:
        declared = size
    return FileStream(
        checked_chunks(chunks, declared),
        filename=upload_filename(headers),
        size=None if declared == _BAD_SIZE else declared,
        content_type=content_type or "application/octet-stream",
    )


async def _upload(requests: AsyncIterable[Any], headers: Metadata) -> FileStream:
    iterator = aiter(requests)
    first: HttpBody | None = await anext(iterator, None)
    content_type = first.content_type if first is not None else None
    return file_upload(_chunks(first, iterator), headers, content_type)


async def _chunks(first: HttpBody | None, rest: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    if first is None:
        return
    if first.data:
        yield first.data
    async for body in rest:
        if body.data:
            yield body.data


async def checked_chunks(chunks: AsyncIterator[bytes], size: int | None) -> AsyncIterator[bytes]:
    """Pass chunks through, failing the upload if they disagree with the declared size.

    A malformed size fails on the first read, so the handler decides when input is read.
    """
    if size == _BAD_SIZE:
        raise RpcError(
            Code.INVALID_ARGUMENT,
            "x-content-size must be an integer from 0 to 9223372036854775807 (ASCII digits)",
        )
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if size is not None and received > size:
            raise RpcError(
                Code.INVALID_ARGUMENT, f"upload is larger than its x-content-size ({size})"
            )
        yield chunk
    if size is not None and received != size:
        raise RpcError(
            Code.INVALID_ARGUMENT,
            f"upload ended after {received} of {size} bytes declared in x-content-size",
        )
