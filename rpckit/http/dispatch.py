"""Dispatch by content type: one method path serves Connect and gRPC-Web, chosen per request
as connect-go does. Shared bridge plumbing: it names no dialect's module."""

from __future__ import annotations

from starlette.types import ASGIApp

from rpckit.http.asgi import Receive, Scope, Send

__all__ = ["ByContentType", "is_grpc_web"]


def is_grpc_web(scope: Scope) -> bool:
    """Whether an HTTP request asks for gRPC-Web (by its content type)."""
    for key, value in scope["headers"]:
        if key == b"content-type":
            return bytes(value[:20]).lower() == b"application/grpc-web"
    return False


class ByContentType:
    """One method path, two protocols: gRPC-Web when the content type says so, else Connect
    (chosen per request, as connect-go does)."""

    __slots__ = ("connect", "grpc_web")

    def __init__(self, connect: ASGIApp, grpc_web: ASGIApp) -> None:
        self.connect = connect
        self.grpc_web = grpc_web

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if is_grpc_web(scope):
            await self.grpc_web(scope, receive, send)
        else:
            await self.connect(scope, receive, send)
