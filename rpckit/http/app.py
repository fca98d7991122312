"""The HTTP/1.1 bridge as a Starlette application: every method of every service, on the
Connect protocol and on the plain routes its ``google.api.http`` rules declare."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

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
from rpckit.http.routes import PathTemplate
from rpckit.service import Service

__all__ = ["create_app"]


def create_app(
    services: list[Service],
    *,
    encodings: EncodingRegistry = encodings,
    compressions: CompressionRegistry = compressions,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    require_protocol_version: bool = False,
) -> Starlette:
    """A Starlette app: Connect at ``/<package>.<Service>/<Method>`` for every method, and
    each method's ``google.api.http`` routes for plain fetch, EventSource and curl."""
    options = BridgeOptions(
        encodings=encodings,
        compressions=compressions,
        max_message_size=max_message_size,
        require_protocol_version=require_protocol_version,
    )
    connect = []
    plain = []
    for service in services:
        for method, handler in service.bind():
            connect.append(Route(method.path, ConnectEndpoint(method, handler, options)))
            for rule in method.http:
                plain.append(PlainRoute(rule, PathTemplate.compile(rule.path), method, handler))
    fallback = _PlainDispatch(PlainRouter(plain, options))
    return Starlette(routes=[*connect, Route("/{path:path}", fallback)])


class _PlainDispatch:
    """Everything that is not a Connect path: a plain route, or a JSON 404/405."""

    def __init__(self, router: PlainRouter) -> None:
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        raw_path = raw_path.split("?", 1)[0]
        found = self.router.match(scope["method"], raw_path)
        if found is not None:
            await self.router.serve(*found, scope, receive, send)
            return
        allowed = self.router.allowed(raw_path)
        if allowed:
            error = RpcError(Code.UNIMPLEMENTED, f"{scope['method']} is not allowed here")
            await send_error(send, 405, error, [(b"allow", ", ".join(allowed).encode())])
            return
        error = RpcError(Code.UNIMPLEMENTED, f"no route for {scope['method']} {scope['path']}")
        await send_error(send, 404, error, [])
