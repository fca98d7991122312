"""HTML form uploads at scale: a 1 GiB file sent by a real ``<form method=post
enctype=multipart/form-data>`` in headless Chromium reaches UploadFileAsFileStream as a
stream (MultipartReader, one chunk at a time) and is stored whole, with ``rpckit serve``'s
RSS flat; an upload cut short (the page navigates away, or a raw socket stops mid-body)
stores nothing, not even its ``.part`` file.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.browser.conftest import ExampleServer
from tests.support import process_tree, rss

pytestmark = pytest.mark.process

GIB = 1024**3
CHUNK = 4 * 1024 * 1024
#: Peak RSS growth allowed while 1 GiB goes through (the upload holds a few chunks at most).
MAX_GROWTH = 64 * 1024 * 1024

FORM = """<!doctype html><title>upload</title>
<form method="post" enctype="multipart/form-data" action="/api/upload_as_file_stream">
  <input type="text" name="note" value="a field before the file">
  <input type="file" name="file">
  <button type="submit">Upload</button>
</form>"""


def _big_file(path: Path, size: int) -> str:
    """``size`` random-ish bytes at ``path`` (one random block, each copy made unique by its
    index, so no range repeats); their sha256."""
    digest = hashlib.sha256()
    block = bytearray(os.urandom(CHUNK))
    with path.open("wb") as out:
        for index in range(size // CHUNK):
            block[:8] = index.to_bytes(8, "big")
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _RssPeak:
    """Samples the RSS of the server's process tree every 50 ms until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.base = self.sample()
        self.peak = self.base
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def sample(self) -> int:
        return sum(rss(p) for p in process_tree(self.pid))

    def _run(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, self.sample())

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return self.peak - self.base


def _stored(files: Path) -> set[str]:
    return {p.name for p in files.iterdir()}


def _form_page(page: Page, example: ExampleServer) -> None:
    page.goto(example.url + "/")  # the server's origin; then the plain form
    page.set_content(FORM)


def test_one_gib_form_upload_is_stored_whole_with_flat_rss(
    page: Page, example: ExampleServer, tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    expected = _big_file(source, GIB)
    before = _stored(example.files)
    _form_page(page, example)
    page.set_input_files("input[type=file]", str(source))
    meter = _RssPeak(example.process.pid)
    started = time.monotonic()
    with page.expect_navigation(timeout=300_000):
        page.click("button[type=submit]")
    elapsed = time.monotonic() - started
    growth = meter.stop()
    summary = json.loads(page.inner_text("body"))
    print(
        f"\n1 GiB form upload: {elapsed:.1f} s, {GIB / elapsed / 1e6:.0f} MB/s, "
        f"server RSS peak growth {growth / 2**20:.1f} MiB (base {meter.base / 2**20:.0f} MiB)"
    )
    assert summary["filename"] == "big.bin"
    assert int(summary["size"]) == GIB
    assert summary["sha256"] == expected
    assert _stored(example.files) - before == {"big.bin"}
    stored = example.files / "big.bin"
    assert stored.stat().st_size == GIB
    assert _sha256(stored) == expected
    assert growth < MAX_GROWTH, f"RSS grew {growth / 2**20:.1f} MiB"


def test_form_upload_cut_short_stores_nothing(
    page: Page, example: ExampleServer, tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    _big_file(source, GIB // 4)
    before = _stored(example.files)
    _form_page(page, example)
    page.set_input_files("input[type=file]", str(source))
    page.click("button[type=submit]", no_wait_after=True)
    # Navigate away once the upload is under way (its .part file exists).
    deadline = time.monotonic() + 30
    while not any(n.endswith(".part") for n in _stored(example.files)):
        assert time.monotonic() < deadline, "the upload never started"
        time.sleep(0.01)
    page.goto("about:blank")
    _assert_nothing_stored(example.files, before)

    # A raw socket: the head of a form that announces 64 MiB, 1 MiB of its file, then gone.
    boundary = "----rpckitcut"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.bin"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()
    host, port = example.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /api/upload_as_file_stream HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=" + boundary.encode() + b"\r\n"
            b"Content-Length: " + str(len(head) + 64 * 2**20).encode() + b"\r\n\r\n" + head
        )
        sock.sendall(os.urandom(2**20))
        time.sleep(0.3)
    _assert_nothing_stored(example.files, before)

    # The whole Content-Length arrives, but the form lacks its closing boundary: 400.
    body = head + os.urandom(2**20) + f"\r\n--{boundary}\r\n".encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /api/upload_as_file_stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: multipart/form-data; boundary=" + boundary.encode() + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"closing boundary" in answer
    _assert_nothing_stored(example.files, before)


def _assert_nothing_stored(files: Path, before: set[str]) -> None:
    deadline = time.monotonic() + 10
    while _stored(files) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _stored(files) == before  # no file, no .part left behind
