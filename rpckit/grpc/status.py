"""RpcError <-> gRPC status, including the rich details in ``grpc-status-details-bin``."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from rpckit.errors import Code
from rpckit.metadata import Metadata, decode_bin

__all__ = ["from_grpc_metadata", "grpc_code", "to_grpc_metadata"]

_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


def grpc_code(code: Code) -> grpc.StatusCode:
    """The grpcio enum member for a code; a number grpcio does not know is ``UNKNOWN``."""
    return _GRPC_CODES.get(int(code), grpc.StatusCode.UNKNOWN)


def to_grpc_metadata(metadata: Metadata) -> tuple[tuple[str, str | bytes], ...]:
    """rpckit metadata as grpcio wants it: a tuple of pairs, ``-bin`` values as raw bytes."""
    return tuple((k, decode_bin(v) if k.endswith("-bin") else v) for k, v in metadata)


def from_grpc_metadata(pairs: Sequence[tuple[str, str | bytes]] | None) -> Metadata:
    """grpcio metadata as rpckit metadata (``-bin`` values base64-encoded)."""
    metadata = Metadata()
    for key, value in pairs or ():
        metadata.add(key, value)
    return metadata
