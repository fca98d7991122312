"""Helpers for the built-in interceptors' tests: a service served in-process on gRPC and
the HTTP bridge (real sockets) with a chosen interceptor chain."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from rpckit import Service
from rpckit.grpc import GrpcServer
from rpckit.interceptors import Interceptor


@dataclass(frozen=True)
class Served:
    """Where one service is served: gRPC ``host:port`` and the HTTP bridge's base URL."""

    grpc: str
    http: str


@asynccontextmanager
async def serve_both(
    service: Service, interceptors: Sequence[Interceptor]
) -> AsyncIterator[Served]:
    """``service`` on gRPC and on the HTTP bridge, both with ``interceptors``."""
    from rpckit.http import create_app
    from rpckit.serving.http_server import HttpServer

    grpc_server = GrpcServer([service], interceptors=interceptors)
    http_server = HttpServer(create_app([service], interceptors=interceptors), grace=1)
    grpc_port = await grpc_server.start("127.0.0.1:0")
    try:
        http_port = await http_server.start("127.0.0.1:0")
        try:
            yield Served(f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}")
        finally:
            await http_server.stop()
    finally:
        await grpc_server.stop(0)
