"""A page on another origin is allowed or refused according to the CORS configuration.

The example runs with ``--cors-origin http://localhost:P``; a tiny page is served on port P by
Python's http.server and opened twice, as ``http://localhost:P`` (origin A, allowed) and as
``http://127.0.0.1:P`` (origin B: same server, another origin, not allowed). From each, the
page's own ``fetch`` calls the example's plain routes and a Connect method with a JSON body (a
non-safelisted content type, so Chromium sends a preflight first). The preflight answers are
also checked directly with httpx.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

from tests.browser.conftest import ExampleServer, start_example

pytestmark = pytest.mark.browser

GET_DOG = "/examples.streams.v1.StreamsService/GetDog"
HELLO = "Hello from rpckit!\n"  # files_dir's hello.txt

#: Runs in the page: plain GET of a dog, a file download's metadata headers, and a Connect
#: unary call in JSON. Each result is {ok, status, ...} or, when fetch throws, {error, message}.
FETCHES = """
async (api) => {
  async function attempt(call) {
    try {
      return await call();
    } catch (error) {
      return { error: error.name, message: String(error.message) };
    }
  }
  const dog = await attempt(async () => {
    const response = await fetch(`${api}/api/dogs/3`);
    return { ok: response.ok, status: response.status, body: await response.json() };
  });
  const file = await attempt(async () => {
    const response = await fetch(`${api}/api/files/hello.txt`);
    return {
      ok: response.ok,
      status: response.status,
      size: response.headers.get("x-content-size"),
      disposition: response.headers.get("content-disposition"),
      body: await response.text(),
    };
  });
  const connect = await attempt(async () => {
    const response = await fetch(`${api}/examples.streams.v1.StreamsService/GetDog`, {
      method: "POST",
      headers: { "content-type": "application/json", "connect-protocol-version": "1" },
      body: JSON.stringify({ index: 3 }),
    });
    return { ok: response.ok, status: response.status, body: await response.json() };
  });
  return { dog, file, connect };
}
"""


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def page_port(tmp_path: Path) -> Iterator[int]:
    """A static server on loopback for the calling page (http.server, its own thread)."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text(
        '<!doctype html><html lang="en"><meta charset="utf-8"><title>other origin</title></html>\n'
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def allowed(page_port: int) -> str:
    return f"http://localhost:{page_port}"


@pytest.fixture
def refused(page_port: int) -> str:
    return f"http://127.0.0.1:{page_port}"


@pytest.fixture
def cors_example(files_dir: Path, allowed: str) -> Iterator[ExampleServer]:
    """The example with ``--cors-origin`` for origin A only."""
    server = start_example(files_dir, extra=["--cors-origin", allowed])
    try:
        yield server
    finally:
        server.stop()


def fetch_from(page: Page, origin: str, api: str) -> dict[str, Any]:
    page.goto(f"{origin}/index.html")
    assert page.evaluate("location.origin") == origin
    result: dict[str, Any] = page.evaluate(FETCHES, api)
    return result


def assert_refused(page: Page, origin: str, api: str) -> None:
    """Every fetch fails with a TypeError, and Chromium says CORS was the reason."""
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    result = fetch_from(page, origin, api)
    for name in ("dog", "file", "connect"):
        assert result[name]["error"] == "TypeError", f"{name}: {result[name]}"
    blocked = [text for text in console if "blocked by CORS policy" in text]
    assert any("/api/dogs/3" in text for text in blocked), console
    assert any(GET_DOG in text and "preflight" in text for text in blocked), console


def test_allowed_origin_reads_responses_and_exposed_headers(
    cors_example: ExampleServer, page: Page, allowed: str
) -> None:
    result = fetch_from(page, allowed, cors_example.url)
    assert result["dog"] == {"ok": True, "status": 200, "body": {"name": "Dog 3", "age": 3}}
    file = result["file"]
    assert file["ok"]
    assert file["body"] == HELLO
    assert file["size"] == str(len(HELLO.encode()))  # exposed: readable from the script
    assert file["disposition"] is not None
    assert "hello.txt" in file["disposition"]
    # The JSON Connect call needed a preflight, and it went through.
    assert result["connect"] == {"ok": True, "status": 200, "body": {"name": "Dog 3", "age": 3}}


def test_other_origin_is_refused(cors_example: ExampleServer, page: Page, refused: str) -> None:
    assert_refused(page, refused, cors_example.url)


def test_no_cors_origin_refuses_every_other_origin(
    example: ExampleServer, page: Page, allowed: str
) -> None:
    """Without ``--cors-origin`` (the default) no other origin may read anything."""
    assert_refused(page, allowed, example.url)


def preflight(api: str, origin: str, method: str, path: str) -> httpx.Response:
    return httpx.options(
        f"{api}{path}",
        headers={
            "origin": origin,
            "access-control-request-method": method,
            "access-control-request-headers": "content-type,connect-protocol-version",
        },
        timeout=10,
    )


@pytest.mark.parametrize(("method", "path"), [("POST", GET_DOG), ("GET", "/api/dogs/3")])
def test_preflight_answers(
    cors_example: ExampleServer, allowed: str, refused: str, method: str, path: str
) -> None:
    ok = preflight(cors_example.url, allowed, method, path)
    assert ok.status_code == 200, ok.text
    assert ok.headers.get("access-control-allow-origin") == allowed
    assert method in ok.headers.get("access-control-allow-methods", "")
    allow_headers = ok.headers.get("access-control-allow-headers", "").lower()
    assert "content-type" in allow_headers
    assert "connect-protocol-version" in allow_headers

    denied = preflight(cors_example.url, refused, method, path)
    assert denied.status_code >= 400
    assert "access-control-allow-origin" not in denied.headers

    # A simple (non-preflighted) request from B gets its answer without the header, so the
    # browser keeps it from the page.
    plain = httpx.get(f"{cors_example.url}/api/dogs/3", headers={"origin": refused}, timeout=10)
    assert plain.status_code == 200
    assert "access-control-allow-origin" not in plain.headers
