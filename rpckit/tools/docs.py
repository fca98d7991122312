"""The docs page of ``rpckit serve --docs``: the OpenAPI document rendered by Swagger UI from
local files, and a list of every Connect endpoint.

Paths (only with ``--docs``): ``/docs`` (the page), ``/docs/openapi.json`` (the document,
OpenAPI 3.2), ``/docs/openapi-3.1.json`` (the same for 3.1 tools: what Swagger UI 5 reads,
as it renders no 3.2), ``/docs/ui/...`` (the viewer's files). The viewer is Swagger UI's
dist files as the ``openapi-ui-bundles`` package ships them (the ``rpckit[docs]`` extra), or
any directory holding them named by ``$RPCKIT_DOCS_UI``; nothing is fetched from a CDN.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rpckit.http.asgi import Receive, Scope, Send
from rpckit.interceptors import Interceptor
from rpckit.service import Service
from rpckit.tools.openapi import document

__all__ = ["DOCS_PATH", "DocsPage", "ViewerMissing", "find_viewer", "page_html"]

DOCS_PATH = "/docs"
_UI_FILES = {
    "swagger-ui-bundle.js": b"text/javascript; charset=utf-8",
    "swagger-ui.css": b"text/css; charset=utf-8",
}
#: What ``rpckit serve --docs`` says (after ``rpckit: ``) when the viewer is not installed.
MISSING = "--docs needs the docs extra: pip install 'rpckit[docs]'"


class ViewerMissing(Exception):
    """Swagger UI's files are not installed (the ``rpckit[docs]`` extra is missing)."""


def find_viewer() -> Path:
    """The directory of Swagger UI's dist files: ``$RPCKIT_DOCS_UI`` when set, else the
    one the ``openapi-ui-bundles`` package installs."""
    given = os.environ.get("RPCKIT_DOCS_UI")
    if given:
        where = Path(given)
        if not all((where / name).is_file() for name in _UI_FILES):
            names = " and ".join(_UI_FILES)
            raise ViewerMissing(f"RPCKIT_DOCS_UI={given} holds no {names}")
        return where
    try:
        from openapi_ui_bundles import swagger_ui
    except ImportError:
        raise ViewerMissing(MISSING) from None
    where = Path(swagger_ui.static_path)
    if not all((where / name).is_file() for name in _UI_FILES):
        raise ViewerMissing(MISSING)  # an install that lost its files
    return where


def _connect_rows(services: Sequence[Service]) -> str:
    rows = []
    for service in services:
        for method in service.spec().methods:
            kind = method.kind.value.replace("_", " ")
            note = "gRPC / WebSocket only" if method.kind.name == "BIDI_STREAM" else ""
            rows.append(
                "<tr>"
                f"<td><code>POST {html.escape(method.path)}</code></td>"
                f"<td>{kind}</td>"
                f"<td><code>{html.escape(method.input.DESCRIPTOR.full_name)}</code></td>"
                f"<td><code>{html.escape(method.output.DESCRIPTOR.full_name)}</code></td>"
                f"<td>{note}</td></tr>"
            )
    return "\n".join(rows)


def page_html(title: str, services: Sequence[Service]) -> str:
    """The page: Swagger UI for the plain routes, then the table of Connect endpoints."""
    name = html.escape(title)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{name}</title>
<link rel="stylesheet" href="{DOCS_PATH}/ui/swagger-ui.css">
<style>
body{{margin:0;font-family:sans-serif}}
#connect{{padding:0 20px 40px;max-width:1460px;margin:auto}}
#connect table{{border-collapse:collapse}}
#connect td,#connect th{{border:1px solid #ddd;padding:4px 8px;text-align:left}}
</style>
</head><body>
<div id="openapi"></div>
<section id="connect"><h2>Connect endpoints</h2>
<p>Every method, for Connect clients (connect-es, connect-python, <code>rpckit call</code>):
<code>application/json</code> or <code>application/proto</code> for unary calls,
<code>application/connect+json</code> envelopes for streams.</p>
<table><thead><tr><th>Endpoint</th><th>Kind</th><th>Request</th><th>Response</th><th></th></tr></thead>
<tbody>
{_connect_rows(services)}
</tbody></table></section>
<script src="{DOCS_PATH}/ui/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{url: "{DOCS_PATH}/openapi-3.1.json", dom_id: "#openapi",
  docExpansion: "list", deepLinking: true}});
</script>
</body></html>
"""


class DocsPage:
    """ASGI middleware answering the ``/docs`` paths and passing everything else on."""

    def __init__(
        self,
        app: Any,
        services: Sequence[Service],
        viewer: Path,
        title: str = "rpckit API",
        interceptors: Sequence[Interceptor] = (),
    ) -> None:
        self.app = app
        methods = [m for s in services for m in s.spec().methods]
        spec = document(methods, title=title, interceptors=interceptors)
        self.spec = json.dumps(spec).encode()
        spec31 = document(methods, title=title, interceptors=interceptors, openapi="3.1.1")
        self.spec31 = json.dumps(spec31).encode()
        self.page = page_html(title, services).encode()
        self.files = {name: (viewer / name, kind) for name, kind in _UI_FILES.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(DOCS_PATH):
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        if path in (DOCS_PATH, DOCS_PATH + "/"):
            await _send(send, scope, b"text/html; charset=utf-8", self.page)
        elif path == DOCS_PATH + "/openapi.json":
            await _send(send, scope, b"application/json", self.spec)
        elif path == DOCS_PATH + "/openapi-3.1.json":
            await _send(send, scope, b"application/json", self.spec31)
        elif path.startswith(DOCS_PATH + "/ui/") and path[len(DOCS_PATH) + 4 :] in self.files:
            file, kind = self.files[path[len(DOCS_PATH) + 4 :]]
            await _send(send, scope, kind, file.read_bytes(), cache=True)
        else:
            await self.app(scope, receive, send)


async def _send(send: Send, scope: Scope, kind: bytes, body: bytes, cache: bool = False) -> None:
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    if cache:
        headers.append((b"cache-control", b"public, max-age=3600"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
