"""Bearer auth on a plain route, called with ``fetch`` from headless Chromium: the example's
raw upload route (``POST /api/upload_as_bytestream``) behind ``upload_auth``, through
``python -m rpckit serve``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser

from tests.browser.conftest import ExampleServer, chromium, start_example

pytestmark = pytest.mark.browser

__all__ = ["chromium"]  # the module-scoped Chromium fixture, shared with tests/browser

UPLOAD_JS = """async (token) => {
  const headers = {"content-type": "application/octet-stream"};
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const response = await fetch("/api/upload_as_bytestream", {
    method: "POST", headers, body: new Uint8Array([104, 105]),
  });
  return {
    status: response.status,
    challenge: response.headers.get("www-authenticate"),
    body: await response.json(),
  };
}"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ExampleServer]:
    served = start_example(tmp_path, extra=["--interceptor", "examples.streams.server:upload_auth"])
    try:
        yield served
    finally:
        served.stop()


def test_fetch_from_chromium_meets_upload_auth(chromium: Browser, server: ExampleServer) -> None:
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"{server.url}/index.html")

        def upload(token: str | None) -> dict[str, Any]:
            result: dict[str, Any] = page.evaluate(UPLOAD_JS, token)
            return result

        missing, wrong, guest, good = (
            upload(t) for t in (None, "not-a-token", "guest-token", "demo-token")
        )
    finally:
        context.close()
    assert missing == {
        "status": 401,
        "challenge": "Bearer",
        "body": {
            "code": "unauthenticated",
            "message": "missing credentials: send authorization: Bearer <token>",
        },
    }
    assert wrong["status"] == 401
    assert wrong["body"] == {"code": "unauthenticated", "message": "invalid credentials"}
    assert guest["status"] == 403
    assert guest["challenge"] is None
    assert guest["body"] == {"code": "permission_denied", "message": "guests may not upload"}
    assert good["status"] == 200
    assert good["body"]["size"] == "2"  # uint64 in the protobuf JSON mapping
    line = server.wait_for_log(r"rpckit\.access: method=\S+/UploadAsByteStream ", 10)
    assert " transport=http dialect=plain code=UNAUTHENTICATED " in line
