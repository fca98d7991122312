"""connect.html in Chromium: the streams example through connect-web and the client
protoc-gen-es generates, bundled by esbuild (``examples/streams/web/build.sh``).

The page makes every call with the generated typed client, in binary or JSON as picked on the
page; here each call is checked on screen and on the wire (the Connect URL and content type).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, Request, expect

from tests.browser.conftest import WEB_DIR, ExampleServer
from tests.support import ROOT, require_tool

pytestmark = pytest.mark.browser

BUNDLE = WEB_DIR / "dist" / "connect.js"
BUILD = WEB_DIR / "build.sh"
#: What the bundle is built from: when any of them is newer, the bundle is rebuilt.
BUNDLE_SOURCES = [
    BUILD,
    WEB_DIR / "package.json",
    WEB_DIR / "package-lock.json",
    ROOT / "protos" / "examples" / "streams" / "v1" / "streams.proto",
    ROOT / "protos" / "rpckit" / "v1" / "stream.proto",
    *(WEB_DIR / "src").rglob("*.ts"),
]
BUILD_TIMEOUT = 300.0
SERVICE = "/examples.streams.v1.StreamsService"
#: The Connect content types of each wire format: unary, then streaming.
CONTENT_TYPES = {
    "binary": ("application/proto", "application/connect+proto"),
    "json": ("application/json", "application/connect+json"),
}
UI_TIMEOUT_MS = 15_000


def bundle_is_stale() -> bool:
    if not BUNDLE.is_file():
        return True
    built = BUNDLE.stat().st_mtime
    return any(source.stat().st_mtime > built for source in BUNDLE_SOURCES)


@pytest.fixture(scope="session")
def connect_bundle() -> Path:
    """dist/connect.js, built with build.sh when it is missing or older than its sources."""
    if bundle_is_stale():
        require_tool(
            shutil.which("node") is not None and shutil.which("npm") is not None,
            "connect.html's bundle is missing or stale and building it needs node and npm",
        )
        env = {**os.environ, "PY": sys.executable}
        try:
            done = subprocess.run(
                ["bash", str(BUILD)], env=env, capture_output=True, text=True,
                timeout=BUILD_TIMEOUT,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            pytest.fail(f"build.sh did not finish in {BUILD_TIMEOUT} s")
        assert done.returncode == 0, f"build.sh failed:\n{done.stdout}\n{done.stderr}"
    assert BUNDLE.is_file(), f"build.sh did not write {BUNDLE}"
    assert not bundle_is_stale(), f"{BUNDLE} is still older than its sources"
    return BUNDLE


@pytest.fixture
def connect_page(
    connect_bundle: Path, example: ExampleServer, page: Page, mode: str
) -> Iterator[Page]:
    """connect.html from the example, in ``mode``; fails the test on any uncaught page error."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{example.url}/connect.html")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=UI_TIMEOUT_MS)
    page.select_option("#format", mode)
    yield page
    assert errors == [], f"uncaught errors in connect.html: {errors}"


def connect_call(method: str, mode: str, *, streaming: bool) -> Callable[[Request], bool]:
    """A predicate for the page's Connect request to ``method`` in ``mode``."""
    content_type = CONTENT_TYPES[mode][1 if streaming else 0]

    def matches(request: Request) -> bool:
        return (
            request.method == "POST"
            and request.url.endswith(f"{SERVICE}/{method}")
            and request.headers.get("content-type", "").split(";")[0] == content_type
        )

    return matches


MODES = pytest.mark.parametrize("mode", ["binary", "json"])


@MODES
def test_get_dog_and_not_found(connect_page: Page, mode: str) -> None:
    page = connect_page
    result = page.locator("#dog-result")
    with page.expect_request(connect_call("GetDog", mode, streaming=False), timeout=UI_TIMEOUT_MS):
        page.fill("#dog-index", "3")
        page.click("#dog-get")
    expect(result).to_have_text("Dog 3, age 3", timeout=UI_TIMEOUT_MS)
    expect(result).to_have_attribute("data-state", "ok")

    page.fill("#dog-index", "42")
    page.click("#dog-get")
    expect(result).to_have_text("[not_found] no dog 42; there are 10", timeout=UI_TIMEOUT_MS)
    expect(result).to_have_attribute("data-state", "error")


@MODES
def test_text_stream_start_and_stop(connect_page: Page, example: ExampleServer, mode: str) -> None:
    page = connect_page
    items = page.locator("#text-items li")
    page.fill("#text-interval", "100")
    with page.expect_request(
        connect_call("TextStream", mode, streaming=True), timeout=UI_TIMEOUT_MS
    ):
        page.click("#text-start")
    expect(page.locator("#text-status")).to_have_text("streaming", timeout=UI_TIMEOUT_MS)
    expect(items.nth(2)).to_have_text("Hello, world! 2", timeout=UI_TIMEOUT_MS)
    expect(page.locator("#text-stop")).to_be_enabled()

    page.click("#text-stop")
    expect(page.locator("#text-status")).to_have_text("stopped", timeout=UI_TIMEOUT_MS)
    expect(page.locator("#text-start")).to_be_enabled()
    expect(page.locator("#text-stop")).to_be_disabled()
    # The abort reaches the server: its producer sees the client go.
    example.wait_for_log(r"text stream: client gone at \d+", timeout=10)
    texts = items.all_text_contents()
    assert len(texts) >= 3
    assert texts == [f"Hello, world! {n}" for n in range(len(texts))]


@MODES
def test_json_stream_all_dogs(connect_page: Page, mode: str) -> None:
    page = connect_page
    page.fill("#json-interval", "20")
    with page.expect_request(
        connect_call("JsonStream", mode, streaming=True), timeout=UI_TIMEOUT_MS
    ):
        page.click("#json-start")
    expect(page.locator("#json-status")).to_have_text("done: 10 dogs", timeout=UI_TIMEOUT_MS)
    expect(page.locator("#json-items li")).to_have_text([f"Dog {n}, age {n}" for n in range(10)])
