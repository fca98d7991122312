"""The bridge's shared wire rules, free of I/O: the 5-byte message envelope (Connect and
gRPC-Web streams), a request's head as the dialects read it (``Head``, ``Refusal``), the JSON
error object (Connect's, also used by the REST routes' error
bodies and in-band errors and by WebSocket's end frame), metadata as JSON, the millisecond
timeout header and which request headers are call metadata."""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Iterable, Iterator
from typing import Any

from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message

from rpckit.compression import Compression, CompressionRegistry
from rpckit.encodings import Encoding
from rpckit.errors import Code, RpcError, message_too_large
from rpckit.metadata import Metadata
from rpckit.numbers import parse_int

__all__ = [
    "FLAG_COMPRESSED",
    "ONE_REQUEST",
    "PROTOCOL_HEADERS",
    "EnvelopeReader",
    "Head",
    "Refusal",
    "compression_named",
    "envelope",
    "error_from_json",
    "error_json",
    "metadata_json",
    "parse_timeout",
    "request_metadata",
]

FLAG_COMPRESSED = 0x01


_HEADER = struct.Struct(">BI")


MAX_TIMEOUT_DIGITS = 10


# Headers that describe the HTTP exchange, not the call: never handed over as metadata.
PROTOCOL_HEADERS = frozenset(
    {
        "host", "content-type", "content-length", "content-encoding", "accept-encoding",
        "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade",
        "connect-protocol-version", "connect-timeout-ms", "connect-content-encoding",
        "connect-accept-encoding", "accept", "date", "server",
    }
)  # fmt: skip


def envelope(data: bytes, flags: int = 0) -> bytes:
    """One enveloped message: a flags byte, a 4-byte big-endian length, the data."""
    return _HEADER.pack(flags, len(data)) + data


class EnvelopeReader:
    """Splits a byte stream into (flags, message) pairs as chunks arrive: Connect's envelopes
    and gRPC-Web's frames alike (the trailer flag 0x80 is just a flag to the reader).

    Rejects a message longer than ``max_size`` from its header alone, before buffering it.
    ``body`` names the stream in error messages (a client reads a ``response body``).
    """

    def __init__(self, max_size: int, *, body: str = "request body") -> None:
        self.max_size = max_size
        self.body = body
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> Iterator[tuple[int, bytes]]:
        """Add a chunk; yield every message it completes.

        Linear in the input: complete messages are sliced at a moving offset and the
        consumed prefix is dropped once per chunk (not once per message)."""
        buffer = self._buffer
        buffer += chunk
        start = 0
        try:
            while len(buffer) - start >= _HEADER.size:
                flags, length = _HEADER.unpack_from(buffer, start)
                if length > self.max_size:
                    raise message_too_large(self.max_size)
                end = start + _HEADER.size + length
                if len(buffer) < end:
                    return
                data = bytes(buffer[start + _HEADER.size : end])
                start = end
                yield flags, data
        finally:
            del buffer[:start]

    def close(self) -> None:
        """The stream ended: fail if it stopped inside a message."""
        if self._buffer:
            raise RpcError(
                Code.INVALID_ARGUMENT,
                f"{self.body} ended inside a message ({len(self._buffer)} bytes left over)",
            )


#: The one error text of every dialect for a unary or server-streaming call that did not get
#: exactly one request message.
ONE_REQUEST = "the call takes exactly one request message"


class Refusal(RpcError):
    """A request refused before its handler runs (an unsupported content type or verb...).

    ``status`` is the HTTP status of the answer where the dialect refuses at the HTTP level
    (415, 405...), with ``headers`` (``Accept-Post``, ``Allow``); None where it answers the
    way it ends any call (Connect's error JSON, an end-of-stream message, a trailer frame).
    """

    def __init__(
        self,
        code: Code,
        message: str,
        *,
        status: int | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(code, message)
        self.status = status
        self.headers = headers or []


class Head:
    """What a dialect's head step (no I/O) makes of a request's headers: the codec, the
    request compression, the timeout, the call metadata, or the refusal of the request."""

    __slots__ = ("codec", "compression", "compression_name", "metadata", "refusal", "timeout")

    def __init__(
        self,
        metadata: Metadata,
        *,
        codec: Encoding | None = None,
        compression: Compression | None = None,
        compression_name: str | None = None,
        timeout: float | None = None,
        refusal: RpcError | None = None,
    ) -> None:
        #: The call metadata (request headers without the protocol's own).
        self.metadata = metadata
        #: The message codec (None only for a refusal that comes before it is known).
        self.codec = codec
        #: The request messages' compression; None when uncompressed.
        self.compression = compression
        #: Its name as the request gave it (``Context.request_compression``).
        self.compression_name = compression_name
        #: Seconds the client gives the call; None for no deadline.
        self.timeout = timeout
        #: Why the request is refused before its handler (None: it is not).
        self.refusal = refusal


def compression_named(
    name: str | None, registry: CompressionRegistry, header: str = "compression"
) -> Compression | None:
    """The compression a request names (None for none or ``identity``); ``unimplemented``
    naming ``header`` and what is supported when the bridge does not have it."""
    if name is None or name == "identity":
        return None
    compression = registry.get(name)
    if compression is None:
        supported = ", ".join(["identity", *registry.names()])
        raise RpcError(Code.UNIMPLEMENTED, f"unsupported {header} {name!r}; supported: {supported}")
    return compression


def parse_timeout(value: str | None) -> float | None:
    """Seconds from a ``Connect-Timeout-Ms`` header; None when absent.

    At most 10 ASCII digits (the spec's bound); 0 is a deadline already past."""
    if value is None:
        return None
    milliseconds = parse_int(
        value,
        "connect-timeout-ms",
        maximum=10**MAX_TIMEOUT_DIGITS - 1,
        max_digits=MAX_TIMEOUT_DIGITS,
    )
    return milliseconds / 1000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def error_json(error: RpcError) -> dict[str, Any]:
    """The Connect ``Error`` object: code, message, details (type, value, debug)."""
    body: dict[str, Any] = {"code": error.code.connect_name}
    if error.message:
        body["message"] = error.message
    if error.details:
        details = []
        for detail in error.details:
            packed = detail if isinstance(detail, any_pb2.Any) else _pack(detail)
            item: dict[str, Any] = {
                "type": packed.TypeName(),
                "value": _b64(packed.value),
            }
            if not isinstance(detail, any_pb2.Any):
                item["debug"] = json_format.MessageToDict(detail)
            details.append(item)
        body["details"] = details
    return body


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def error_from_json(body: Any, status: int | None = None) -> RpcError:
    """An RpcError from a Connect ``Error`` object (details as ``Any``), or from the HTTP
    status when the body is missing or malformed."""
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        code = Code.from_connect_name(body["code"])
        message = body.get("message") if isinstance(body.get("message"), str) else ""
        details: list[Message] = []
        for item in body.get("details") or ():
            if isinstance(item, dict) and isinstance(item.get("type"), str):
                try:
                    value = _unb64(str(item.get("value", "")))
                except (binascii.Error, ValueError):
                    continue
                details.append(
                    any_pb2.Any(type_url=f"type.googleapis.com/{item['type']}", value=value)
                )
        return RpcError(code, message or "", details)
    if status is not None:
        return RpcError(Code.from_http_status(status), f"HTTP status {status}")
    return RpcError(Code.UNKNOWN, "malformed error")


def metadata_json(metadata: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Metadata as an end-of-stream ``metadata`` object: keys to lists of values."""
    out: dict[str, list[str]] = {}
    for key, value in metadata:
        out.setdefault(key, []).append(value)
    return out


def request_metadata(headers: Iterable[tuple[str, str]]) -> Metadata:
    """The call metadata in request headers: everything but the protocol's own headers."""
    if isinstance(headers, Metadata):
        return headers.without(PROTOCOL_HEADERS)  # keys already lower-case
    metadata = Metadata()
    for key, value in headers:
        key = key.lower()
        if key not in PROTOCOL_HEADERS:
            metadata.add(key, value)
    return metadata
