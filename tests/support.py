"""Helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from rpckit import Service
from rpckit.grpc import GrpcServer
from rpckit.limits import DEFAULT_MAX_MESSAGE_SIZE

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
    from rpckit.serving.http_server import HttpServer

    server = HttpServer(create_app(list(services), **options), grace=1)
    port = await server.start("127.0.0.1:0")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (granian serves from a worker child process)."""
    found = [pid]
    index = 0
    while index < len(found):  # a tree is finite and /proc lists each child once
        current = found[index]
        index += 1
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    found.extend(int(child) for child in f.read().split())
        except OSError:
            continue  # exited meanwhile
    return found


def rss(pid: int) -> int:
    """The process's resident set size in bytes (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def bytes_read(pid: int) -> int:
    """Bytes the process has read through read()-like calls (files and sockets)."""
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def stop_process_tree(process: subprocess.Popen[bytes]) -> None:
    """Stop a server process (SIGINT, then SIGKILL) and any worker it leaves behind."""
    pids = process_tree(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    for pid in pids[1:]:  # a worker the parent failed to stop
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
