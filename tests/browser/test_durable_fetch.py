"""A durable stream read with the browser's own ``fetch`` (NDJSON, ``?stream=&offset=``) in
headless Chromium, through nginx in front of two ``rpckit serve`` instances on one
redis-server: the reader's instance is killed (kill -9) mid-stream, and the page's reader
resumes through nginx on the other instance from the count it has, with no gap and no
duplicate, while the producer (on that other instance) goes on."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page

from tests.browser.conftest import WEB_DIR
from tests.durable.cluster import Cluster, MakeCluster, cluster_factory

__all__ = ["cluster_factory"]  # the fixture, imported for this module's tests

pytestmark = pytest.mark.browser

TOKENS = 80
INTERVAL_MS = 100
TIMEOUT_MS = 30_000

#: The page's reader: follows the stream from ``offset`` through nginx, keeps every item and
#: the instance that served each response, and resumes from its count after a network error.
#: ``avoid`` is an upstream the first response must not come from (nginx alternates).
READER = """
async ([id, avoid]) => {
  const state = window.durable = {items: [], upstreams: [], end: null, errors: 0};
  let offset = 0;
  for (let attempt = 0; attempt < 40 && state.end === null; attempt++) {
    let response;
    try {
      response = await fetch(`/api/complete?stream=${id}&offset=${offset}`);
    } catch (error) {
      state.errors++;
      await new Promise((r) => setTimeout(r, 100));
      continue;
    }
    const upstream = response.headers.get("x-upstream");
    if (state.items.length === 0 && upstream === avoid) {
      await response.body.cancel();
      continue;
    }
    state.upstreams.push(upstream);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    try {
      for (;;) {
        const {value, done} = await reader.read();
        if (done) {
          if (state.end === null) state.end = "ok";
          break;
        }
        buffered += decoder.decode(value, {stream: true});
        let newline;
        while ((newline = buffered.indexOf("\\n")) >= 0) {
          const line = JSON.parse(buffered.slice(0, newline));
          buffered = buffered.slice(newline + 1);
          if (line.error) { state.end = line.error.code; break; }
          state.items.push(line);
          offset++;
        }
        if (state.end !== null) break;
      }
    } catch (error) {
      state.errors++;  // the connection died: resume from the count
    }
  }
  return state;
}
"""


@pytest.fixture
def served(cluster_factory: MakeCluster) -> Iterator[Cluster]:
    with cluster_factory(args=("--static", str(WEB_DIR))) as made:
        yield made


def test_fetch_reader_resumes_on_the_other_instance(page: Page, served: Cluster) -> None:
    a, b = served.members()
    # Start the generation on a directly: a runs the handler (the producer).
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "GET", f"{a.url}/api/complete?tokens={TOKENS}&interval_ms={INTERVAL_MS}"
        ) as first,
    ):
        stream = first.headers["rpckit-stream-id"]
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{served.http}/index.html")
    page.evaluate("([id, avoid]) => { window.reading = (" + READER + ")([id, avoid]); }",
                  [stream, a.http_address])  # fmt: skip
    page.wait_for_function("() => window.durable && window.durable.items.length >= 5")
    upstreams = page.evaluate("() => window.durable.upstreams")
    assert upstreams == [b.http_address]  # the reader is on b, the producer on a
    served.kill(b)
    state = page.evaluate("() => window.reading")
    assert state["end"] == "ok", state
    indices = [item.get("index", 0) for item in state["items"]]
    assert indices == list(range(TOKENS))  # no gap, no duplicate
    assert len({item["generation"] for item in state["items"]}) == 1
    assert state["upstreams"] == [b.http_address, a.http_address]
    assert state["errors"] >= 1
    assert a.alive
    a.expect(r"complete: generation \S+ finished")
