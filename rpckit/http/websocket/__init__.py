"""The WebSocket dialect: one call per socket (the ``rpckit.v1`` sub-protocol), every method
shape, bidi included, for browsers (``rpckit/web/rpckit-ws.js``) and the typed Python client
(``rpckit.http.WebSocketTransport``)."""
