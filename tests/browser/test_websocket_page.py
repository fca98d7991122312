"""gRPC-Web and WebSocket in a real Chromium against ``rpckit serve``: connect-web's gRPC-Web
transport (connect.html?protocol=grpc-web), and the example page's two WebSocket cards (bidi
Chat through rpckit-ws.js, and an upload with live server-side progress)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import FilePayload, Page, Request, expect

from tests.browser.conftest import ExampleServer, start_example
from tests.browser.test_connect_web import SERVICE, UI_TIMEOUT_MS, connect_bundle

# The page's bundle (dist/app.js: src/app.ts on the generated TypeScript client) is built by
# build.sh, with connect.html's: built when missing or stale.
pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("connect_bundle")]

__all__ = ["connect_bundle"]  # the fixture, re-used

UPLOAD_AUTH = "examples.streams.server:upload_auth"


@pytest.fixture
def grpc_web_page(connect_bundle: Path, example: ExampleServer, page: Page) -> Iterator[Page]:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{example.url}/connect.html?protocol=grpc-web")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=UI_TIMEOUT_MS)
    yield page
    assert errors == [], f"uncaught errors in connect.html: {errors}"


def grpc_web_call(method: str, codec: str) -> object:
    def matches(request: Request) -> bool:
        return request.url.endswith(f"{SERVICE}/{method}") and (
            request.headers.get("content-type", "").split(";")[0] == f"application/grpc-web+{codec}"
        )

    return matches


@pytest.mark.parametrize(("mode", "codec"), [("binary", "proto"), ("json", "json")])
def test_connect_web_grpc_web_transport(
    grpc_web_page: Page, example: ExampleServer, mode: str, codec: str
) -> None:
    page = grpc_web_page
    page.select_option("#format", mode)
    result = page.locator("#dog-result")
    with page.expect_request(grpc_web_call("GetDog", codec), timeout=UI_TIMEOUT_MS):  # type: ignore[arg-type]
        page.fill("#dog-index", "3")
        page.click("#dog-get")
    expect(result).to_have_text("Dog 3, age 3", timeout=UI_TIMEOUT_MS)
    page.fill("#dog-index", "42")
    page.click("#dog-get")
    expect(result).to_have_text("[not_found] no dog 42; there are 10", timeout=UI_TIMEOUT_MS)

    page.fill("#text-interval", "100")
    with page.expect_request(grpc_web_call("TextStream", codec), timeout=UI_TIMEOUT_MS):  # type: ignore[arg-type]
        page.click("#text-start")
    expect(page.locator("#text-items li").nth(2)).to_have_text(
        "Hello, world! 2", timeout=UI_TIMEOUT_MS
    )
    page.click("#text-stop")
    expect(page.locator("#text-status")).to_have_text("stopped", timeout=UI_TIMEOUT_MS)
    example.wait_for_log(r"text stream: client gone at \d+", timeout=10)

    page.fill("#json-interval", "20")
    page.click("#json-start")
    expect(page.locator("#json-status")).to_have_text("done: 10 dogs", timeout=UI_TIMEOUT_MS)


def open_page(page: Page, url: str) -> None:
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(url)
    expect(page.locator("body")).to_have_attribute("data-ws-ready", "true")


def test_chat_card_echoes_upper_case(page: Page, example: ExampleServer) -> None:
    open_page(page, example.url)
    page.click("#chat-open")
    expect(page.locator("#chat")).to_have_attribute("data-state", "open")
    expect(page.locator("#chat-send")).to_be_enabled()
    for text in ("hello", "grüße"):
        page.fill("#chat-input", text)
        page.click("#chat-send")
    # Each echo arrives while the call is still open (sent as typed, not at the end).
    expect(page.locator("#chat-log li.server")).to_have_text(["HELLO", "GRÜSSE"])
    expect(page.locator("#chat")).to_have_attribute("data-state", "open")
    page.click("#chat-close")
    expect(page.locator("#chat")).to_have_attribute("data-state", "closed")
    example.wait_for_log(r"Chat transport=websocket dialect=websocket code=OK", timeout=10)


def test_progress_card_reports_while_uploading(page: Page, files_dir: Path) -> None:
    """With upload_auth on, as examples/streams/run.sh serves it: the card sends the token."""
    example = start_example(files_dir, extra=["--interceptor", UPLOAD_AUTH])
    try:
        _upload_with_progress(page, example)
    finally:
        example.stop()


def _upload_with_progress(page: Page, example: ExampleServer) -> None:
    open_page(page, example.url)
    data = bytes(range(256)) * (4 * 1024 + 3)  # about 1 MiB: 17 chunks of 64 KiB
    page.set_input_files(
        "#wsupload-file",
        FilePayload(name="p.bin", mimeType="application/octet-stream", buffer=data),
    )
    page.click("#wsupload-start")
    section = page.locator("#wsupload")
    expect(section).to_have_attribute("data-state", "done")
    chunks = -(-len(data) // (64 * 1024))
    expect(section).to_have_attribute("data-reports", str(chunks + 1))
    expect(section).to_have_attribute("data-received", str(len(data)))
    expect(page.locator("#wsupload-sha256")).to_have_text(hashlib.sha256(data).hexdigest())
    expect(page.locator("#wsupload-status")).to_have_text(
        f"server has {len(data)} of {len(data)} bytes"
    )
