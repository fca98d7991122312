"""RpcError <-> gRPC status, including the rich details in ``grpc-status-details-bin``."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2

from rpckit.errors import Code, RpcError
from rpckit.metadata import Metadata, decode_bin

__all__ = ["STATUS_DETAILS_KEY", "from_grpc_metadata", "status_details", "to_grpc_metadata"]

STATUS_DETAILS_KEY = "grpc-status-details-bin"
_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


def grpc_code(code: Code) -> grpc.StatusCode:
    """The grpcio enum member for a code; a number grpcio does not know is ``UNKNOWN``."""
    return _GRPC_CODES.get(int(code), grpc.StatusCode.UNKNOWN)


def status_details(error: RpcError) -> bytes | None:
    """A serialized ``google.rpc.Status`` carrying the error's details, or None without details."""
    if not error.details:
        return None
    status = status_pb2.Status(code=int(error.code), message=error.message)
    for detail in error.details:
        packed = any_pb2.Any()
        if isinstance(detail, any_pb2.Any):
            packed.CopyFrom(detail)
        else:
            packed.Pack(detail)
        status.details.append(packed)
    serialized: bytes = status.SerializeToString()
    return serialized


def details_from_status(raw: bytes) -> list[Message]:
    """The details (as ``Any`` messages) of a serialized ``google.rpc.Status``."""
    try:
        status = status_pb2.Status.FromString(raw)
    except Exception:  # malformed details must not hide the error itself
        return []
    return list(status.details)


def to_grpc_metadata(metadata: Metadata) -> tuple[tuple[str, str | bytes], ...]:
    """rpckit metadata as grpcio wants it: a tuple of pairs, ``-bin`` values as raw bytes."""
    return tuple((k, decode_bin(v) if k.endswith("-bin") else v) for k, v in metadata)


def from_grpc_metadata(pairs: Sequence[tuple[str, str | bytes]] | None) -> Metadata:
    """grpcio metadata as rpckit metadata (``-bin`` values base64-encoded)."""
    metadata = Metadata()
    for key, value in pairs or ():
        metadata.add(key, value)
    return metadata
