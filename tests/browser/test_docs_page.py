"""``rpckit serve --docs`` in headless Chromium: Swagger UI (from local files) shows every
plain route of the example, and the page lists every Connect endpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from examples.streams.v1.streams_rpckit import StreamsService
from tests.browser.conftest import start_example
from tests.support import ROOT

pytestmark = pytest.mark.browser

SCREENSHOT = ROOT / "examples" / "site" / "docs" / "assets" / "docs-page.png"


def test_docs_page_shows_every_route(page: Page, files_dir: Path, tmp_path: Path) -> None:
    server = start_example(files_dir, extra=["--docs"])
    try:
        outside: list[str] = []
        page.on(
            "request",
            lambda r: outside.append(r.url) if not r.url.startswith(server.url) else None,
        )
        page.set_default_timeout(15_000)
        page.goto(f"{server.url}/docs")
        methods = StreamsService.spec().methods
        for method in methods:
            for rule in method.http:
                block = page.locator(f'.opblock-summary-path[data-path="{rule.path}"]')
                expect(block.first).to_be_visible()
        table = page.locator("#connect")
        for method in methods:
            expect(table).to_contain_text(f"POST {method.path}")
        assert outside == []  # the viewer came from the bridge, not from a CDN
        shot = tmp_path / "docs-page.png"
        page.set_viewport_size({"width": 1280, "height": 1400})
        page.screenshot(path=str(shot), full_page=False)
        assert shot.stat().st_size > 10_000
        if os.environ.get("RPCKIT_UPDATE_SCREENSHOTS") == "1":
            SCREENSHOT.write_bytes(shot.read_bytes())
    finally:
        server.stop()
