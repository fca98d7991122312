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

Dioxus Fullstack's framed items (``application/stream+json``, ``+cbor``, ``+msgpack``,
``+postcard``: each payload behind an unmasked WebSocket binary frame header) have no error
record either, and no end-of-stream frame: an error cuts the body off like a raw one, so a
Dioxus client sees a broken stream, never a clean end (see the section at the bottom).

Requests: the same sequences, read back incrementally by ``Deframer`` classes; and a
``multipart/form-data`` body (what an HTML form sends) split into parts as it arrives by
``MultipartReader``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import cbor2
import msgpack  # type: ignore[import-untyped]  # msgpack ships no stubs
from google.api.httpbody_pb2 import HttpBody
from google.protobuf.message import Message
from google.rpc import status_pb2

from rpckit.encodings import Encoding, EncodingRegistry, from_tree
from rpckit.errors import Code, RpcError, message_too_large
from rpckit.http.wire import error_json
from rpckit.nesting import CborScan, too_deep
from rpckit.postcard import supports as postcard_supports
from rpckit.v1.stream_pb2 import Bytes, Text

__all__ = [
    "ERROR_SENTINEL",
    "FRAMED_TYPES",
    "KEEP_ALIVE",
    "PART_END",
    "Deframer",
    "FrameDeframer",
    "FrameError",
    "Framing",
    "MediaRange",
    "MultipartEvent",
    "MultipartReader",
    "Negotiated",
    "NegotiationError",
    "NotAcceptable",
    "PartEnd",
    "PartHead",
    "UnsupportedMediaType",
    "choose_media",
    "deframer_for",
    "frame",
    "frame_header",
    "multipart_boundary",
    "negotiate_framing",
    "negotiate_single",
    "negotiate_stream",
    "parse_accept",
    "read_frame_header",
    "request_encoding",
    "sse_event",
    "varint",
]

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
CBOR_SEQ = "application/cbor-seq"
MSGPACK_SEQ = "application/vnd.msgpack-seq"
PROTO_DELIMITED = "application/x-protobuf-delimited"
ERROR_SENTINEL = 0xFFFFFFFF
# Dioxus Fullstack's framed item streams (the frame codec is at the bottom of the module).
STREAM_JSON = "application/stream+json"
STREAM_CBOR = "application/stream+cbor"
STREAM_MSGPACK = "application/stream+msgpack"
STREAM_POSTCARD = "application/stream+postcard"
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
    kind: str  # "ndjson" | "sse" | "cbor" | "msgpack" | "delimited" | "raw" | "framed+..."
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
        if self.kind in FRAMED_KINDS:
            return frame(self.encoding.encode(message))
        return self.encoding.encode(message)

    def error(self, error: RpcError) -> bytes | None:
        """The in-band error record, or None for raw and Dioxus-framed bodies (which must be
        cut off instead)."""
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
_ENCODING_FOR = {"ndjson": "json", "sse": "json", "cbor": "cbor", "msgpack": "msgpack",
                 "delimited": "proto", "framed+json": "json", "framed+cbor": "cbor",
                 "framed+msgpack": "msgpack", "framed+postcard": "postcard"}  # fmt: skip
_SEQUENCE_TYPE = {"ndjson": NDJSON, "sse": SSE, "cbor": CBOR_SEQ, "msgpack": MSGPACK_SEQ,
                  "delimited": PROTO_DELIMITED, "framed+json": STREAM_JSON,
                  "framed+cbor": STREAM_CBOR, "framed+msgpack": STREAM_MSGPACK,
                  "framed+postcard": STREAM_POSTCARD}  # fmt: skip
# Every media type that names a framing, as clients really send them, in the order a route
# offers them. The first name of each kind is the sequence type itself; the single-message
# names (application/json, application/msgpack...) select that kind's sequence on a stream.
_STREAM_NAMES: tuple[tuple[str, str], ...] = (
    (NDJSON, "ndjson"), ("application/jsonl", "ndjson"), ("application/ndjson", "ndjson"),
    ("application/x-jsonlines", "ndjson"), ("application/json", "ndjson"),
    (SSE, "sse"),
    (CBOR_SEQ, "cbor"), ("application/cbor", "cbor"),
    (MSGPACK_SEQ, "msgpack"), ("application/msgpack", "msgpack"),
    ("application/x-msgpack", "msgpack"), ("application/vnd.msgpack", "msgpack"),
    (PROTO_DELIMITED, "delimited"), ("application/x-protobuf", "delimited"),
    ("application/protobuf", "delimited"), ("application/proto", "delimited"),
    (STREAM_JSON, "framed+json"), (STREAM_CBOR, "framed+cbor"),
    (STREAM_MSGPACK, "framed+msgpack"), (STREAM_POSTCARD, "framed+postcard"),
)  # fmt: skip
_BY_TYPE = dict(_STREAM_NAMES)
_SEQUENCE_NAMES = frozenset(
    {NDJSON, "application/jsonl", "application/ndjson", "application/x-jsonlines", SSE,
     CBOR_SEQ, MSGPACK_SEQ, PROTO_DELIMITED, STREAM_JSON, STREAM_CBOR, STREAM_MSGPACK,
     STREAM_POSTCARD}
)  # fmt: skip
# The single-message media types each codec is known by (the first is its own).
_SINGLE_ALIASES = {
    "json": ("application/json",),
    "cbor": ("application/cbor",),
    "msgpack": ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack"),
    "proto": ("application/proto", "application/x-protobuf", "application/protobuf"),
}
_RAW_OUTPUTS = (Bytes, HttpBody)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_QUALITY = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header: ``type/subtype`` (either may be ``*``) and its q."""

    type: str
    subtype: str
    quality: float
    position: int

    def specificity(self, media: str) -> int:
        """How precisely this range names ``media``: 2 exactly, 1 by type, 0 by ``*/*``,
        -1 not at all."""
        kind, _, sub = media.partition("/")
        if self.type == "*":
            return 0
        if self.type != kind:
            return -1
        if self.subtype == "*":
            return 1
        return 2 if self.subtype == sub else -1


def parse_accept(accept: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header in header order, q=0 refusals included.

    Malformed entries (no ``type/subtype``, a q outside 0..1) are skipped, so a header made
    only of them counts as absent; a bare ``*`` is read as ``*/*``, as some clients send it.
    """
    ranges = []
    for position, part in enumerate((accept or "").split(",")):
        media, *params = (piece.strip() for piece in part.split(";"))
        media = media.lower()
        if media == "*":
            media = "*/*"
        kind, slash, sub = media.partition("/")
        if not slash or not _TOKEN.fullmatch(kind) or not _TOKEN.fullmatch(sub):
            continue
        if kind == "*" and sub != "*":
            continue
        quality: float | None = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                value = value.strip()
                quality = float(value) if _QUALITY.fullmatch(value) else None
        if quality is not None:
            ranges.append(MediaRange(kind, sub, quality, position))
    return ranges


def accepted_types(accept: str | None) -> list[str]:
    """Media types of an Accept header, most preferred first (q=0 dropped)."""
    ranked = sorted(
        (-r.quality, r.position, f"{r.type}/{r.subtype}")
        for r in parse_accept(accept)
        if r.quality > 0
    )
    return [media for _, _, media in ranked]


def choose_media(accept: str | None, offered: Sequence[str]) -> str | None:
    """The offered media type an Accept header prefers (RFC 9110 section 12.5.1), or None.

    Each offer takes the q of the most specific range that names it; the highest q wins,
    then the more specific match, then the earlier range in the header, then the earlier
    offer (the server's preference). No header, or one without a usable range, takes the
    first offer. None means nothing offered is acceptable: answer 406.
    """
    if not offered:
        return None
    ranges = parse_accept(accept)
    if not ranges:
        return offered[0]
    best: tuple[float, int, int, int] | None = None
    chosen: str | None = None
    for index, media in enumerate(offered):
        match: tuple[int, MediaRange] | None = None
        for candidate in ranges:
            specificity = candidate.specificity(media)
            if specificity >= 0 and (match is None or specificity > match[0]):
                match = (specificity, candidate)
        if match is None or match[1].quality <= 0 or math.isnan(match[1].quality):
            continue
        key = (match[1].quality, match[0], -match[1].position, -index)
        if best is None or key > best:
            best, chosen = key, media
    return chosen


class NegotiationError(RpcError):
    """A request whose media types cannot be served: a code for clients that only read codes,
    and an HTTP status of its own (406, 415) plus what the route offers."""

    http_status: int

    def __init__(
        self, message: str, offered: Sequence[str], code: Code = Code.INVALID_ARGUMENT
    ) -> None:
        super().__init__(code, message)
        self.offered = tuple(offered)


class NotAcceptable(NegotiationError):
    """``Accept`` names nothing the route can produce: answer 406."""

    http_status = 406

    def __init__(self, offered: Sequence[str]) -> None:
        super().__init__(
            f"nothing in Accept can be produced; this route offers: {', '.join(offered)}",
            offered,
        )


class UnsupportedMediaType(NegotiationError):
    """A request body in a media type the route cannot read: 415 with ``unimplemented``.

    The code is the one Connect and gRPC-Web answer the same refusal with (Connect's spec
    answers an unsupported body encoding ``unimplemented``; neither spec has a code for 415),
    so that one refusal reads the same on every dialect.
    """

    http_status = 415

    def __init__(self, message: str, offered: Sequence[str]) -> None:
        super().__init__(message, offered, Code.UNIMPLEMENTED)


def _stream_offers(output: type[Message], registry: EncodingRegistry) -> list[str]:
    offers = ["text/plain"] if output is Text else []
    offers += [
        media
        for media, kind in _STREAM_NAMES
        if registry.get(_ENCODING_FOR[kind]) and _can_frame(kind, output)
    ]
    return offers


def _framing(media: str, registry: EncodingRegistry) -> Framing:
    kind = _BY_TYPE[media]
    encoding = registry.get(_ENCODING_FOR[kind])
    assert encoding is not None
    content_type = media if media in _SEQUENCE_NAMES else _SEQUENCE_TYPE[kind]
    return Framing(content_type, kind, encoding)


def negotiate_stream(
    accept: str | None, output: type[Message], registry: EncodingRegistry
) -> Framing | None:
    """The framing of a server stream of ``output`` messages for an Accept header.

    None means raw: octets for ``Bytes``/``HttpBody`` outputs (never refused, since the
    handler sets the content type), text for ``rpckit.v1.Text`` when ``text/plain`` (or a
    wildcard) wins. Otherwise the framing Accept prefers: every common name of MessagePack
    and CBOR selects that sequence, ``application/json`` selects NDJSON, and no Accept (or
    ``*/*``) gives NDJSON. NotAcceptable (406) when Accept lists none of them.
    """
    if output in _RAW_OUTPUTS:
        return None
    offers = _stream_offers(output, registry)
    media = choose_media(accept, offers)
    if media is None:
        canonical = [m for m in offers if m == "text/plain" or m in _SEQUENCE_TYPE.values()]
        raise NotAcceptable(canonical)
    if media == "text/plain":
        return None
    return _framing(media, registry)


def negotiate_framing(accept: str | None, registry: EncodingRegistry) -> Framing:
    """The message framing for an Accept header, NDJSON when it names none we have.

    Lenient form of ``negotiate_stream`` for message outputs, kept for callers that never
    answer 406."""
    try:
        framing = negotiate_stream(accept, Message, registry)
    except NotAcceptable:
        framing = None
    if framing is not None:
        return framing
    encoding = registry.get("json")
    assert encoding is not None, "the json encoding must stay registered"
    return Framing(NDJSON, "ndjson", encoding)


class Negotiated(NamedTuple):
    """The encoding of a single-message response and the content type to label it with."""

    encoding: Encoding
    content_type: str


def _single_offers(registry: EncodingRegistry) -> dict[str, Encoding]:
    """Every media type a single message can be written in, JSON first, mapped to its codec."""
    names = registry.names()
    names.sort(key=lambda name: name != "json")  # stable: JSON first, then registry order
    offers: dict[str, Encoding] = {}
    for name in names:
        encoding = registry.get(name)
        assert encoding is not None
        for media in (encoding.content_type.lower(), *_SINGLE_ALIASES.get(name, ())):
            offers.setdefault(media, encoding)
    return offers


def negotiate_single(accept: str | None, registry: EncodingRegistry) -> Negotiated:
    """The encoding of a unary response message for an Accept header.

    JSON when Accept is absent or a wildcard wins; every common name of MessagePack
    (``application/msgpack``, ``x-msgpack``, ``vnd.msgpack``), CBOR and protobuf selects
    that codec, labelled with the name the client asked for. NotAcceptable (406) when
    Accept lists nothing registered.
    """
    offers = _single_offers(registry)
    media = choose_media(accept, list(offers))
    if media is None:
        raise NotAcceptable(list(dict.fromkeys(e.content_type for e in offers.values())))
    encoding = offers[media]
    exact = any(r.specificity(media) == 2 for r in parse_accept(accept) if r.quality > 0)
    return Negotiated(encoding, media if exact else encoding.content_type)


def request_encoding(content_type: str | None, registry: EncodingRegistry) -> Encoding:
    """The codec of a single-message request body by its Content-Type (JSON if none).

    Accepts every common name of each registered codec; anything else is
    UnsupportedMediaType (415, ``unimplemented``) listing what is accepted.
    """
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    offers = _single_offers(registry)
    encoding = offers.get(media)
    if encoding is None:
        raise UnsupportedMediaType(
            f"unsupported request content type {media[:60]!r}; accepted: {', '.join(offers)}",
            list(offers),
        )
    return encoding


class Deframer(Protocol):
    """Splits a request body into messages as chunks arrive."""

    def feed(self, chunk: bytes) -> Iterator[Message]: ...

    def close(self) -> None: ...


class _Lines:
    """NDJSON: one message per line. Each byte is searched for a newline once."""

    def __init__(self, message_type: type[Message], encoding: Encoding, max_size: int) -> None:
        self.message_type, self.encoding, self.max_size = message_type, encoding, max_size
        self.buffer = bytearray()
        self.searched = 0  # the buffer holds no newline before this offset

    def feed(self, chunk: bytes) -> Iterator[Message]:
        buffer = self.buffer
        buffer += chunk
        start = 0
        try:
            while (end := buffer.find(b"\n", max(start, self.searched))) >= 0:
                line = bytes(buffer[start:end]).strip()
                start = self.searched = end + 1
                if len(line) > self.max_size:
                    raise message_too_large(self.max_size)
                if line:
                    yield self.encoding.decode(line, self.message_type)
            self.searched = len(buffer)
            if len(buffer) - start > self.max_size:
                raise message_too_large(self.max_size)
        finally:
            del buffer[:start]
            self.searched = max(0, self.searched - start)

    def close(self) -> None:
        rest = bytes(self.buffer).strip()
        self.buffer.clear()
        if rest:
            # a last line without its newline is still a whole JSON value, or it is not
            self.encoding.decode(rest, self.message_type)
            raise RpcError(Code.INVALID_ARGUMENT, "the last NDJSON line has no newline")


class _Delimited:
    """Varint-delimited protobuf; complete messages are sliced at a moving offset."""

    def __init__(self, message_type: type[Message], encoding: Encoding, max_size: int) -> None:
        self.message_type, self.encoding, self.max_size = message_type, encoding, max_size
        self.buffer = bytearray()

    def feed(self, chunk: bytes) -> Iterator[Message]:
        buffer = self.buffer
        buffer += chunk
        start = 0
        try:
            while True:
                length, offset = 0, start
                for shift in range(0, 70, 7):
                    if offset >= len(buffer):
                        return
                    byte = buffer[offset]
                    offset += 1
                    length |= (byte & 0x7F) << shift
                    if not byte & 0x80:
                        break
                else:
                    raise RpcError(Code.INVALID_ARGUMENT, "malformed varint length")
                if length > self.max_size:
                    raise message_too_large(self.max_size)
                if len(buffer) < offset + length:
                    return
                data = bytes(buffer[offset : offset + length])
                start = offset + length
                yield self.encoding.decode(data, self.message_type)
        finally:
            del buffer[:start]

    def close(self) -> None:
        if self.buffer:
            raise RpcError(Code.INVALID_ARGUMENT, "request ended inside a message")


class _Objects:
    """CBOR or MsgPack sequences: self-delimiting items decoded one by one.

    Both are linear in the input: msgpack's Unpacker resumes where it stopped, and for CBOR
    a ``CborScan`` walks the item headers as bytes arrive, so cbor2 decodes each complete
    item exactly once (never the whole buffer again per arriving piece).
    """

    def __init__(self, message_type: type[Message], kind: str, max_size: int) -> None:
        self.message_type, self.kind, self.max_size = message_type, kind, max_size
        self.buffer = bytearray()
        self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max_size, strict_map_key=True)
        self.fed = 0
        self.scan = CborScan(max_size=max_size)
        #: How many times an item was handed to cbor2 (one per item: see the linearity test).
        self.decodes = 0

    def feed(self, chunk: bytes) -> Iterator[Message]:
        if self.kind == "msgpack":
            self.fed += len(chunk)
            try:
                self.unpacker.feed(chunk)
                trees = list(self.unpacker)
            except msgpack.BufferFull:
                raise message_too_large(self.max_size) from None
            except msgpack.StackError:
                raise too_deep("msgpack") from None
            except Exception as exc:
                reason = str(exc) or type(exc).__name__
                raise RpcError(Code.INVALID_ARGUMENT, f"invalid msgpack: {reason}") from None
            for tree in trees:
                yield from_tree("msgpack", tree, self.message_type)
            return
        buffer = self.buffer
        buffer += chunk
        start = 0
        try:
            while start < len(buffer):
                end = self.scan.item_end(buffer)
                if end is None:
                    if len(buffer) - start > self.max_size:
                        raise message_too_large(self.max_size)
                    return
                if end - start > self.max_size:
                    raise message_too_large(self.max_size)
                self.decodes += 1
                try:
                    tree = cbor2.loads(bytes(buffer[start:end]))
                except Exception as exc:
                    raise RpcError(Code.INVALID_ARGUMENT, f"invalid cbor: {exc}") from None
                start = end
                yield from_tree("cbor", tree, self.message_type)
        finally:
            del buffer[:start]
            self.scan.shift(start)

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
    if kind is None or kind == "sse" or media == "application/json":
        # application/json would be one JSON value (an array?), not a sequence: refused
        # the canonical names; their aliases (application/msgpack...) are accepted too
        accepted = [NDJSON, CBOR_SEQ, MSGPACK_SEQ, PROTO_DELIMITED, *FRAMED_TYPES]
        raise UnsupportedMediaType(
            f"unsupported request stream type {media[:60]!r}; accepted: {', '.join(accepted)}",
            accepted,
        )
    encoding = registry.get(_ENCODING_FOR[kind])
    if encoding is None:
        raise RpcError(Code.INVALID_ARGUMENT, f"no {_ENCODING_FOR[kind]} encoding registered")
    if kind == "ndjson":
        return _Lines(message_type, encoding, max_size)
    if kind == "delimited":
        return _Delimited(message_type, encoding, max_size)
    if kind in FRAMED_KINDS:
        return FrameDeframer(message_type, encoding, max_size)
    return _Objects(message_type, kind, max_size)


# --- multipart/form-data requests (RFC 7578, RFC 2046 §5.1) ---------------------------------

#: The most bytes one part's header block may take.
MULTIPART_MAX_HEAD = 16 * 1024
#: The most parts one form may have (each costs a header block to parse).
MULTIPART_MAX_PARTS = 64
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,./:=? -]{0,69}[0-9A-Za-z'()+_,./:=?-]")
_CT_PARAM = re.compile(r';\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')
_FORM_ESCAPES = re.compile("%(0A|0D|22)", re.IGNORECASE)


def _malformed(reason: str) -> RpcError:
    return RpcError(Code.INVALID_ARGUMENT, f"malformed multipart body: {reason}")


def multipart_boundary(content_type: str | None) -> str | None:
    """The boundary of a ``multipart/form-data`` Content-Type; None for any other type.

    A form without a usable boundary (1 to 70 characters of RFC 2046's set) is
    ``invalid_argument``.
    """
    if not content_type:
        return None
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "multipart/form-data":
        return None
    found: list[tuple[str, str]] = _CT_PARAM.findall(";" + params)
    for key, raw in found:
        if key.lower() == "boundary":
            value = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
            if _BOUNDARY.fullmatch(value):
                return value
            break
    raise RpcError(
        Code.INVALID_ARGUMENT,
        "multipart/form-data needs a boundary parameter of 1 to 70 characters",
    )


@dataclass(frozen=True, slots=True)
class PartHead:
    """The start of a form part: its field name, the client's file name (None for a field
    that is not a file; unsanitised) and its Content-Type (None if it gave none)."""

    name: str | None
    filename: str | None
    content_type: str | None


class PartEnd:
    """The end of the current part (``PART_END``, the only instance)."""

    __slots__ = ()


PART_END = PartEnd()
MultipartEvent = PartHead | bytes | PartEnd


class MultipartReader:
    """Splits a ``multipart/form-data`` body into events as its chunks arrive: a ``PartHead``,
    the part's data as ``bytes`` pieces, ``PART_END``; and so on for every part.

    Memory stays bounded: at most one chunk plus the delimiter's length is held (a part's
    data goes out as it comes, minus a tail that could start a delimiter), and one header
    block of at most ``max_head`` bytes. The preamble and the epilogue are ignored.
    """

    def __init__(
        self,
        boundary: str,
        *,
        max_head: int = MULTIPART_MAX_HEAD,
        max_parts: int = MULTIPART_MAX_PARTS,
    ) -> None:
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        # The first delimiter opens the body without a CRLF before it: supply one.
        self._buffer = bytearray(b"\r\n")
        self._state = "preamble"
        self._parts = 0
        self._max_head = max_head
        self._max_parts = max_parts

    @property
    def complete(self) -> bool:
        """True once the closing delimiter has been read."""
        return self._state == "done"

    def feed(self, data: bytes) -> list[MultipartEvent]:
        """The events ``data`` completes (possibly none)."""
        if self._state == "done":
            return []  # the epilogue
        self._buffer += data
        events: list[MultipartEvent] = []
        while self._step(events):
            pass
        return events

    def close(self) -> None:
        """The body ended: fail unless the closing delimiter came."""
        if self._state != "done":
            raise _malformed("the body ended before its closing boundary")

    def _step(self, events: list[MultipartEvent]) -> bool:
        buffer = self._buffer
        state = self._state
        if state == "body" or state == "preamble":
            found = buffer.find(self._delimiter)
            if found < 0:
                keep = len(self._delimiter) - 1  # may be the start of a delimiter
                if len(buffer) > keep:
                    if state == "body":
                        events.append(bytes(buffer[:-keep]))
                    del buffer[:-keep]
                return False
            if state == "body":
                if found:
                    events.append(bytes(buffer[:found]))
                events.append(PART_END)
            del buffer[: found + len(self._delimiter)]
            self._state = "after"
            return True
        if state == "after":
            while buffer and buffer[0] in (0x20, 0x09):  # transport padding (RFC 2046)
                del buffer[:1]
            if len(buffer) < 2:
                return False
            if buffer[:2] == b"--":
                self._state = "done"
                buffer.clear()
                return False
            if buffer[:2] != b"\r\n":
                raise _malformed("a boundary is not followed by CRLF or '--'")
            del buffer[:2]
            self._parts += 1
            if self._parts > self._max_parts:
                raise _malformed(f"more than {self._max_parts} parts")
            self._state = "head"
            return True
        if state == "head":
            if buffer[:2] == b"\r\n":  # a part without headers
                end, skip = 0, 2
            else:
                end, skip = buffer.find(b"\r\n\r\n"), 4
            if end > self._max_head or (end < 0 and len(buffer) > self._max_head + 3):
                raise _malformed(f"a part's headers exceed {self._max_head} bytes")
            if end < 0:
                return False
            events.append(_part_head(bytes(buffer[:end])))
            del buffer[: end + skip]
            self._state = "body"
            return True
        return False


def _part_head(block: bytes) -> PartHead:
    """A part's header block (without its blank line) as a PartHead."""
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").split("\r\n") if block else ():
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise _malformed("a part header line has no name")
        headers[key.strip().lower()] = value.strip()
    disposition = headers.get("content-disposition", "")
    kind, _, params = disposition.partition(";")
    if kind.strip().lower() != "form-data":
        raise _malformed("a part has no 'Content-Disposition: form-data'")
    values: dict[str, str] = {}
    found: list[tuple[str, str]] = _CT_PARAM.findall(";" + params)
    for key, raw in found:
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        values[key.lower()] = raw
    filename = values.get("filename")
    if filename is not None:
        # HTML forms escape only these three in a file name (WHATWG multipart/form-data).
        filename = _FORM_ESCAPES.sub(lambda m: chr(int(m.group(1), 16)), filename)
    return PartHead(values.get("name"), filename, headers.get("content-type"))


# --- Dioxus Fullstack framed items (application/stream+json|+cbor|+msgpack|+postcard) -------
#
# What ``Streaming<T, E>`` of dioxus-fullstack 0.7 writes and reads: every item is an
# unmasked WebSocket binary frame (RFC 6455 section 5.2) holding one encoded payload:
#
#   byte 0   0x82: FIN set, RSV1-3 clear, opcode 2 (binary)
#   byte 1   mask bit clear; the payload length if at most 125, else 126 and the length as
#            a 16-bit big-endian integer, or 127 and the length as a 64-bit big-endian one
#   then     exactly that many payload bytes (JSON, CBOR, MessagePack or Postcard)
#
# There is no end-of-stream frame and no in-band error: a stream ends at the body's end. So
# an error after the first byte cuts the response off (``Framing.error`` is None, as for raw
# bodies): HTTP/1.1 loses its final chunk and HTTP/2 gets a reset, and the Dioxus client
# sees a broken stream, never a clean end. The writer always picks the shortest length form;
# the reader also takes a longer one (RFC 6455 asks for the shortest, nothing is ambiguous).

#: The Dioxus framed stream types, in the order a route offers them.
FRAMED_TYPES = (STREAM_JSON, STREAM_CBOR, STREAM_MSGPACK, STREAM_POSTCARD)
FRAMED_KINDS = frozenset(_BY_TYPE[media] for media in FRAMED_TYPES)
_FIN_BINARY = 0x82
_U16 = 0xFFFF


class FrameError(RpcError):
    """A malformed frame in a framed request body (``invalid_argument``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(Code.INVALID_ARGUMENT, f"invalid frame: {reason}")


def frame_header(length: int) -> bytes:
    """The 2, 4 or 10 header bytes of an unmasked final binary frame of ``length`` bytes."""
    if length < 0 or length > 0x7FFF_FFFF_FFFF_FFFF:  # RFC 6455: the 64-bit form's MSB is 0
        raise ValueError(f"a frame cannot hold {length} bytes")
    if length <= 125:
        return bytes((_FIN_BINARY, length))
    if length <= _U16:
        return bytes((_FIN_BINARY, 126)) + length.to_bytes(2, "big")
    return bytes((_FIN_BINARY, 127)) + length.to_bytes(8, "big")


def frame(payload: bytes) -> bytes:
    """One item: its frame header, then the payload."""
    return frame_header(len(payload)) + payload


def read_frame_header(
    buffer: bytes | bytearray | memoryview, offset: int, max_size: int
) -> tuple[int, int] | None:
    """Where the payload of the frame at ``offset`` starts and how long it is; None while
    the header is incomplete. FrameError unless it is a final, unmasked binary frame with
    clear reserved bits; ``message_too_large`` when the length passes ``max_size``."""
    if len(buffer) - offset < 2:
        return None
    first, second = buffer[offset], buffer[offset + 1]
    if first != _FIN_BINARY:
        if first & 0x70:
            raise FrameError(f"reserved bits set (first byte 0x{first:02x})")
        if first & 0x0F != 2:
            raise FrameError(f"opcode {first & 0x0F}, not 2 (binary)")
        raise FrameError("FIN not set: fragmented frames are not supported")
    if second & 0x80:
        raise FrameError("the frame is masked")
    size = second & 0x7F
    start = offset + 2
    if size >= 126:
        width = 2 if size == 126 else 8
        if len(buffer) < start + width:
            return None
        size = int.from_bytes(buffer[start : start + width], "big")
        start += width
    if size > max_size:
        raise message_too_large(max_size)
    return start, size


class FrameDeframer:
    """A framed request body (``application/stream+*``) split into messages as it arrives:
    at most one frame (``max_size`` bytes plus its header) is buffered."""

    def __init__(self, message_type: type[Message], encoding: Encoding, max_size: int) -> None:
        self.message_type, self.encoding, self.max_size = message_type, encoding, max_size
        self.buffer = bytearray()

    def feed(self, chunk: bytes) -> Iterator[Message]:
        buffer = self.buffer
        buffer += chunk
        start = 0
        try:
            while (header := read_frame_header(buffer, start, self.max_size)) is not None:
                offset, size = header
                if len(buffer) < offset + size:
                    return
                data = bytes(buffer[offset : offset + size])
                start = offset + size
                yield self.encoding.decode(data, self.message_type)
        finally:
            del buffer[:start]

    def close(self) -> None:
        if self.buffer:
            raise FrameError("the request ended inside a frame")


def _can_frame(kind: str, output: type[Message]) -> bool:
    """False for Postcard framing of an output type Postcard cannot carry (``Any``...)."""
    if kind != "framed+postcard" or output is Message:
        return True
    return postcard_supports(output)
