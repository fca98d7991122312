"""The gRPC transport: a grpc.aio server for rpckit services and a client transport."""

from rpckit.grpc.client import GrpcTransport, GrpcTransportSync
from rpckit.grpc.server import GrpcServer, generic_handler

__all__ = ["GrpcServer", "GrpcTransport", "GrpcTransportSync", "generic_handler"]
