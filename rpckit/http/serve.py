"""Runs the bridge on uvicorn inside an existing event loop (beside the gRPC server)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

__all__ = ["HttpServer"]

#: Seconds uvicorn waits after rpckit's own drain before it cancels what is left.
DRAIN_MARGIN = 2


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the embedding process owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpServer:
    """uvicorn serving an ASGI app on a socket it binds itself (port 0 picks a free port)."""

    def __init__(self, app: Any, *, grace: float = 5.0, log_level: str = "warning") -> None:
        self.app = app
        self.grace = grace
        self.log_level = log_level
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        #: The listening sockets, once started.
        self.sockets: list[socket.socket] = []

    async def start(self, address: str) -> int:
        """Bind ``host:port``, start serving in the background; returns the bound port."""
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose ``proto`` says
        # TCP, and accepted sockets inherit it. With proto 0, every response written in two
        # parts waits for the client's delayed ACK (~40 ms per keep-alive call).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port)))
        except OSError as exc:
            sock.close()
            raise OSError(f"could not bind HTTP server to {address}: {exc.strerror}") from None
        self.sockets = [sock]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level=self.log_level,
            # rpckit ends open calls itself when the grace period is over (see stop());
            # uvicorn's own hard stop only comes after that, as a backstop.
            timeout_graceful_shutdown=math.ceil(self.grace) + DRAIN_MARGIN,
            access_log=False,
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise OSError(f"HTTP server on {address} stopped while starting")
            await asyncio.sleep(0.01)
        bound: int = sock.getsockname()[1]
        return bound

    async def stop(self) -> None:
        """Stop accepting; in-flight calls get the grace period, then rpckit ends them
        cleanly (streams with an in-band ``unavailable`` record, unary calls with 503)."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        drain: asyncio.Event | None = getattr(
            getattr(self.app, "state", None), "rpckit_drain", None
        )
        timer = None
        if drain is not None:
            timer = asyncio.get_running_loop().call_later(self.grace, drain.set)
        try:
            await self._task
        finally:
            if timer is not None:
                timer.cancel()
