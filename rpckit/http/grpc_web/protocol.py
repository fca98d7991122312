"""The gRPC-Web protocol's wire rules, free of I/O: content types, frames, the trailer frame,
the base64 ``-text`` variant (decoded and encoded incrementally), ``grpc-timeout`` and
``grpc-message`` escaping, and the status a client reads from trailers. Server, client and
tests build on these.

A gRPC-Web body is a sequence of 5-byte-prefixed frames (flags, big-endian length), the
envelope Connect uses too (``rpckit.http.wire``): flag 0x01 marks a compressed message, flag
0x80 the trailer frame, whose payload is HTTP/1-style ``key: value\\r\\n`` lines
(``grpc-status``, ``grpc-message``, metadata).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote

from rpckit.compression import CompressionRegistry
from rpckit.encodings import EncodingRegistry
from rpckit.errors import Code, RpcError
from rpckit.http.wire import (
    FLAG_COMPRESSED,
    Head,
    Refusal,
    compression_named,
    envelope,
)
from rpckit.metadata import Metadata, decode_bin
from rpckit.service import MethodSpec
from rpckit.status import STATUS_DETAILS_KEY, details_from_status

__all__ = [
    "FLAG_COMPRESSED",
    "FLAG_TRAILER",
    "PROTOCOL_HEADERS",
    "RESPONSE_PROTOCOL_HEADERS",
    "Base64Decoder",
    "GrpcWebType",
    "encode_grpc_timeout",
    "encode_message",
    "parse_content_type",
    "parse_grpc_timeout",
    "parse_head",
    "parse_trailers",
    "request_metadata",
    "response_metadata",
    "status_from_trailers",
    "trailer_frame",
]

FLAG_TRAILER = 0x80
_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])")
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
#: Request headers that belong to the protocol, not to the call's metadata.
PROTOCOL_HEADERS = frozenset(
    {
        "grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "x-grpc-web", "x-user-agent",
        "te", "content-type", "content-length", "accept", "accept-encoding", "host",
        "connection", "keep-alive", "transfer-encoding", "origin", "referer", "user-agent",
    }
)  # fmt: skip
#: Response headers and trailers that belong to the protocol or to HTTP, not to the call.
RESPONSE_PROTOCOL_HEADERS = frozenset(
    {
        "grpc-status", "grpc-message", STATUS_DETAILS_KEY, "grpc-encoding",
        "grpc-accept-encoding", "content-type", "content-length", "content-encoding",
        "transfer-encoding", "connection", "keep-alive", "date", "server", "vary", "trailer",
    }
)  # fmt: skip


class GrpcWebType:
    """A parsed ``application/grpc-web[-text][+codec]`` content type."""

    __slots__ = ("codec", "text")

    def __init__(self, codec: str, text: bool) -> None:
        #: The message codec's name: ``proto`` when the type names none.
        self.codec = codec
        #: True for the base64 ``-text`` variant.
        self.text = text

    def content_type(self) -> str:
        """The response content type: the request's, with the codec spelled out."""
        return f"application/grpc-web{'-text' if self.text else ''}+{self.codec}"


def parse_head(
    verb: str,
    method: MethodSpec[Any, Any],
    headers: Metadata,
    encodings: EncodingRegistry,
    compressions: CompressionRegistry,
) -> tuple[GrpcWebType | None, Head]:
    """The gRPC-Web type a request asks for and what its head asks for, or why it is
    refused before the handler.

    Refused at the HTTP level (a ``Refusal`` with its status, the type None): a content type
    that is no gRPC-Web type of a codec of the bridge (415 as gRPC's HTTP/2 spec asks, with
    the code in ``grpc-status`` for clients that read a trailers-only answer, and
    ``Accept-Post``), a verb other than POST (405). Refused as the call would end (a trailer
    frame): a malformed ``grpc-timeout``, an unknown ``grpc-encoding``.
    """
    metadata = request_metadata(headers)
    content_type = headers.get("content-type")
    kind = parse_content_type(content_type or "")
    codec = encodings.get(kind.codec) if kind is not None else None
    if kind is None or codec is None:
        names = ["", *(f"+{name}" for name in encodings.names())]
        accepted = ", ".join(f"application/grpc-web{name}" for name in names)
        message = f"unsupported content type {content_type!r}; accepted: {accepted}"
        status = [
            (b"grpc-status", b"%d" % Code.UNIMPLEMENTED),
            (b"grpc-message", encode_message(message).encode("latin-1", "replace")),
            (b"accept-post", accepted.encode()),
        ]
        refusal = Refusal(Code.UNIMPLEMENTED, message, status=415, headers=status)
        return None, Head(metadata, refusal=refusal)
    if verb != "POST":
        refusal = Refusal(
            Code.UNIMPLEMENTED, "gRPC-Web calls use POST", status=405, headers=[(b"allow", b"POST")]
        )
        return None, Head(metadata, refusal=refusal)
    encoding = headers.get("grpc-encoding")
    head = Head(
        metadata,
        codec=codec,
        compression_name=None if encoding in (None, "identity") else encoding,
    )
    try:
        head.timeout = parse_grpc_timeout(headers.get("grpc-timeout"))
        head.compression = compression_named(encoding, compressions, "grpc-encoding")
    except RpcError as error:
        head.refusal = error
    return kind, head


def parse_content_type(value: str) -> GrpcWebType | None:
    """The gRPC-Web type of a ``Content-Type`` value, or None if it is not gRPC-Web."""
    main = value.split(";", 1)[0].strip().lower()
    for prefix, text in (("application/grpc-web-text", True), ("application/grpc-web", False)):
        if main == prefix:
            return GrpcWebType("proto", text)
        if main.startswith(prefix + "+"):
            codec = main[len(prefix) + 1 :]
            return GrpcWebType(codec, text) if codec else None
    return None


class Base64Decoder:
    """Decodes a ``grpc-web-text`` body chunk by chunk.

    Clients may encode each frame separately, so padding can appear in the middle of the
    body: every complete 4-character group is decoded on its own. Whitespace is ignored.
    ``body`` names the stream in error messages.
    """

    def __init__(self, *, body: str = "request body") -> None:
        self.body = body
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """The bytes that the complete groups so far decode to."""
        data = self._pending + bytes(c for c in chunk if c not in b" \t\r\n")
        usable = len(data) - len(data) % 4
        self._pending = data[usable:]
        if not usable:
            return b""
        try:
            if b"=" not in data[: usable - 4]:
                return base64.b64decode(data[:usable], validate=True)
            return b"".join(
                base64.b64decode(data[i : i + 4], validate=True) for i in range(0, usable, 4)
            )
        except (binascii.Error, ValueError):
            raise RpcError(
                Code.INVALID_ARGUMENT, f"grpc-web-text {self.body} is not valid base64"
            ) from None

    def close(self) -> None:
        """The body ended: fail on a dangling partial group."""
        if self._pending:
            raise RpcError(
                Code.INVALID_ARGUMENT, f"grpc-web-text {self.body} ends inside a base64 group"
            )


def parse_grpc_timeout(value: str | None) -> float | None:
    """Seconds from a ``grpc-timeout`` header (``1S``, ``250m``: at most 8 digits and a unit)."""
    if value is None:
        return None
    match = _TIMEOUT.fullmatch(value.strip())
    if match is None:
        raise RpcError(
            Code.INVALID_ARGUMENT,
            f"grpc-timeout must be 1 to 8 digits and a unit (H, M, S, m, u, n), not {value!r}",
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


def encode_grpc_timeout(seconds: float) -> str:
    """A ``grpc-timeout`` value for ``seconds``: the finest unit that fits in 8 digits,
    rounded up (so the server never sees a shorter deadline than the caller gave)."""
    for unit, size in (("n", 1e-9), ("u", 1e-6), ("m", 1e-3), ("S", 1.0), ("M", 60.0)):
        count = math.ceil(max(seconds, 0.0) / size)
        if count < 100_000_000:
            return f"{max(count, 1)}{unit}"
    return f"{min(math.ceil(seconds / 3600.0), 99_999_999)}H"


def encode_message(message: str) -> str:
    """``grpc-message`` as the gRPC spec wants it: percent-encoded outside printable ASCII
    (and at its ends, spaces too: a header value's outer spaces do not survive parsing)."""
    encoded = quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")
    inner = encoded.strip(" ")
    if inner == encoded:
        return encoded
    if not inner:
        return "%20" * len(encoded)
    start = encoded.index(inner)
    return "%20" * start + inner + "%20" * (len(encoded) - start - len(inner))


def trailer_frame(code: Code, message: str, trailers: Iterable[tuple[str, str]]) -> bytes:
    """The final frame (flag 0x80): ``grpc-status``, ``grpc-message`` and the trailers."""
    lines = [f"grpc-status:{int(code)}"]
    if message:
        lines.append(f"grpc-message:{encode_message(message)}")
    for key, value in trailers:
        if "\r" in value or "\n" in value:
            continue  # a value cannot span lines; dropping it beats corrupting the frame
        lines.append(f"{key.lower()}:{value}")
    return envelope(("\r\n".join(lines) + "\r\n").encode("latin-1", errors="replace"), FLAG_TRAILER)


def parse_trailers(data: bytes) -> Metadata:
    """The trailers of a trailer frame's payload (keys lower-cased; ``grpc-message`` decoded)."""
    trailers = Metadata()
    for line in data.decode("latin-1").split("\r\n"):
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise RpcError(Code.INTERNAL, f"malformed trailer line {line!r}")
        key = key.strip().lower()
        value = value.strip()
        trailers.add(key, unquote(value) if key == "grpc-message" else value)
    return trailers


def request_metadata(headers: Iterable[tuple[str, str]]) -> Metadata:
    """The call metadata in gRPC-Web request headers: all but the protocol's own."""
    metadata = Metadata()
    for key, value in headers:
        key = key.lower()
        if key not in PROTOCOL_HEADERS and not key.startswith(("sec-", "access-control-")):
            metadata.add(key, value)
    return metadata


def response_metadata(pairs: Iterable[tuple[str, str]]) -> Metadata:
    """The call metadata in response headers or trailers: all but the protocol's own."""
    metadata = Metadata()
    for key, value in pairs:
        key = key.lower()
        if key not in RESPONSE_PROTOCOL_HEADERS:
            metadata.add(key, value)
    return metadata


def status_from_trailers(trailers: Metadata) -> RpcError | None:
    """The call's outcome from its trailers (or a trailers-only response's headers): None for
    ``grpc-status: 0``, else an RpcError with the message, the details of
    ``grpc-status-details-bin`` and the other trailers as its metadata."""
    status = trailers.get("grpc-status")
    metadata = response_metadata(trailers).items()
    if status is None:
        return RpcError(Code.UNKNOWN, "gRPC-Web trailers carry no grpc-status", metadata=metadata)
    try:
        code = Code(int(status.strip(), 10))
    except ValueError:
        return RpcError(Code.UNKNOWN, f"malformed grpc-status {status[:40]!r}", metadata=metadata)
    if code is Code.OK:
        return None
    message = trailers.get("grpc-message") or ""
    details = trailers.get(STATUS_DETAILS_KEY)
    try:
        raw = decode_bin(details) if details else b""
    except (binascii.Error, ValueError):
        raw = b""
    return RpcError(code, message, details_from_status(raw) if raw else (), metadata=metadata)
