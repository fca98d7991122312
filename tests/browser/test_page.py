"""The streams example's web page (examples/streams/web/index.html) in a real Chromium,
against a real ``rpckit serve`` process: streams render as they arrive, stopping reaches the
server, SSE survives a server restart, uploads and resumable downloads keep their bytes."""

from __future__ import annotations

import contextlib
import hashlib
import queue
import re
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import FilePayload, Page, expect

from tests.browser.conftest import ExampleServer, start_example
from tests.browser.test_connect_web import connect_bundle

# The page's bundle (dist/app.js: src/app.ts on the generated TypeScript client) is built by
# build.sh, with connect.html's: built when missing or stale.
pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("connect_bundle")]

__all__ = ["connect_bundle"]  # the fixture, re-used

TIMEOUT_MS = 15_000
MIB = 1024 * 1024


def open_page(page: Page, url: str) -> None:
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page.goto(url)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def logged_so_far(example: ExampleServer) -> list[str]:
    """The server's log lines that have arrived until now (without waiting for more)."""
    lines = []
    while True:
        try:
            lines.append(example.lines.get_nowait())
        except queue.Empty:
            return lines


def wait_for_count(page: Page, selector: str, at_least: int) -> None:
    page.wait_for_function(
        "([selector, n]) => document.querySelectorAll(selector).length >= n",
        arg=[selector, at_least],
    )


def test_text_items_appear_one_by_one(page: Page, example: ExampleServer) -> None:
    open_page(page, example.url)
    # Note when each item is added, to see them arrive apart rather than all at the end.
    page.evaluate(
        """() => {
            window.arrivals = [];
            new MutationObserver(() => window.arrivals.push(performance.now()))
                .observe(document.getElementById("text-items"), { childList: true });
        }"""
    )
    page.fill("#text-interval", "300")
    page.click("#text-start")
    items = page.locator("#text-items li")

    wait_for_count(page, "#text-items li", 1)
    first = items.first.inner_text()
    expect(page.locator("#text")).to_have_attribute("data-state", "running")
    wait_for_count(page, "#text-items li", 3)

    assert first == "Hello, world! 0"
    assert items.all_inner_texts()[:3] == [f"Hello, world! {i}" for i in range(3)]
    arrivals: list[float] = page.evaluate("window.arrivals")
    assert arrivals[2] - arrivals[0] > 400  # the server waits 2 x 300 ms between them
    # The stream is still open: the page says so and the server has not seen the client leave.
    expect(page.locator("#text")).to_have_attribute("data-state", "running")
    expect(page.locator("#text-stop")).to_be_enabled()
    assert not [line for line in logged_so_far(example) if "client gone" in line]


def test_text_stop_reaches_the_server(page: Page, example: ExampleServer) -> None:
    open_page(page, example.url)
    page.fill("#text-interval", "300")
    page.click("#text-start")
    wait_for_count(page, "#text-items li", 2)
    logged_so_far(example)  # drop what was logged before the click

    page.click("#text-stop")
    # The stream is endless: the server logs this line only once the stop has reached it.
    example.wait_for_log(r"text stream: client gone", timeout=10)
    expect(page.locator("#text")).to_have_attribute("data-state", "stopped")


def test_dogs_render_in_order(page: Page, example: ExampleServer) -> None:
    open_page(page, example.url)
    page.fill("#dogs-interval", "50")
    page.click("#dogs-start")
    expect(page.locator("#dogs")).to_have_attribute("data-state", "done")
    expect(page.locator("#dogs-list .dog-name")).to_have_text([f"Dog {i}" for i in range(10)])
    expect(page.locator("#dogs-error")).to_be_hidden()


def test_dogs_show_an_in_band_error(page: Page, example: ExampleServer) -> None:
    # A stream that fails after two dogs.
    body = (
        '{"name":"Dog 0"}\n{"name":"Dog 1","age":1}\n'
        '{"error":{"code":"unavailable","message":"the kennel closed"}}\n'
    )
    page.route(
        "**/api/json_stream*",
        lambda route: route.fulfill(
            status=200, headers={"Content-Type": "application/x-ndjson"}, body=body
        ),
    )
    open_page(page, example.url)
    page.click("#dogs-start")
    expect(page.locator("#dogs")).to_have_attribute("data-state", "error")
    expect(page.locator("#dogs-list .dog-name")).to_have_text(["Dog 0", "Dog 1"])
    expect(page.locator("#dogs-error")).to_have_text("unavailable: the kennel closed")


def test_ndjson_lines_split_across_chunks(page: Page, example: ExampleServer) -> None:
    open_page(page, example.url)
    parsed = page.evaluate(
        """async () => {
            const { ndjson } = await import("/dist/app.js");
            // Chunks cut mid-line and in the middle of a two-byte UTF-8 character.
            const lines = '{"name":"Dog 0"}\\n{"name":"Chiot é"}\\n{"a":1}';  // no last newline
            const text = new TextEncoder().encode(lines);
            const cuts = [5, 17, 25, 33, text.length];  // byte 32 starts the "é"
            const body = new ReadableStream({
                start(controller) {
                    cuts.reduce((from, to) => (controller.enqueue(text.slice(from, to)), to), 0);
                    controller.close();
                },
            });
            const items = [];
            for await (const item of ndjson(body)) items.push(item);
            return items;
        }"""
    )
    assert parsed == [{"name": "Dog 0"}, {"name": "Chiot é"}, {"a": 1}]


def test_sse_survives_a_server_restart(page: Page, example: ExampleServer, files_dir: Path) -> None:
    open_page(page, example.url)
    page.fill("#sse-interval", "200")
    page.click("#sse-start")
    expect(page.locator("#sse")).to_have_attribute("data-state", "open")
    wait_for_count(page, "#sse-events li", 3)

    port = int(example.url.rsplit(":", 1)[1])
    example.stop()
    before = page.locator("#sse-events li").count()
    restarted = start_example(files_dir, http_port=port)
    try:
        page.wait_for_function(
            """(n) => document.getElementById("sse").dataset.reconnects >= 1
                && document.querySelectorAll("#sse-events li").length >= n""",
            arg=before + 5,
        )
        expect(page.locator("#sse-reconnects")).to_be_visible()
    finally:
        restarted.stop()

    ids = [
        int(i) for i in page.locator("#sse-events li").evaluate_all("l => l.map(e => e.dataset.id)")
    ]
    texts = page.locator("#sse-events li").all_inner_texts()
    assert ids == list(range(len(ids))), ids  # strictly consecutive: no duplicate, no gap
    assert [t.split()[-1] for t in texts] == [str(i) for i in ids]
    assert page.locator("#sse-events li.gap").count() == 0


def pattern_bytes(size: int, block: int = 65_521) -> bytes:
    """The upload test's file: bytes (7i + 3) mod 256 in blocks of a prime length."""
    one = bytes((i * 7 + 3) & 255 for i in range(block))
    return (one * (size // block + 1))[:size]


DROP_PATTERN_FILE = """([size, block, name]) => {
    const one = new Uint8Array(block);
    for (let i = 0; i < block; i++) one[i] = (i * 7 + 3) & 255;
    const bytes = new Uint8Array(size);
    for (let at = 0; at < size; at += block) {
        bytes.set(one.subarray(0, Math.min(block, size - at)), at);
    }
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name, { type: "application/octet-stream" }));
    const zone = document.getElementById("drop");
    for (const type of ["dragenter", "dragover", "drop"]) {
        const init = { bubbles: true, cancelable: true, dataTransfer: transfer };
        zone.dispatchEvent(new DragEvent(type, init));
    }
}"""


def test_upload_of_a_dropped_file(page: Page, example: ExampleServer, files_dir: Path) -> None:
    size = 50 * MIB
    data = pattern_bytes(size)
    sha = hashlib.sha256(data).hexdigest()
    open_page(page, example.url)
    # Loopback moves 50 MiB in a blink, and Chromium sends at most one progress event per
    # 50 ms: DevTools' network emulation caps the upload at 50 MiB/s to make it last ~1 s.
    devtools = page.context.new_cdp_session(page)
    devtools.send("Network.enable")
    devtools.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 50 * MIB},
    )

    page.evaluate(DROP_PATTERN_FILE, [size, 65_521, "pattern.bin"])
    expect(page.locator("#upload")).to_have_attribute("data-state", "done", timeout=60_000)

    progress_events = int(page.locator("#upload").get_attribute("data-progress-events") or 0)
    assert progress_events >= 5
    expect(page.locator("#upload-progress")).to_have_js_property("value", 1)
    expect(page.locator("#upload-sha")).to_have_text(sha)
    expect(page.locator("#upload-filename")).to_have_text("pattern.bin")
    stored = files_dir / "pattern.bin"
    assert stored.stat().st_size == size
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == sha
    # The download list was refreshed with the new file.
    expect(page.locator("#files-list tr[data-name='pattern.bin']")).to_be_visible()


def test_upload_from_the_picker_with_a_non_ascii_name(
    page: Page, example: ExampleServer, files_dir: Path
) -> None:
    open_page(page, example.url)
    data = "Grüße, 世界!\n".encode() * 1000
    name = "été (1) 🐶.txt"
    payload: FilePayload = {"name": name, "mimeType": "text/plain", "buffer": data}
    page.set_input_files("#file-input", files=[payload])
    expect(page.locator("#upload")).to_have_attribute("data-state", "done")
    expect(page.locator("#upload-sha")).to_have_text(hashlib.sha256(data).hexdigest())
    expect(page.locator("#upload-filename")).to_have_text(name)
    assert (files_dir / name).read_bytes() == data


class CuttingProxy:
    """A TCP proxy in front of the example that breaks one response mid-body.

    The first response to ``GET <path>`` is forwarded up to ``cut`` body bytes; it then
    stalls until ``hang_up`` is set, and both sockets are closed: the browser sees the
    connection end before Content-Length (a network error, as when Wi-Fi drops). The stall
    lets the test wait until the page has read those bytes: Chromium may error a body stream
    before the page reads data that arrived just ahead of the failure. Everything else passes
    through untouched. Playwright's
    ``route.fulfill`` cannot do this: Chromium takes a truncated fulfilled body as a clean,
    short end of the response. Request heads are parsed for recording, so it carries GETs only.
    """

    def __init__(self, upstream: str, path: str, cut: int) -> None:
        host, port = upstream.removeprefix("http://").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.path = path
        self.cut = cut
        self.heads: list[str] = []  # the request heads of every GET <path>, in order
        self.hang_up = threading.Event()
        self._armed = True
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.hang_up.set()
        for sock in [self.listener, *self._sockets]:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            cut_next = threading.Event()  # set: the next response on this connection is cut
            threading.Thread(
                target=self._requests, args=(client, server, cut_next), daemon=True
            ).start()
            threading.Thread(
                target=self._responses, args=(server, client, cut_next), daemon=True
            ).start()

    def _requests(
        self, client: socket.socket, server: socket.socket, cut_next: threading.Event
    ) -> None:
        pending = b""
        while data := _recv(client):
            pending += data
            while b"\r\n\r\n" in pending:
                head, pending = pending.split(b"\r\n\r\n", 1)
                text = head.decode("latin-1")
                if text.startswith(f"GET {self.path} "):
                    with self._lock:
                        self.heads.append(text)
                        if self._armed:
                            self._armed = False
                            cut_next.set()
            try:
                server.sendall(data)
            except OSError:
                break
        _close(server)

    def _responses(
        self, server: socket.socket, client: socket.socket, cut_next: threading.Event
    ) -> None:
        seen = b""  # the cut response so far
        while data := _recv(server):
            if cut_next.is_set():
                seen += data
                body_at = seen.find(b"\r\n\r\n")
                if body_at >= 0 and len(seen) >= body_at + 4 + self.cut:
                    keep = body_at + 4 + self.cut - (len(seen) - len(data))
                    client.sendall(data[:keep])
                    self.hang_up.wait(timeout=30)
                    break  # and hang up on both sides
            try:
                client.sendall(data)
            except OSError:
                break
        _close(client)
        _close(server)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture
def cutting_proxy(example: ExampleServer) -> Iterator[CuttingProxy]:
    proxy = CuttingProxy(example.url, "/api/files/big.bin", cut=1_500_000)
    try:
        yield proxy
    finally:
        proxy.close()


def test_download_resumes_after_a_broken_connection(
    page: Page, example: ExampleServer, cutting_proxy: CuttingProxy, files_dir: Path
) -> None:
    data = pattern_bytes(4 * 1024 * 1024, block=4099)
    (files_dir / "big.bin").write_bytes(data)
    open_page(page, cutting_proxy.url)  # the whole page goes through the proxy

    row = page.locator("#files-list tr[data-name='big.bin']")
    row.get_by_role("button", name="Resumable").click()
    expect(row).to_have_attribute("data-received", str(cutting_proxy.cut))
    cutting_proxy.hang_up.set()
    expect(row).to_have_attribute("data-state", "done")
    expect(row.locator("code.sha")).to_have_text(hashlib.sha256(data).hexdigest())
    expect(row).to_have_attribute("data-attempts", "2")
    # The first read failed as a network error, not as a short but clean response.
    assert (row.get_attribute("data-last-error") or "").startswith("network error")

    first, second = (headers_of(head) for head in cutting_proxy.heads)
    assert "range" not in first
    resumed = re.fullmatch(r"bytes=(\d+)-", second.get("range", ""))
    assert resumed, second
    assert int(resumed.group(1)) == cutting_proxy.cut
    with urllib.request.urlopen(example.url + "/api/files/big.bin") as response:
        etag = response.headers["ETag"]
    assert second.get("if-range") == etag
    # The reassembled file is offered as a download.
    expect(row.get_by_role("link", name="Save big.bin")).to_have_attribute("download", "big.bin")


def headers_of(head: str) -> dict[str, str]:
    """The headers of an HTTP request head, by lower-cased name."""
    lines = head.split("\r\n")[1:]
    return {
        name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in lines)
    }
