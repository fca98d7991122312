"""rpckit: schema-first, gRPC-style RPC; one set of async handlers on gRPC and HTTP/1.1."""

from rpckit.context import Context
from rpckit.errors import Code, RpcError
from rpckit.metadata import Metadata
from rpckit.service import (
    HttpRule,
    Idempotency,
    MethodKind,
    MethodSpec,
    ServerStream,
    Service,
    ServiceSpec,
)
from rpckit.streams import ByteStream, Event, FileStream, Sender, Streaming, TextStream

__all__ = [
    "ByteStream",
    "Code",
    "Context",
    "Event",
    "FileStream",
    "HttpRule",
    "Idempotency",
    "Metadata",
    "MethodKind",
    "MethodSpec",
    "RpcError",
    "Sender",
    "ServerStream",
    "Service",
    "ServiceSpec",
    "Streaming",
    "TextStream",
]

__version__ = "0.1.0"
