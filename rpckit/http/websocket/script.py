"""Serves the browser client, ``rpckit/web/rpckit-ws.js``, at ``/_rpckit/rpckit-ws.js``."""

from __future__ import annotations

from importlib.resources import files

from rpckit.http.asgi import Receive, Scope, Send

__all__ = ["SCRIPT_PATH", "script_endpoint"]

#: Where the bridge serves the ES module (import it from a page without a bundler).
SCRIPT_PATH = "/_rpckit/rpckit-ws.js"


def script_source() -> bytes:
    """The ES module's text, from the installed package."""
    return files("rpckit").joinpath("web/rpckit-ws.js").read_bytes()


async def script_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """GET/HEAD: the module as ``text/javascript``; anything else 405."""
    if scope["method"] not in ("GET", "HEAD"):
        await send({"type": "http.response.start", "status": 405, "headers": [(b"allow", b"GET")]})
        await send({"type": "http.response.body", "body": b""})
        return
    body = script_source()
    headers = [
        (b"content-type", b"text/javascript; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-cache"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
