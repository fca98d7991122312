"""The rich error details of a gRPC status (``grpc-status-details-bin``: a serialized
``google.rpc.Status``), free of grpcio: gRPC and gRPC-Web carry them the same way."""

from __future__ import annotations

from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2

from rpckit.errors import RpcError

__all__ = ["STATUS_DETAILS_KEY", "details_from_status", "status_details"]

STATUS_DETAILS_KEY = "grpc-status-details-bin"


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
