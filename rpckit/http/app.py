"""The HTTP/1.1 bridge as a Starlette application: every method of every service."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rpckit.compression import CompressionRegistry, compressions
from rpckit.encodings import EncodingRegistry, encodings
from rpckit.errors import Code, RpcError
from rpckit.http.asgi import DEFAULT_MAX_MESSAGE_SIZE, BridgeOptions
from rpckit.http.connect import error_json
from rpckit.http.connect_endpoint import ConnectEndpoint
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
    """A Starlette app serving each method at ``/<package>.<Service>/<Method>`` (Connect)."""
    options = BridgeOptions(
        encodings=encodings,
        compressions=compressions,
        max_message_size=max_message_size,
        require_protocol_version=require_protocol_version,
    )
    routes = [
        Route(method.path, ConnectEndpoint(method, handler, options))
        for service in services
        for method, handler in service.bind()
    ]
    return Starlette(routes=routes, exception_handlers={404: _not_found})


async def _not_found(request: Request, exc: Exception) -> Response:
    error = RpcError(Code.UNIMPLEMENTED, f"no method at {request.url.path}")
    return Response(
        json.dumps(error_json(error)), status_code=404, media_type="application/json"
    )
