"""The generated TypeScript client in Debian's Chromium: compiled by tsc to ES modules into
a static directory that ``rpckit serve --static`` serves (no bundler: relative imports with
``.js``), driven from a tiny page against the streams example with upload auth on."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.codegen.test_typescript import _tsc_available, compile_client, start_server, stop_server

pytestmark = pytest.mark.browser

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>rpckit TypeScript client</title>
<script type="module">
import { StreamsServiceClient } from "./examples/streams/v1/streams.js";
import { RpcError } from "./rpckit-client.js";
const client = new StreamsServiceClient();
const uploads = new StreamsServiceClient({
  interceptors: [async (req, next) => {
    req.init.headers.set("authorization", "Bearer demo-token");
    return next(req);
  }],
});
window.run = async () => {
  const out = {};
  out.dog = await client.getDog({ index: 4 });
  out.missing = await client.getDog({ index: 11 })
    .then(() => null, (e) => e instanceof RpcError && e.code);
  for (const framing of ["ndjson", "sse"]) {
    const names = [];
    for await (const dog of client.jsonStream({ intervalMs: 1 }, { framing })) names.push(dog.name);
    out[framing] = names;
  }
  const size = 20 * 1024 * 1024;
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i += 4096) data[i] = (i / 4096) & 0xff;
  const progress = [];
  const file = new File([data], "big.bin", { type: "application/octet-stream" });
  const onProgress = (n, t) => progress.push([n, t]);
  out.upload = await uploads.uploadAsByteStream(file, { onProgress });
  out.progress = { count: progress.length, last: progress.at(-1) };
  out.unauthenticated = await client.uploadAsByteStream(new Blob(["x"]))
    .then(() => null, (e) => e.code);
  const download = await client.downloadFile({ name: "hello.txt" });
  const text = await (await download.blob()).text();
  out.download = { filename: download.filename, size: download.size, text };
  const chat = client.chat();
  await chat.send({ text: "hi" });
  await chat.send({ text: "there" });
  await chat.close();
  out.chat = [];
  for await (const m of chat) out.chat.push(m.text);
  const controller = new AbortController();
  const seen = [];
  out.abort = await (async () => {
    for await (const dog of client.jsonStream({ intervalMs: 150 }, { signal: controller.signal })) {
      seen.push(dog.name);
      if (seen.length === 2) controller.abort();
    }
  })().then(() => null, (e) => e.code);
  out.abortSeen = seen;
  return out;
};
window.ready = true;
</script>
"""


@pytest.fixture
def ts_site(tmp_path: Path, files_dir: Path) -> Iterator[tuple[str, list[str], bytes]]:
    _tsc_available()
    static = tmp_path / "site"
    static.mkdir()
    compile_client(static, emit=True)
    (static / "index.html").write_text(PAGE)
    process, url, lines = start_server(
        files_dir, static=static, extra=("--interceptor", "examples.streams.server:upload_auth")
    )
    size = 20 * 1024 * 1024
    data = bytearray(size)
    for i in range(0, size, 4096):
        data[i] = (i // 4096) & 0xFF
    try:
        yield url, lines, bytes(data)
    finally:
        stop_server(process)


def test_ts_client_in_chromium(page: Page, ts_site: tuple[str, list[str], bytes]) -> None:
    url, lines, data = ts_site
    page.goto(url + "/")
    page.wait_for_function("window.ready === true", timeout=15_000)
    # Loopback moves 20 MiB in a blink and Chromium sends at most one progress event per
    # 50 ms: DevTools' network emulation caps the upload at 20 MiB/s to make it last ~1 s.
    devtools = page.context.new_cdp_session(page)
    devtools.send("Network.enable")
    devtools.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 20 << 20},
    )
    out = page.evaluate("window.run()")
    assert out["dog"] == {"name": "Dog 4", "age": 4}
    assert out["missing"] == "not_found"
    dogs = [f"Dog {i}" for i in range(10)]
    assert out["ndjson"] == dogs
    assert out["sse"] == dogs
    assert out["upload"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert out["upload"]["size"] == str(len(data))
    assert out["upload"]["filename"] == "big.bin"
    assert out["progress"]["count"] > 1, json.dumps(out["progress"])
    assert out["progress"]["last"] == [len(data), len(data)]
    assert out["unauthenticated"] == "unauthenticated"
    assert out["download"] == {"filename": "hello.txt", "size": 19, "text": "Hello from rpckit!\n"}
    assert out["chat"] == ["HI", "THERE"]
    assert out["abort"] == "canceled"
    assert out["abortSeen"] == ["Dog 0", "Dog 1"]
    # The abort reached the server: the stream's handler was cancelled.
    pattern = re.compile(r"/examples\.streams\.v1\.StreamsService/JsonStream .*code=CANCELLED")
    deadline = time.monotonic() + 10
    while not any(pattern.search(line) for line in lines) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any(pattern.search(line) for line in lines), "".join(lines[-20:])
