"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, and the streams
example served by ``rpckit serve`` (a real process, real sockets) with its web page."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support import ROOT, free_port, require_tool

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WEB_DIR = ROOT / "examples" / "streams" / "web"


@dataclass
class ExampleServer:
    """``rpckit serve`` of the streams example, with its log lines readable as they come."""

    process: subprocess.Popen[str]
    url: str
    grpc: str
    files: Path
    lines: queue.Queue[str] = field(default_factory=queue.Queue)

    def wait_for_log(self, pattern: str, timeout: float) -> str:
        """The first log line matching ``pattern``, waiting at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no log line matching {pattern!r} within {timeout}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_example(
    files: Path, *, http_port: int | None = None, extra: list[str] | None = None
) -> ExampleServer:
    """Start the example on loopback (a fixed HTTP port lets a test restart it in place)."""
    port = http_port if http_port is not None else free_port()
    command = [
        sys.executable, "-m", "rpckit", "serve", "examples.streams.server:create_service",
        "--grpc", "127.0.0.1:0", "--http", f"127.0.0.1:{port}", "--static", str(WEB_DIR),
        "--grace", "1", *(extra or []), "--files", str(files),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    ready: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
            if "listening on" in line:
                ready.put(line)

    threading.Thread(target=pump, daemon=True).start()
    found: dict[str, str] = {}
    deadline = time.monotonic() + 30
    while len(found) < 2 and time.monotonic() < deadline:
        try:
            line = ready.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        match = re.search(r"(gRPC|HTTP) listening on (\S+)", line)
        if match:
            found[match.group(1)] = match.group(2)
    if len(found) < 2:
        process.kill()
        process.wait()
        raise AssertionError("rpckit serve did not start within 30 s")
    return ExampleServer(process, f"http://{found['HTTP']}", found["gRPC"], files, lines)


@pytest.fixture
def example(files_dir: Path) -> Iterator[ExampleServer]:
    """The example with its web page, on free loopback ports."""
    server = start_example(files_dir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's headless Chromium under Playwright (skipped outside CI when missing).

    Module-scoped: sync Playwright runs its own event loop while it is open, which would
    stop the asyncio tests in later modules from starting theirs.
    """
    require_tool(Path(CHROMIUM).exists(), "needs Debian's chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A fresh browser page (its own context: no shared cache or storage between tests)."""
    context = chromium.new_context(accept_downloads=True)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
