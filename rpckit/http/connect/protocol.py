"""The Connect protocol's own wire rules, free of I/O: end-of-stream messages, ``trailer-``
headers and the protocol version. The envelope, the error object and the timeout header are
the bridge's shared rules (``rpckit.http.wire``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from rpckit.errors import Code, RpcError
from rpckit.http.wire import PROTOCOL_HEADERS, error_from_json, error_json, metadata_json
from rpckit.metadata import Metadata

__all__ = [
    "FLAG_END_STREAM",
    "PROTOCOL_VERSION",
    "TRAILER_PREFIX",
    "end_stream",
    "metadata_from_headers",
    "parse_end_stream",
]

PROTOCOL_VERSION = "1"
FLAG_END_STREAM = 0x02
TRAILER_PREFIX = "trailer-"


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
