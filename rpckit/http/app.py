"""The HTTP/1.1 bridge as a Starlette application: every method of every service, on the
Connect protocol and on the plain routes its ``google.api.http`` rules declare."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from rpckit.call import CallRunner
from rpckit.compression import CompressionRegistry, compressions
from rpckit.encodings import EncodingRegistry, encodings
from rpckit.errors import Code, RpcError
from rpckit.http.asgi import (
    DEFAULT_MAX_MESSAGE_SIZE,
    BridgeOptions,
    Receive,
    Scope,
    Send,
    send_error,
)
from rpckit.http.connect_endpoint import ConnectEndpoint
from rpckit.http.plain import PlainRoute, PlainRouter
from rpckit.http.routes import PathTemplate, validate_rules
from rpckit.interceptors import Interceptor
from rpckit.service import Service

__all__ = ["Cors", "create_app"]

#: Response headers a browser script may read: file metadata, ranges, Connect and gRPC.
EXPOSED_HEADERS = (
    "content-disposition", "content-length", "content-range", "accept-ranges", "etag",
    "last-modified", "x-content-size", "connect-content-encoding", "connect-accept-encoding",
    "grpc-status", "grpc-message", "grpc-status-details-bin",
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
        return Middleware(
            CORSMiddleware,
            allow_origins=list(self.origins),
            allow_origin_regex=self.origin_regex,
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["*"],
            allow_credentials=self.allow_credentials,
            expose_headers=[*EXPOSED_HEADERS, *self.expose_headers],
            max_age=self.max_age,
        )


def create_app(
    services: list[Service],
    *,
    encodings: EncodingRegistry = encodings,
    compressions: CompressionRegistry = compressions,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    require_protocol_version: bool = False,
    cors: Cors | None = None,
    static: Path | None = None,
    interceptors: Sequence[Interceptor] = (),
) -> Starlette:
    """A Starlette app: Connect at ``/<package>.<Service>/<Method>`` for every method, and
    each method's ``google.api.http`` routes for plain fetch, EventSource and curl.

    ``static`` serves a directory (``index.html`` at ``/``) wherever no route matches;
    ``cors`` lets pages on other origins call the bridge; ``interceptors`` run around every
    call (see ``rpckit.interceptors``).
    """
    runner = CallRunner(tuple(interceptors))
    options = BridgeOptions(
        encodings=encodings,
        compressions=compressions,
        max_message_size=max_message_size,
        require_protocol_version=require_protocol_version,
    )
    validate_rules(method for service in services for method in service.spec().methods)
    connect = []
    plain = []
    for service in services:
        for method, handler in service.bind():
            connect.append(Route(method.path, ConnectEndpoint(method, handler, options, runner)))
            for rule in method.http:
                plain.append(PlainRoute(rule, PathTemplate.compile(rule.path), method, handler))
    files = StaticFiles(directory=static, html=True) if static is not None else None
    fallback = _PlainDispatch(PlainRouter(plain, options, runner), files)
    middleware = [cors.middleware()] if cors is not None else []
    app = Starlette(routes=[*connect, Route("/{path:path}", fallback)], middleware=middleware)
    app.state.rpckit_drain = runner.drain  # set by the server at shutdown: see HttpServer
    return app


class _PlainDispatch:
    """Everything that is not a Connect path: a plain route, or a JSON 404/405."""

    def __init__(self, router: PlainRouter, files: ASGIApp | None) -> None:
        self.router = router
        self.files = files

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        raw_path = raw_path.split("?", 1)[0]
        found = self.router.match(scope["method"], raw_path)
        if found is not None:
            await self.router.serve(*found, scope, receive, send)
            return
        allowed = self.router.allowed(raw_path)
        if self.files is not None and not allowed and scope["method"] in ("GET", "HEAD"):
            await self.files(scope, receive, send)
            return
        if allowed:
            error = RpcError(Code.UNIMPLEMENTED, f"{scope['method']} is not allowed here")
            await send_error(send, 405, error, [(b"allow", ", ".join(allowed).encode())])
            return
        error = RpcError(Code.UNIMPLEMENTED, f"no route for {scope['method']} {scope['path']}")
        await send_error(send, 404, error, [])
