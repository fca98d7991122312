"""``BearerAuth(cookie=..., query=...)`` through ``rpckit serve``: the token is taken from the
header, the cookie or the query parameter (only when named), the query parameter is not
bound to the request message, and the access log never prints it; in headless Chromium an
``EventSource`` (which cannot send a header) reads the guarded SSE stream with the cookie or
the query parameter, and is refused without."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser

from examples.streams.server import DOG_COUNT
from tests.browser.conftest import ExampleServer, chromium, start_example
from tests.interceptors.browser_credentials import COOKIE, QUERY, TOKEN
from tests.serving.process import Served

pytestmark = pytest.mark.process

__all__ = ["chromium"]  # the module-scoped Chromium fixture, shared with tests/browser

SSE = {"accept": "text/event-stream"}
TARGET = "tests.interceptors.browser_credentials"


def _serve(interceptor: str) -> Served:
    return Served(
        "examples.streams.server:create_service", "--grpc", "127.0.0.1:0",
        "--http", "127.0.0.1:0", "--access-log", "--interceptor", f"{TARGET}:{interceptor}",
    )  # fmt: skip


def _events(body: str) -> list[str]:
    return [line.removeprefix("event: ") for line in body.splitlines() if line.startswith("event:")]


def test_cookie_and_query_credentials_over_http_and_opt_in() -> None:
    with _serve("header_cookie_query") as served:
        url = f"http://127.0.0.1:{served.ports(('gRPC', 'HTTP'))['HTTP']}/api/json_stream"
        with httpx.Client(timeout=10) as client:
            none = client.get(url, params={"intervalMs": 0}, headers=SSE)
            query = client.get(url, params={"intervalMs": 0, QUERY: TOKEN}, headers=SSE)
            cookie = client.get(
                url, params={"intervalMs": 0}, headers={**SSE, "cookie": f"a=b; {COOKIE}={TOKEN}"}
            )
            quoted = client.get(
                url, params={"intervalMs": 0}, headers={**SSE, "cookie": f'{COOKIE}="{TOKEN}"'}
            )
            header = client.get(
                url, params={"intervalMs": 0}, headers={**SSE, "authorization": f"Bearer {TOKEN}"}
            )
            wrong_query = client.get(url, params={"intervalMs": 0, QUERY: "nope"}, headers=SSE)
            wrong_cookie = client.get(url, headers={**SSE, "cookie": f"{COOKIE}=nope"})
            other = client.get(url, params={"intervalMs": 0, "bogus": "1", QUERY: TOKEN})
        served.expect(r"rpckit\.access: .*code=INVALID_ARGUMENT")
        lines = list(served.lines)
    assert none.status_code == 401
    assert none.json()["message"] == (
        "missing credentials: send authorization: Bearer <token> "
        f"(or the cookie {COOKIE}) (or the query parameter {QUERY})"
    )
    for answer in (query, cookie, quoted, header):
        assert answer.status_code == 200, answer.text
        assert answer.text.count("data: {") == DOG_COUNT  # the token was not bound to a field
        assert _events(answer.text)[-1] == "end"
    assert wrong_query.status_code == 401
    assert wrong_cookie.status_code == 401
    assert wrong_query.json()["message"] == "invalid credentials"
    # Other unknown query parameters are still refused: only the token's is taken out.
    assert other.status_code == 400
    assert "bogus" in other.json()["message"]
    assert TOKEN not in "\n".join(lines)  # the access log (and anything else) never prints it
    assert sum("method=/examples.streams.v1.StreamsService/JsonStream" in s for s in lines) >= 8

    # Both are opt-in: the default BearerAuth reads the header alone.
    with _serve("header_only") as served:
        url = f"http://127.0.0.1:{served.ports(('gRPC', 'HTTP'))['HTTP']}/api/json_stream"
        with httpx.Client(timeout=10) as client:
            cookie = client.get(url, headers={**SSE, "cookie": f"{COOKIE}={TOKEN}"})
            query = client.get(url, params={QUERY: TOKEN}, headers=SSE)
    assert cookie.status_code == 401
    assert cookie.json()["message"] == "missing credentials: send authorization: Bearer <token>"
    assert query.status_code == 401  # refused before the unknown parameter is even bound


EVENT_SOURCE = """async (url) => await new Promise((resolve) => {
  const names = [];
  const source = new EventSource(url);
  const done = (how) => { source.close(); clearTimeout(timer); resolve({how, names}); };
  const timer = setTimeout(() => done("timeout"), 15000);
  source.onmessage = (event) => names.push(JSON.parse(event.data).name);
  source.addEventListener("end", () => done("end"));
  source.onerror = () => done(source.readyState === EventSource.CLOSED ? "refused" : "error");
})"""


@pytest.fixture
def guarded(tmp_path: Any) -> Iterator[ExampleServer]:
    served = start_example(
        tmp_path, extra=["--interceptor", f"{TARGET}:header_cookie_query", "--access-log"]
    )
    try:
        yield served
    finally:
        served.stop()


def test_event_source_with_cookie_or_query(chromium: Browser, guarded: ExampleServer) -> None:
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"{guarded.url}/index.html")
        url = "/api/json_stream?intervalMs=0"
        refused = page.evaluate(EVENT_SOURCE, url)
        by_query = page.evaluate(EVENT_SOURCE, f"{url}&{QUERY}={TOKEN}")
        context.add_cookies(
            [{"name": COOKIE, "value": TOKEN, "url": guarded.url, "sameSite": "Strict"}]
        )
        by_cookie = page.evaluate(EVENT_SOURCE, url)
    finally:
        context.close()
    dogs = [f"Dog {n}" for n in range(DOG_COUNT)]
    assert refused == {"how": "refused", "names": []}
    assert by_query == {"how": "end", "names": dogs}
    assert by_cookie == {"how": "end", "names": dogs}
