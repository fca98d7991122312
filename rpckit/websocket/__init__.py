"""One call per WebSocket (the ``rpckit.v1`` sub-protocol): every method shape, bidi
included, for browsers (``rpckit/web/rpckit-ws.js``) and the typed Python client."""

from rpckit.websocket.client import WebSocketTransport
from rpckit.websocket.endpoint import WebSocketCalls, WebSocketEndpoint

__all__ = ["WebSocketCalls", "WebSocketEndpoint", "WebSocketTransport"]
