"""The HTTP bridge: one ASGI app answering Connect, gRPC-Web, the REST routes from
``google.api.http`` and WebSocket on the same handlers, and the Python client transports
for those dialects (async, and blocking ``*Sync`` ones).

One folder per dialect (``connect``, ``grpc_web``, ``rest``, ``websocket``), each with its
pure wire rules (``protocol``), its endpoint and its client; the shared plumbing beside them
(``asgi``, ``wire``, ``dispatch``, ``calls``) names no dialect. The public names below load
lazily, so importing a pure wire module loads neither grpcio nor Starlette.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rpckit.http.app import Bridge, Cors, Lifecycle, create_app
    from rpckit.http.connect.client import ConnectTransport, ConnectTransportSync
    from rpckit.http.grpc_web.client import GrpcWebTransport, GrpcWebTransportSync
    from rpckit.http.options import BridgeOptions
    from rpckit.http.rest.client import RestTransport, RestTransportSync
    from rpckit.http.websocket.client import WebSocketTransport

__all__ = [
    "Bridge",
    "BridgeOptions",
    "ConnectTransport",
    "ConnectTransportSync",
    "Cors",
    "GrpcWebTransport",
    "GrpcWebTransportSync",
    "Lifecycle",
    "RestTransport",
    "RestTransportSync",
    "WebSocketTransport",
    "create_app",
]

_HOMES = {
    "Bridge": "rpckit.http.app",
    "BridgeOptions": "rpckit.http.options",
    "Cors": "rpckit.http.app",
    "Lifecycle": "rpckit.http.app",
    "create_app": "rpckit.http.app",
    "ConnectTransport": "rpckit.http.connect.client",
    "ConnectTransportSync": "rpckit.http.connect.client",
    "GrpcWebTransport": "rpckit.http.grpc_web.client",
    "GrpcWebTransportSync": "rpckit.http.grpc_web.client",
    "RestTransport": "rpckit.http.rest.client",
    "RestTransportSync": "rpckit.http.rest.client",
    "WebSocketTransport": "rpckit.http.websocket.client",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'rpckit.http' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value
