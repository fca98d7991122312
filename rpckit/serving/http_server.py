"""Runs the bridge on uvicorn or granian inside an existing event loop (beside the gRPC server).

Both servers listen with ``TCP_NODELAY`` on accepted sockets, can share their port with other
worker processes (``SO_REUSEPORT``) and serve TLS, optionally requiring client certificates.
They drive the bridge through its ``Lifecycle`` (the loop, the WebSocket calls, the drain),
given explicitly: the app they serve may be the bridge wrapped in probes or a docs page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
from collections.abc import Generator
from typing import Any

import uvicorn

from rpckit.http.app import Bridge, Lifecycle
from rpckit.http.asgi import Receive, Scope, Send
from rpckit.limits import DEFAULT_MAX_MESSAGE_SIZE
from rpckit.serving.guard import RequestGuard, uvicorn_protocol
from rpckit.serving.options import SERVERS, ConnectionLimits, HttpTimeouts, ServerKind, TlsFiles
from rpckit.serving.ws_limits import BoundedWebSocketProtocol, SocketWatch, ws_max_size

__all__ = [
    "SERVERS",
    "GranianServer",
    "HttpServer",
    "ServerKind",
    "TlsFiles",
    "bind_tcp",
    "create_http_server",
    "split_address",
]

log = logging.getLogger("rpckit.http")

#: Seconds the HTTP server waits after rpckit's own drain before it cancels what is left.
DRAIN_MARGIN = 2


def split_address(address: str) -> tuple[str, int]:
    """An address as ``(host, port)``, in the forms of ``rpckit.address`` (the same
    as ``--grpc``: ``:PORT`` is loopback); OSError for anything else."""
    from rpckit.address import AddressError, parse_address

    try:
        parsed = parse_address(address)
    except AddressError as exc:
        raise OSError(str(exc)) from None
    return parsed.host, parsed.port


def bind_tcp(address: str, *, reuse_port: bool = False, what: str = "HTTP") -> socket.socket:
    """A TCP socket bound to ``address`` (not listening yet).

    The protocol is ``IPPROTO_TCP`` explicitly: asyncio sets ``TCP_NODELAY`` only on sockets
    whose ``proto`` says TCP, and accepted sockets inherit it. With proto 0, every response
    written in two parts waits for the client's delayed ACK (~40 ms per keep-alive call).
    ``reuse_port`` lets other worker processes bind the same port (the kernel balances
    connections between the listeners).
    """
    host, port = split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"could not bind {what} server to {address}: {exc.strerror}") from None
    return sock


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling (the embedding process owns the signals), and
    with a TLS handshake timeout: uvicorn passes none to ``create_server``, so a connection
    whose handshake never finished held its socket for asyncio's default of 60 s, and the
    header timeout only starts once the handshake is done."""

    def __init__(self, config: uvicorn.Config, handshake_timeout: float) -> None:
        super().__init__(config)
        self.handshake_timeout = handshake_timeout

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        config = self.config
        if sockets is None or config.ssl is None:
            await super().startup(sockets)
            return
        # uvicorn's own startup for given sockets, plus ssl_handshake_timeout (lifespan is
        # off here, so its startup does nothing).
        await self.lifespan.startup()

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=_loop,
            )
            return protocol

        loop = asyncio.get_running_loop()
        self.servers = [
            await loop.create_server(
                create_protocol,
                sock=sock,
                ssl=config.ssl,
                backlog=config.backlog,
                ssl_handshake_timeout=self.handshake_timeout,
            )
            for sock in sockets
        ]
        self.started = True


def _ws_max_size(lifecycle: Lifecycle | None) -> int:
    """The WebSocket message size the server reassembles: the bridge's limit plus a little
    (``rpckit.serving.ws_limits``)."""
    limit = lifecycle.max_message_size if lifecycle is not None else DEFAULT_MAX_MESSAGE_SIZE
    return ws_max_size(limit)


class _WatchWebSockets:
    """granian: every WebSocket's socket watched for a client that sends without reading
    (``SocketWatch``), from the handshake to the end of the app's call."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        watch = SocketWatch(scope)
        watch.start()
        try:
            await self.app(scope, receive, send)
        finally:
            await watch.stop()


def _lifecycle(app: Any, lifecycle: Lifecycle | None) -> Lifecycle | None:
    """The lifecycle given, else the app's own when the app is the bridge itself; a wrapped
    bridge's must be given (nothing is looked for through wrappers)."""
    if lifecycle is None and isinstance(app, Bridge):
        return app.lifecycle
    return lifecycle


class HttpServer:
    """uvicorn serving an ASGI app on a socket it binds itself (port 0 picks a free port).

    uvicorn uses httptools when it is installed (``rpckit[fast]``) and h11 otherwise.
    """

    def __init__(
        self,
        app: Any,
        *,
        grace: float = 5.0,
        log_level: str = "warning",
        reuse_port: bool = False,
        tls: TlsFiles | None = None,
        lifecycle: Lifecycle | None = None,
        timeouts: HttpTimeouts | None = None,
        parser: str = "auto",
        limits: ConnectionLimits | None = None,
    ) -> None:
        #: How this server drives the bridge it serves (None: a plain ASGI app).
        self.lifecycle = _lifecycle(app, lifecycle)
        #: Header, idle and body-progress timeouts (``rpckit.serving.guard``).
        self.timeouts = timeouts if timeouts is not None else HttpTimeouts()
        self.app = RequestGuard(app, body_timeout=self.timeouts.body)
        #: The listen backlog (uvicorn has no connection limit but the open-file limit).
        self.limits = limits if limits is not None else ConnectionLimits()
        self.grace = grace
        self.log_level = log_level
        self.reuse_port = reuse_port
        self.tls = tls
        #: uvicorn's HTTP parser: ``auto`` (httptools when installed), ``httptools`` or ``h11``.
        self.parser = parser
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        #: The listening sockets, once started.
        self.sockets: list[socket.socket] = []

    async def start(self, address: str) -> int:
        """Bind ``host:port``, start serving in the background; returns the bound port."""
        sock = bind_tcp(address, reuse_port=self.reuse_port)
        self.sockets = [sock]
        self.app.loop = asyncio.get_running_loop()  # uvicorn runs the app on this loop
        if self.lifecycle is not None:
            self.lifecycle.serving_on(self.app.loop)
        tls = self.tls
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level=self.log_level,
            # rpckit ends open calls itself when the grace period is over (see stop());
            # uvicorn's own hard stop only comes after that, as a backstop.
            timeout_graceful_shutdown=math.ceil(self.grace) + DRAIN_MARGIN,
            access_log=False,
            backlog=self.limits.backlog,
            http=uvicorn_protocol(self.parser, self.timeouts.header),
            timeout_keep_alive=self.timeouts.idle,  # type: ignore[arg-type]  # int in its hints
            # Pong backlog, fragment memory and invalid UTF-8 bounded (ws_limits); no message
            # larger than the bridge accepts is reassembled.
            ws=BoundedWebSocketProtocol,
            ws_max_size=_ws_max_size(self.lifecycle),
            ssl_certfile=tls.cert if tls else None,
            ssl_keyfile=tls.key if tls else None,
            ssl_ca_certs=tls.client_ca if tls else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls and tls.client_ca else ssl.CERT_NONE,
        )
        self._server = _EmbeddedServer(config, self.timeouts.handshake_seconds)
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
        if self.lifecycle is not None:
            await self.lifecycle.end_websockets()
        self._server.should_exit = True
        timer = None
        if self.lifecycle is not None:
            timer = asyncio.get_running_loop().call_later(self.grace, self.lifecycle.grace_over)
        try:
            await self._task
        finally:
            if timer is not None:
                timer.cancel()


class GranianServer:
    """granian (embedded, ASGI) in the running loop: its Rust side parses HTTP and offers
    ``http.response.pathsend``, so files go out without Python touching their bytes.

    granian binds its own listener with ``SO_REUSEPORT``; for port 0 a placeholder socket
    (bound, never listening) picks the port and holds it while the server runs.
    """

    def __init__(
        self,
        app: Any,
        *,
        grace: float = 5.0,
        log_level: str = "warning",
        tls: TlsFiles | None = None,
        lifecycle: Lifecycle | None = None,
        timeouts: HttpTimeouts | None = None,
        limits: ConnectionLimits | None = None,
        h2c: bool = False,
    ) -> None:
        #: How this server drives the bridge it serves (None: a plain ASGI app).
        self.lifecycle = _lifecycle(app, lifecycle)
        #: HTTP/2 without TLS beside HTTP/1.1 (``--h2c``).
        self.h2c = h2c
        #: Header, idle and body-progress timeouts (``rpckit.serving.guard``).
        self.timeouts = timeouts if timeouts is not None else HttpTimeouts()
        #: Listen backlog and connection limit (granian's ``backlog`` and ``backpressure``).
        self.limits = limits if limits is not None else ConnectionLimits()
        self.app = RequestGuard(_WatchWebSockets(app), body_timeout=self.timeouts.body)
        self.grace = grace
        self.log_level = log_level
        self.tls = tls
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._placeholder: socket.socket | None = None

    async def start(self, address: str) -> int:
        """Bind ``host:port`` and start serving in the background; returns the bound port."""
        from granian.constants import HTTPModes, Interfaces
        from granian.http import HTTP1Settings
        from granian.log import LogLevels
        from granian.server.embed import Server

        self.app.loop = asyncio.get_running_loop()  # so does granian's embedded server
        if self.lifecycle is not None:
            self.lifecycle.serving_on(self.app.loop)
        placeholder = bind_tcp(address, reuse_port=True)
        self._placeholder = placeholder
        host, port = placeholder.getsockname()[:2]
        tls = self.tls
        level = self.log_level.lower()
        self._server = Server(
            self.app,
            address=host,
            port=port,
            interface=Interfaces.ASGINL,
            # granian's default (backpressure = backlog = 128 in embedded mode) serves 128
            # connections at a time: the 129th waits, unanswered, until one of them ends.
            backlog=self.limits.backlog,
            backpressure=self.limits.granian_connections(),
            # Plain TCP: HTTP/1.1 only unless --h2c. With HTTP/2 possible, hyper-util first
            # reads the client's first bytes to tell the versions apart, with no time limit,
            # and only then starts the HTTP/1 connection whose header timeout would close
            # it: a connection that never sent a byte stayed open for good. (Browsers speak
            # HTTP/2 only over TLS, where ALPN decides the version.)
            http=HTTPModes.auto if tls is not None or self.h2c else HTTPModes.http1,
            # hyper's header read timeout also bounds idle keep-alive connections (it runs
            # from the connection's start, or the end of one response, to the next complete
            # request head).
            http1_settings=HTTP1Settings(header_read_timeout=_milliseconds(self.timeouts)),
            log_enabled=level in ("debug", "info"),
            log_level=LogLevels(level) if level in ("debug", "info") else LogLevels.warning,
            ssl_cert=tls.cert if tls else None,
            ssl_key=tls.key if tls else None,
            ssl_ca=tls.client_ca if tls else None,
            ssl_client_verify=bool(tls and tls.client_ca),
        )
        self._task = asyncio.create_task(self._server.serve())
        await _wait_listening(host, port, self._task, address)
        return int(port)

    async def stop(self) -> None:
        """Stop accepting; in-flight calls get the grace period, then rpckit ends them."""
        if self._server is None or self._task is None:
            return
        if self.lifecycle is not None:
            await self.lifecycle.end_websockets()
        self._server.signal_handler_interrupt()
        loop = asyncio.get_running_loop()
        timer = None
        if self.lifecycle is not None:
            timer = loop.call_later(self.grace, self.lifecycle.grace_over)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.grace + DRAIN_MARGIN)
        except TimeoutError:
            log.warning("granian did not stop within the grace period; cancelling")
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        finally:
            if timer is not None:
                timer.cancel()
            if self._placeholder is not None:
                self._placeholder.close()


def _milliseconds(timeouts: HttpTimeouts) -> int:
    return max(1, round(1000 * min(timeouts.header, timeouts.idle)))


async def _wait_listening(host: str, port: int, task: asyncio.Task[None], address: str) -> None:
    """Return once ``host:port`` accepts connections (granian signals no readiness itself)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        if task.done():
            task.result()
            raise OSError(f"HTTP server on {address} stopped while starting")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        if loop.time() > deadline:
            raise OSError(f"HTTP server on {address} did not start listening")
        await asyncio.sleep(0.02)


def create_http_server(
    kind: ServerKind,
    app: Any,
    *,
    grace: float = 5.0,
    log_level: str = "warning",
    reuse_port: bool = False,
    tls: TlsFiles | None = None,
    lifecycle: Lifecycle | None = None,
    timeouts: HttpTimeouts | None = None,
    limits: ConnectionLimits | None = None,
    h2c: bool = False,
) -> HttpServer | GranianServer:
    """The HTTP server ``kind`` for ``app`` (granian always shares its port; ``h2c`` is
    granian's alone)."""
    if kind == "granian":
        return GranianServer(
            app, grace=grace, log_level=log_level, tls=tls, lifecycle=lifecycle,
            timeouts=timeouts, limits=limits, h2c=h2c,
        )  # fmt: skip
    return HttpServer(
        app, grace=grace, log_level=log_level, reuse_port=reuse_port, tls=tls, lifecycle=lifecycle,
        timeouts=timeouts, limits=limits,
    )  # fmt: skip
