"""Helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from rpckit import Service
from rpckit.grpc import GrpcServer
from rpckit.grpc.server import DEFAULT_MAX_MESSAGE_SIZE

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "tests" / "node" / "node_modules"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(available: bool, reason: str) -> None:
    """Skip outside CI when a tool is missing; in CI a missing tool is a failure."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this test must run, not skip)")
    pytest.skip(reason)


def node_available() -> bool:
    """Node and the test suite's npm packages are installed."""
    return shutil.which("node") is not None and (NODE_MODULES / "@grpc" / "grpc-js").is_dir()


@asynccontextmanager
async def serve_grpc(
    *services: Service, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> AsyncIterator[str]:
    """Serve ``services`` with rpckit's gRPC server on a free loopback port."""
    server = GrpcServer(list(services), max_message_size=max_message_size)
    port = await server.start("127.0.0.1:0")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


@asynccontextmanager
async def serve_http(*services: Service, **options: Any) -> AsyncIterator[str]:
    """Serve ``services`` on the HTTP bridge (uvicorn, real socket); yields the base URL."""
    from rpckit.http import create_app
    from rpckit.http.serve import HttpServer

    server = HttpServer(create_app(list(services), **options), grace=1)
    port = await server.start("127.0.0.1:0")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.stop()
