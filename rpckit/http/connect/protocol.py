"""The Connect protocol's own wire rules, free of I/O: a request's head (``parse_head``: the
codec, compression, timeout and metadata, or the refusal), end-of-stream messages,
``trailer-`` headers and the protocol version. The envelope, the error object and the
timeout header are the bridge's shared rules (``rpckit.http.wire``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from rpckit.compression import CompressionRegistry
from rpckit.encodings import EncodingRegistry, connect_codec
from rpckit.errors import Code, RpcError
from rpckit.http.wire import (
    PROTOCOL_HEADERS,
    Head,
    Refusal,
    compression_named,
    error_from_json,
    error_json,
    metadata_json,
    parse_timeout,
    request_metadata,
)
from rpckit.metadata import Metadata
from rpckit.service import Idempotency, MethodKind, MethodSpec

__all__ = [
    "FLAG_END_STREAM",
    "PROTOCOL_VERSION",
    "TRAILER_PREFIX",
    "end_stream",
    "metadata_from_headers",
    "parse_end_stream",
    "parse_head",
]

PROTOCOL_VERSION = "1"
FLAG_END_STREAM = 0x02
TRAILER_PREFIX = "trailer-"


def parse_head(
    verb: str,
    method: MethodSpec[Any, Any],
    headers: Metadata,
    query: Mapping[str, str],
    encodings: EncodingRegistry,
    compressions: CompressionRegistry,
    *,
    require_version: bool = False,
) -> Head:
    """What a Connect request's head asks for, or why it is refused before the handler.

    Refused at the HTTP level (a ``Refusal`` with its status): a verb other than POST or GET
    (405), GET for a method with side effects (405, ``Allow: POST``), a content type (or GET
    ``encoding``) that is no codec of the bridge for the call's shape (415, ``Accept-Post``).
    Refused as the call would end (``refusal`` set, the codec known): a protocol version
    other than 1 (or none, with ``require_version``), a malformed timeout, GET's
    ``connect`` other than ``v1``, an unknown compression. ``query`` is GET's parsed query
    string (empty for POST).
    """
    metadata = request_metadata(headers)
    unary = method.kind is MethodKind.UNARY
    if verb == "POST":
        content_type = headers.get("content-type")
        encoding = headers.get("content-encoding" if unary else "connect-content-encoding")
    elif verb == "GET":
        if not unary or method.idempotency is not Idempotency.NO_SIDE_EFFECTS:
            return Head(
                metadata,
                refusal=Refusal(
                    Code.UNIMPLEMENTED,
                    f"{method.name} has side effects: call it with POST",
                    status=405,
                    headers=[(b"allow", b"POST")],
                ),
            )
        content_type = f"application/{query.get('encoding', '')}"
        encoding = query.get("compression")
    else:
        refusal = Refusal(Code.UNIMPLEMENTED, "Connect calls use POST (or GET)", status=405)
        return Head(metadata, refusal=refusal)
    parsed = connect_codec(content_type or "")
    codec = encodings.get(parsed[0]) if parsed else None
    if parsed is None or codec is None or parsed[1] == unary:
        prefix = "application/" if unary else "application/connect+"
        accepted = [prefix + name for name in encodings.names()]
        refusal = Refusal(
            Code.UNIMPLEMENTED,
            f"unsupported content type {content_type!r}; accepted: {', '.join(accepted)}",
            status=415,
            headers=[(b"accept-post", ", ".join(accepted).encode())],
        )
        return Head(metadata, refusal=refusal)
    head = Head(
        metadata,
        codec=codec,
        compression_name=None if encoding in (None, "identity") else encoding,
    )
    try:
        version = headers.get("connect-protocol-version")
        if version is not None and version != PROTOCOL_VERSION:
            raise RpcError(
                Code.INVALID_ARGUMENT, f"unsupported connect-protocol-version {version!r}"
            )
        if version is None and require_version:
            raise RpcError(Code.INVALID_ARGUMENT, "missing connect-protocol-version header")
        head.timeout = parse_timeout(headers.get("connect-timeout-ms"))
        if verb == "GET" and query.get("connect", "v1") != "v1":
            raise RpcError(Code.INVALID_ARGUMENT, f"unsupported connect={query['connect']}")
        head.compression = compression_named(encoding, compressions)
    except RpcError as error:
        head.refusal = error
    return head


def end_stream(error: RpcError | None, trailers: Iterable[tuple[str, str]]) -> bytes:
    """The end-of-stream message (JSON) that closes every Connect response stream."""
    body: dict[str, Any] = {}
    if error is not None:
        body["error"] = error_json(error)
        trailers = [*trailers, *error.metadata]
    metadata = metadata_json(trailers)
    if metadata:
        body["metadata"] = metadata
    return json.dumps(body, separators=(",", ":")).encode()


def parse_end_stream(data: bytes) -> tuple[RpcError | None, Metadata]:
    """The error (if any) and trailers of an end-of-stream message."""
    try:
        body = json.loads(data)
    except ValueError:
        return RpcError(Code.INTERNAL, "malformed end-of-stream message"), Metadata()
    if not isinstance(body, dict):
        return RpcError(Code.INTERNAL, "malformed end-of-stream message"), Metadata()
    trailers = Metadata()
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        for key, values in metadata.items():
            for value in values if isinstance(values, list) else [values]:
                trailers.add(str(key), str(value))
    error = body.get("error")
    if error is None:
        return None, trailers
    rpc_error = error_from_json(error)
    rpc_error.metadata = trailers.items()
    return rpc_error, trailers


def metadata_from_headers(headers: Iterable[tuple[str, str]]) -> tuple[Metadata, Metadata]:
    """Split response headers into leading metadata and ``trailer-`` prefixed trailers."""
    leading, trailing = Metadata(), Metadata()
    for key, value in headers:
        key = key.lower()
        if key.startswith(TRAILER_PREFIX):
            trailing.add(key[len(TRAILER_PREFIX) :], value)
        elif key not in PROTOCOL_HEADERS:
            leading.add(key, value)
    return leading, trailing
