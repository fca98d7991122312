"""The HTTP/1.1 bridge as one ASGI app: every method of every service, on the Connect
protocol and on the plain routes its ``google.api.http`` rules declare."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from rpckit.call import CallRunner
from rpckit.errors import Code, RpcError
from rpckit.http.adapter import HttpCall, call_context, unknown_method
from rpckit.http.asgi import Receive, Scope, Send, refuse_websocket, send_error
from rpckit.http.connect.endpoint import ConnectEndpoint
from rpckit.http.dispatch import ByContentType, is_grpc_web
from rpckit.http.grpc_web.endpoint import GrpcWebEndpoint
from rpckit.http.options import BridgeOptions
from rpckit.http.rest.endpoint import PlainRoute, PlainRouter
from rpckit.http.rest.routes import PathTemplate, validate_rules
from rpckit.http.websocket.endpoint import WebSocketCalls, WebSocketEndpoint
from rpckit.http.websocket.script import SCRIPT_PATH, script_endpoint
from rpckit.http.wire import Head, Refusal, request_metadata
from rpckit.interceptors import Interceptor
from rpckit.limits import DEFAULT_MAX_MESSAGE_SIZE
from rpckit.metadata import Metadata
from rpckit.service import Service

__all__ = ["Bridge", "BridgeOptions", "Cors", "Lifecycle", "create_app"]

#: Response headers a browser script may read: file metadata, ranges, Connect and gRPC.
EXPOSED_HEADERS = (
    "content-disposition", "content-length", "content-range", "accept-ranges", "etag",
    "last-modified", "x-content-size", "connect-content-encoding", "connect-accept-encoding",
    "grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-encoding",
    "grpc-accept-encoding",
)  # fmt: skip


@dataclass(frozen=True)
class Cors:
    """Which other origins may call the bridge from a browser.

    ``origins`` lists exact origins (``https://app.example``) or ``*``; ``origin_regex``
    matches more. Preflights are answered for Connect and plain routes alike, every request
    header is allowed, and ``expose_headers`` (file metadata, ranges, Connect-*, Grpc-*,
    plus your own) become readable from scripts.
    """

    origins: Sequence[str] = ()
    origin_regex: str | None = None
    allow_credentials: bool = False
    expose_headers: Sequence[str] = field(default_factory=tuple)
    max_age: int = 600

    def middleware(self) -> Middleware:
        """The Starlette middleware that applies this policy."""
        return Middleware(CORSMiddleware, **self.options())

    def options(self) -> dict[str, Any]:
        """Starlette's ``CORSMiddleware`` arguments for this policy."""
        return {
            "allow_origins": list(self.origins),
            "allow_origin_regex": self.origin_regex,
            "allow_methods": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
            "allow_headers": ["*"],
            "allow_credentials": self.allow_credentials,
            "expose_headers": [*EXPOSED_HEADERS, *self.expose_headers],
            "max_age": self.max_age,
        }


def create_app(
    services: list[Service],
    *,
    options: BridgeOptions | None = None,
    cors: Cors | None = None,
    static: Path | None = None,
    interceptors: Sequence[Interceptor] = (),
) -> Bridge:
    """The bridge: Connect at ``/<package>.<Service>/<Method>`` for every method, and each
    method's ``google.api.http`` routes for plain fetch, EventSource and curl.

    ``options`` are the wire settings every endpoint shares (encodings, compressions,
    limits, SSE keep-alive; ``BridgeOptions()`` when omitted); ``static`` serves a
    directory (``index.html`` at ``/``) wherever no route matches; ``cors`` lets pages on
    other origins call the bridge; ``interceptors`` run around every call (see
    ``rpckit.interceptors``). A server running the bridge drives it through
    ``bridge.lifecycle``.
    """
    runner = CallRunner(tuple(interceptors))
    options = options if options is not None else BridgeOptions()
    validate_rules(method for service in services for method in service.spec().methods)
    connect: dict[str, ASGIApp] = {SCRIPT_PATH: script_endpoint}
    websockets: dict[str, ASGIApp] = {}
    calls = WebSocketCalls(runner)
    plain = []
    for service in services:
        for method, handler in service.bind():
            connect[method.path] = ByContentType(
                ConnectEndpoint(method, handler, options, runner),
                GrpcWebEndpoint(method, handler, options, runner),
            )
            websockets[method.path] = WebSocketEndpoint(
                method, handler, options, runner, calls,
                origins=cors.origins if cors else (),
                origin_regex=cors.origin_regex if cors else None,
            )  # fmt: skip
            for rule in method.http:
                plain.append(PlainRoute(rule, PathTemplate.compile(rule.path), method, handler))
    files = StaticFiles(directory=static, html=True) if static is not None else None
    router = PlainRouter(plain, options, runner)
    return Bridge(connect, router, websockets, files, runner, cors, options, calls)


class Lifecycle:
    """What a server tells the bridge it runs, handed to the server explicitly
    (``HttpServer(app, lifecycle=bridge.lifecycle)``) however the bridge is wrapped.

    ``serving_on(loop)`` when it starts (calls then find their task without a system call;
    see ``CallRunner.current_task``); ``end_websockets()`` when it stops accepting (servers
    drop WebSocket sockets at once, so their calls end first with ``unavailable`` and a
    clean close); ``grace_over()`` at the end of the grace period (the drain: open calls
    end with ``unavailable``).
    """

    def __init__(
        self,
        runner: CallRunner,
        websocket_calls: WebSocketCalls,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self._runner = runner
        #: The WebSocket calls in flight.
        self.websocket_calls = websocket_calls
        #: The bridge's message limit: the server reassembles no larger WebSocket message.
        self.max_message_size = max_message_size

    def serving_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop every call of this bridge will run on."""
        self._runner.loop = loop

    async def end_websockets(self) -> None:
        """End the WebSocket calls in flight with ``unavailable`` and wait briefly for them."""
        if len(self.websocket_calls):
            await self.websocket_calls.close_all()

    def grace_over(self) -> None:
        """End every call still open with ``unavailable`` (the drain)."""
        self._runner.drain.set()


class Bridge:
    """The HTTP bridge as one ASGI app.

    A Connect path is one dictionary lookup (no router walks every route per request);
    everything else goes to the plain routes, then to the static files, then a JSON 404/405.
    ``options`` are its wire settings; a server drives it through ``lifecycle``.
    """

    def __init__(
        self,
        connect: dict[str, ASGIApp],
        plain: PlainRouter,
        websockets: dict[str, ASGIApp],
        files: ASGIApp | None,
        runner: CallRunner,
        cors: Cors | None,
        options: BridgeOptions,
        websocket_calls: WebSocketCalls,
    ) -> None:
        self.connect = connect
        self.plain = plain
        #: WebSocket calls (``rpckit.http.websocket``) by method path.
        self.websockets = websockets
        self.files = files
        self.runner = runner
        self.options = options
        #: The call runner's drain (``lifecycle.grace_over()`` sets it), for in-process use.
        self.drain = runner.drain
        #: How a server starts, stops and drains this bridge.
        self.lifecycle = Lifecycle(runner, websocket_calls, options.max_message_size)
        self._app: ASGIApp = self._dispatch
        if cors is not None:
            self._app = CORSMiddleware(self._dispatch, **cors.options())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        await self._app(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            socket = self.websockets.get(scope["path"]) if scope["type"] == "websocket" else None
            if socket is not None:
                await socket(scope, receive, send)
            elif scope["type"] == "websocket":  # no route: the server refuses the WebSocket
                await self._unknown_method(scope, receive, send)
            return
        endpoint = self.connect.get(scope["path"])
        if endpoint is not None:
            await endpoint(scope, receive, send)
            return
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        raw_path = raw_path.split("?", 1)[0]
        found = self.plain.match(scope["method"], raw_path)
        if found is not None:
            await self.plain.serve(*found, scope, receive, send)
            return
        allowed = self.plain.allowed(raw_path)
        if self.files is not None and not allowed and scope["method"] in ("GET", "HEAD"):
            await self.files(scope, receive, send)
            return
        if allowed:
            error = RpcError(Code.UNIMPLEMENTED, f"{scope['method']} is not allowed here")
            await send_error(send, 405, error, [(b"allow", ", ".join(allowed).encode())])
            return
        await self._unknown_method(scope, receive, send)

    async def _unknown_method(self, scope: Scope, receive: Receive, send: Send) -> None:
        """404; a path shaped like a method (``/<package>.<Service>/<Method>``) is a call to a
        method the bridge does not serve, refused through the runner so that interceptors and
        the access log see it.

        A WebSocket handshake to any path without a WebSocket endpoint (unknown paths, plain
        routes, static files, the probes and docs mounted around the bridge) is answered 404
        before the upgrade (``refuse_websocket``), never left for the server to fail."""
        websocket = scope["type"] == "websocket"
        verb = "WEBSOCKET" if websocket else scope["method"]
        error = Refusal(Code.UNIMPLEMENTED, f"no route for {verb} {scope['path']}", status=404)
        method = unknown_method(scope["path"])
        if method is None:
            if websocket:
                await refuse_websocket(scope, send, 404, error)
            else:
                await send_error(send, 404, error, [])
            return
        dialect = "websocket" if websocket else "grpc-web" if is_grpc_web(scope) else "connect"
        head = Head(request_metadata(Metadata.from_asgi(scope["headers"])), refusal=error)
        if websocket:
            ctx = call_context(method, scope, head, dialect, "websocket")
            await self.runner.refuse(ctx, error, partial(refuse_websocket, scope, send, 404))
        else:
            call = HttpCall(self.runner, method, _no_handler, scope, receive, send, head, dialect)
            await call.refuse(error)


def _no_handler(*args: Any) -> None:
    """The handler of a method the bridge does not serve: never called (the call is refused)."""


async def _lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start or stop: acknowledge both lifespan events."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
