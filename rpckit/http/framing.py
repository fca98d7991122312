"""How a stream of messages is laid out in a plain-HTTP body, free of I/O.

Responses: raw text or octets (TextStream, ByteStream, files), NDJSON (the default), SSE,
CBOR sequences (RFC 8742), MsgPack sequences, or varint-delimited protobuf. Every framing
but raw has an in-band error record, so an error after the first byte is never lost:

- NDJSON: a last line ``{"error": {"code": ..., "message": ...}}``
- SSE: ``event: error`` with the same JSON object as data (a clean end is ``event: end``)
- CBOR and MsgPack sequences: a last item, the map ``{"error": {...}}``
- varint-delimited protobuf: the length 0xFFFFFFFF (never a real message, which is at most
  the 4 GiB limit), then a varint-delimited ``google.rpc.Status``
- raw bodies have no room for a record: the response is cut off without its final chunk,
  so ``fetch`` rejects and ``curl`` reports an incomplete transfer.

Requests: the same sequences, read back incrementally by ``Deframer`` classes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import cbor2
import msgpack  # type: ignore[import-untyped]  # msgpack ships no stubs
from google.protobuf.message import Message
from google.rpc import status_pb2

from rpckit.encodings import Encoding, EncodingRegistry, from_tree
from rpckit.errors import Code, RpcError
from rpckit.http.connect import error_json

__all__ = [
    "ERROR_SENTINEL",
    "Deframer",
    "Framing",
    "deframer_for",
    "negotiate_framing",
    "sse_event",
    "varint",
]

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
CBOR_SEQ = "application/cbor-seq"
MSGPACK_SEQ = "application/vnd.msgpack-seq"
PROTO_DELIMITED = "application/x-protobuf-delimited"
ERROR_SENTINEL = 0xFFFFFFFF
KEEP_ALIVE = b": keep-alive\n\n"


def varint(value: int) -> bytes:
    """The protobuf base-128 varint encoding of a non-negative integer."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def sse_event(
    data: str, *, id: str | None = None, event: str | None = None, retry: int | None = None
) -> bytes:
    """One server-sent event; multi-line data becomes several ``data:`` lines."""
    lines = []
    if id is not None:
        lines.append(f"id: {_one_line(id)}")
    if event is not None:
        lines.append(f"event: {_one_line(event)}")
    if retry is not None:
        lines.append(f"retry: {int(retry)}")
    # CR, LF and CRLF all end an SSE line: every one of them starts a new data: line.
    lines += [
        f"data: {line}" for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    ]
    return ("\n".join(lines) + "\n\n").encode()


def _one_line(value: str) -> str:
    """A field value that cannot end its line early."""
    return value.replace("\r", "").replace("\n", "")


def _error_tree(error: RpcError) -> dict[str, Any]:
    return {"error": error_json(error)}


@dataclass(frozen=True)
class Framing:
    """A response framing: content type, one record per item, and the error record."""

    content_type: str
    kind: str  # "ndjson" | "sse" | "cbor" | "msgpack" | "delimited" | "raw"
    encoding: Encoding | None = None

    def item(self, message: Message, *, text: str | None = None) -> bytes:
        """One record; SSE and raw text use ``text`` as-is when given."""
        if self.kind == "ndjson":
            assert self.encoding is not None
            return self.encoding.encode(message) + b"\n"
        if self.kind == "sse":
            assert self.encoding is not None
            return sse_event(text if text is not None else self.encoding.encode(message).decode())
        if self.kind == "delimited":
            assert self.encoding is not None
            data = self.encoding.encode(message)
            return varint(len(data)) + data
        assert self.encoding is not None
        return self.encoding.encode(message)

    def error(self, error: RpcError) -> bytes | None:
        """The in-band error record, or None for raw bodies (which must be cut off instead)."""
        if self.kind == "ndjson":
            return json.dumps(_error_tree(error), separators=(",", ":")).encode() + b"\n"
        if self.kind == "sse":
            return sse_event(json.dumps(error_json(error), separators=(",", ":")), event="error")
        if self.kind == "cbor":
            data: bytes = cbor2.dumps(_error_tree(error))
            return data
        if self.kind == "msgpack":
            packed: bytes = msgpack.packb(_error_tree(error))
            return packed
        if self.kind == "delimited":
            status = status_pb2.Status(code=int(error.code), message=error.message)
            body = status.SerializeToString()
            return varint(ERROR_SENTINEL) + varint(len(body)) + body
        return None

    def end(self) -> bytes:
        """What closes a successful stream (SSE: an ``end`` event, so EventSource stops)."""
        return sse_event("", event="end") if self.kind == "sse" else b""


FRAMING_TYPES = frozenset(
    {NDJSON, "application/jsonl", SSE, CBOR_SEQ, MSGPACK_SEQ, PROTO_DELIMITED}
)
_BY_TYPE = {NDJSON: "ndjson", "application/jsonl": "ndjson", SSE: "sse", CBOR_SEQ: "cbor",
            MSGPACK_SEQ: "msgpack", PROTO_DELIMITED: "delimited"}  # fmt: skip
_ENCODING_FOR = {"ndjson": "json", "sse": "json", "cbor": "cbor", "msgpack": "msgpack",
                 "delimited": "proto"}  # fmt: skip


def accepted_types(accept: str | None) -> list[str]:
    """Media types of an Accept header, most preferred first (q=0 dropped)."""
    ranked = []
    for position, part in enumerate((accept or "").split(",")):
        media, *params = [p.strip() for p in part.split(";")]
        quality = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        if media and quality > 0:
            ranked.append((-quality, position, media.lower()))
    return [media for _, _, media in sorted(ranked)]


def negotiate_framing(accept: str | None, registry: EncodingRegistry) -> Framing:
    """The message framing for an Accept header: the first one it names that we have,
    NDJSON when it names none (``*/*``, a browser's default, or nothing)."""
    for media in accepted_types(accept):
        kind = _BY_TYPE.get(media)
        if kind is None:
            continue
        encoding = registry.get(_ENCODING_FOR[kind])
        if encoding is not None:
            return Framing(SSE if kind == "sse" else media, kind, encoding)
    encoding = registry.get("json")
    assert encoding is not None, "the json encoding must stay registered"
    return Framing(NDJSON, "ndjson", encoding)


class Deframer(Protocol):
    """Splits a request body into messages as chunks arrive."""

    def feed(self, chunk: bytes) -> Iterator[Message]: ...

    def close(self) -> None: ...


class _Lines:
    def __init__(self, message_type: type[Message], encoding: Encoding, max_size: int) -> None:
        self.message_type, self.encoding, self.max_size = message_type, encoding, max_size
        self.buffer = bytearray()

    def feed(self, chunk: bytes) -> Iterator[Message]:
        self.buffer += chunk
        while (end := self.buffer.find(b"\n")) >= 0:
            line = bytes(self.buffer[:end]).strip()
            del self.buffer[: end + 1]
            if len(line) > self.max_size:
                raise RpcError(Code.RESOURCE_EXHAUSTED, "request line is larger than the limit")
            if line:
                yield self.encoding.decode(line, self.message_type)
        if len(self.buffer) > self.max_size:
            raise RpcError(Code.RESOURCE_EXHAUSTED, "request line is larger than the limit")

    def close(self) -> None:
        rest = bytes(self.buffer).strip()
        self.buffer.clear()
        if rest:
            # a last line without its newline is still a whole JSON value, or it is not
            self.encoding.decode(rest, self.message_type)
            raise RpcError(Code.INVALID_ARGUMENT, "the last NDJSON line has no newline")


class _Delimited:
    def __init__(self, message_type: type[Message], encoding: Encoding, max_size: int) -> None:
        self.message_type, self.encoding, self.max_size = message_type, encoding, max_size
        self.buffer = bytearray()

    def feed(self, chunk: bytes) -> Iterator[Message]:
        self.buffer += chunk
        while True:
            length, offset = 0, 0
            for shift in range(0, 70, 7):
                if offset >= len(self.buffer):
                    return
                byte = self.buffer[offset]
                offset += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
            else:
                raise RpcError(Code.INVALID_ARGUMENT, "malformed varint length")
            if length > self.max_size:
                raise RpcError(Code.RESOURCE_EXHAUSTED, "request message is larger than the limit")
            if len(self.buffer) < offset + length:
                return
            data = bytes(self.buffer[offset : offset + length])
            del self.buffer[: offset + length]
            yield self.encoding.decode(data, self.message_type)

    def close(self) -> None:
        if self.buffer:
            raise RpcError(Code.INVALID_ARGUMENT, "request ended inside a message")


class _Objects:
    """CBOR or MsgPack sequences: self-delimiting items decoded one by one."""

    def __init__(self, message_type: type[Message], kind: str, max_size: int) -> None:
        self.message_type, self.kind, self.max_size = message_type, kind, max_size
        self.buffer = bytearray()
        self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max_size)
        self.fed = 0

    def feed(self, chunk: bytes) -> Iterator[Message]:
        if self.kind == "msgpack":
            self.fed += len(chunk)
            try:
                self.unpacker.feed(chunk)
                trees = list(self.unpacker)
            except msgpack.BufferFull:
                raise RpcError(
                    Code.RESOURCE_EXHAUSTED, "request item is larger than the limit"
                ) from None
            except Exception as exc:
                reason = str(exc) or type(exc).__name__
                raise RpcError(Code.INVALID_ARGUMENT, f"invalid msgpack: {reason}") from None
            for tree in trees:
                yield from_tree("msgpack", tree, self.message_type)
            return
        self.buffer += chunk
        while self.buffer:
            stream = io.BytesIO(bytes(self.buffer))
            try:
                tree = cbor2.CBORDecoder(stream).decode()
            except cbor2.CBORDecodeEOF:
                if len(self.buffer) > self.max_size:
                    raise RpcError(
                        Code.RESOURCE_EXHAUSTED, "request item is larger than the limit"
                    ) from None
                return
            except Exception as exc:
                raise RpcError(Code.INVALID_ARGUMENT, f"invalid cbor: {exc}") from None
            if stream.tell() > self.max_size:
                raise RpcError(Code.RESOURCE_EXHAUSTED, "request item is larger than the limit")
            del self.buffer[: stream.tell()]
            yield from_tree("cbor", tree, self.message_type)

    def close(self) -> None:
        if self.buffer or (self.kind == "msgpack" and self.unpacker.tell() != self.fed):
            raise RpcError(Code.INVALID_ARGUMENT, "request ended inside an item")


def deframer_for(
    content_type: str | None,
    message_type: type[Message],
    registry: EncodingRegistry,
    max_size: int,
) -> Deframer:
    """The deframer for a request body's Content-Type (NDJSON when none is given)."""
    media = (content_type or NDJSON).split(";")[0].strip().lower()
    kind = _BY_TYPE.get(media)
    if kind is None or kind == "sse":
        accepted = ", ".join([NDJSON, CBOR_SEQ, MSGPACK_SEQ, PROTO_DELIMITED])
        raise RpcError(
            Code.INVALID_ARGUMENT,
            f"unsupported request stream type {media!r}; accepted: {accepted}",
        )
    encoding = registry.get(_ENCODING_FOR[kind])
    if encoding is None:
        raise RpcError(Code.INVALID_ARGUMENT, f"no {_ENCODING_FOR[kind]} encoding registered")
    if kind == "ndjson":
        return _Lines(message_type, encoding, max_size)
    if kind == "delimited":
        return _Delimited(message_type, encoding, max_size)
    return _Objects(message_type, kind, max_size)
