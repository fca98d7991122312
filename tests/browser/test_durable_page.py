"""The streams page's "Complete (durable)" card in a real Chromium, against real ``rpckit
serve`` processes: a reload resumes the same generation (from the stream id and offset the page
keeps in sessionStorage), Stop cancels the handler, and behind nginx with two instances on one
redis-server the page survives the kill -9 of the instance it reads from (the generated
client resumes with ?stream=<id>&offset=<n> through nginx on the other one) and reports
``unavailable`` when the instance *producing* the generation dies.

Which instance serves the page's stream: nginx's ``X-Upstream`` header (added by the
cluster fixture) on the stream's response, which Playwright sees though page JS does not. The
producer is the instance that got the call that started the stream (its log says
``complete: generation <id> started``). To have a reader on the other instance, the test
reloads the page (the card resumes the stream) until nginx's round robin puts the resumed
stream there, nudging the round robin with one extra request between tries.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, Response, expect

from tests.browser.conftest import WEB_DIR, ExampleServer, start_example
from tests.browser.test_connect_web import connect_bundle
from tests.durable.cluster import Cluster, Instance, MakeCluster, cluster_factory

__all__ = ["cluster_factory", "connect_bundle"]  # the fixtures, imported for this module's tests

# The page's bundle (dist/app.js: src/app.ts on the generated TypeScript client) is built by
# build.sh, with connect.html's: built when missing or stale.
pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("connect_bundle")]

TIMEOUT_MS = 20_000
STORAGE_KEY = "rpckit-example-complete"
STARTED = r"complete: generation (\w+) started"
#: Lease (3 s) + the follower's bound + slack for two busy cores.
LOST_WITHIN_MS = 15_000


def open_page(page: Page, url: str) -> None:
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page.goto(url)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def card(page: Page) -> dict[str, str]:
    """The card's data attributes (its test hooks)."""
    result: dict[str, str] = page.eval_on_selector(
        "#complete", "(section) => Object.assign({}, section.dataset)"
    )
    return result


def tokens(page: Page) -> list[dict[str, str]]:
    """The tokens on the page: index, generation and text of each span, in order."""
    result: list[dict[str, str]] = page.eval_on_selector_all(
        "#complete-output .tok",
        "(spans) => spans.map((s) => ({index: s.dataset.index, generation: s.dataset.generation,"
        " text: s.textContent}))",
    )
    return result


def wait_for_tokens(page: Page, at_least: int) -> None:
    page.wait_for_function(
        "(n) => Number(document.getElementById('complete').dataset.tokens) >= n", arg=at_least
    )


def stored(page: Page) -> object:
    return page.evaluate(f"() => JSON.parse(sessionStorage.getItem({STORAGE_KEY!r}) ?? 'null')")


def assert_whole_generation(page: Page, count: int, generation: str) -> list[dict[str, str]]:
    """Every index 0..count-1 exactly once, in order, all of one generation, no gap flagged."""
    shown = tokens(page)
    assert [int(t["index"]) for t in shown] == list(range(count))
    assert {t["generation"] for t in shown} == {generation}
    data = card(page)
    assert data["gaps"] == "0"
    assert data["tokens"] == str(count)
    assert data["generation"] == generation
    return shown


class StreamResponses:
    """The page's stream responses to /api/complete, as Playwright sees them (with the
    headers page JS does not read). The card reads with the generated client's fetch (an
    EventSource before it: either resource type counts)."""

    def __init__(self, page: Page) -> None:
        self.responses: list[Response] = []
        page.on("response", self._seen)

    def _seen(self, response: Response) -> None:
        kind = response.request.resource_type
        if kind in ("eventsource", "fetch") and "/api/complete" in response.url:
            self.responses.append(response)

    def wait_for(self, page: Page, count: int) -> Response:
        """The ``count``-th response (from 1), waiting for it."""
        for _ in range(TIMEOUT_MS // 100):
            if len(self.responses) >= count:
                return self.responses[count - 1]
            page.wait_for_timeout(100)
        raise AssertionError(f"no stream response #{count}: {len(self.responses)} seen")


# --- one instance ------------------------------------------------------------------------------


def drain(lines: queue.Queue[str], into: list[str]) -> list[str]:
    """Move the log lines that have arrived into ``into`` (without waiting)."""
    while True:
        try:
            into.append(lines.get_nowait())
        except queue.Empty:
            return into


def wait_for_line(example: ExampleServer, seen: list[str], pattern: str, timeout: float) -> str:
    """The first line in ``seen`` or arriving matching ``pattern`` (kept in ``seen``)."""
    for _ in range(int(timeout * 10)):
        for line in drain(example.lines, seen):
            if re.search(pattern, line):
                return line
        with contextlib.suppress(queue.Empty):
            seen.append(example.lines.get(timeout=0.1))
    raise AssertionError(f"no log line matching {pattern!r} in {seen}")


@pytest.fixture
def example(files_dir: Path) -> Iterator[ExampleServer]:
    """The example with its page, its stream log in memory (stated, though the default)."""
    server = start_example(files_dir, extra=["--streams", "memory"])
    try:
        yield server
    finally:
        server.stop()


def test_reload_continues_the_same_generation(page: Page, example: ExampleServer) -> None:
    count = 40
    open_page(page, f"{example.url}/?tokens={count}&interval_ms=150")
    page.click("#complete-start")
    wait_for_tokens(page, 6)
    before = card(page)
    generation = before["generation"]
    assert re.fullmatch(r"[0-9a-f]{16}", generation), before
    assert before["resumed"] == "false"
    assert before["state"] == "running"
    saved = stored(page)
    assert isinstance(saved, dict)
    assert saved["stream"] == before["stream"]
    assert saved["offset"] >= 6
    text_before = "".join(t["text"] for t in tokens(page))

    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#complete")).to_have_attribute("data-resumed", "true")
    expect(page.locator("#complete-resumed")).to_be_visible()  # the "resumed" badge
    # Resumed from offset 0: the whole text so far again, then the rest as it is produced.
    expect(page.locator("#complete")).to_have_attribute("data-state", "done", timeout=30_000)
    after = card(page)
    assert after["stream"] == before["stream"]
    shown = assert_whole_generation(page, count, generation)
    assert "".join(t["text"] for t in shown).startswith(text_before)
    assert stored(page) is None  # a finished stream is forgotten

    seen: list[str] = []
    wait_for_line(example, seen, rf"complete: generation {generation} finished", timeout=10)
    started = [re.search(STARTED, line) for line in seen]
    assert [m.group(1) for m in started if m] == [generation]  # the handler ran once


def test_stop_cancels_the_handler(page: Page, example: ExampleServer) -> None:
    open_page(page, f"{example.url}/?tokens=400&interval_ms=150")
    page.click("#complete-start")
    wait_for_tokens(page, 3)
    stream = card(page)["stream"]
    expect(page.locator("#complete-stop")).to_be_enabled()

    page.click("#complete-stop")
    expect(page.locator("#complete")).to_have_attribute("data-state", "cancelled")
    expect(page.locator("#complete-status")).to_have_text("cancelled")
    assert card(page)["error"] == "canceled"
    assert stored(page) is None
    expect(page.locator("#complete-start")).to_be_enabled()
    expect(page.locator("#complete-stop")).to_be_disabled()

    # The stream itself ended cancelled: any reader gets its tokens, then the cancelled end.
    with urllib.request.urlopen(
        f"{example.url}/api/complete?stream={stream}&offset=0", timeout=20
    ) as response:
        lines = [json.loads(line) for line in response.read().decode().splitlines() if line]
    assert lines[-1]["error"]["code"] == "canceled", lines[-1]
    produced = len(lines) - 1
    assert 3 <= produced < 400
    # The handler was cancelled, not left running: it never finished.
    seen: list[str] = []
    page.wait_for_timeout(1000)
    assert not [line for line in drain(example.lines, seen) if "finished" in line], seen


# --- two instances behind nginx, one redis-server ----------------------------------------------


@pytest.fixture
def web_cluster(cluster_factory: MakeCluster) -> Iterator[Cluster]:
    """The cluster with the page served by both instances."""
    with cluster_factory(args=("--static", str(WEB_DIR))) as made:
        yield made


def started_lines(cluster: Cluster) -> dict[str, list[str]]:
    """The generations each instance has logged as started, reading everything it printed."""
    result: dict[str, list[str]] = {}
    for instance in cluster.members():
        served = instance.served
        while True:
            try:
                line = served._queue.get_nowait()  # what has arrived, without waiting
            except queue.Empty:
                break
            if line is None:
                break
            served.lines.append(line)
        result[instance.name] = [
            m.group(1) for line in served.lines if (m := re.search(STARTED, line))
        ]
    return result


def nudge(cluster: Cluster) -> None:
    """One request through nginx, so its round robin sends the next one elsewhere."""
    with urllib.request.urlopen(f"{cluster.http}/style.css", timeout=20) as response:
        response.read()


def generate(
    page: Page, cluster: Cluster, sources: StreamResponses, count: int, interval_ms: int = 150
) -> Instance:
    """Start a generation in the page through nginx; the producer's instance."""
    open_page(page, f"{cluster.http}/?tokens={count}&interval_ms={interval_ms}")
    page.click("#complete-start")
    wait_for_tokens(page, 2)
    # The call that starts the stream runs its producer where it lands.
    producer = cluster.upstream(sources.wait_for(page, 1).headers)
    generation = card(page)["generation"]
    producer.expect(rf"complete: generation {generation} started", timeout=20)
    return producer


def read_elsewhere(
    page: Page, cluster: Cluster, sources: StreamResponses, avoid: Instance
) -> Instance:
    """Reload until the page's resumed stream is served by the instance other than
    ``avoid``; that instance."""
    for attempt in range(8):
        seen = len(sources.responses)
        page.reload()
        expect(page.locator("#complete")).to_have_attribute("data-resumed", "true")
        reader = cluster.upstream(sources.wait_for(page, seen + 1).headers)
        if reader.name != avoid.name:
            return reader
        # One nudge, then two: whatever number of requests a page load makes, one of the two
        # shifts the round robin by an odd count, onto the other instance.
        for _ in range(1 + attempt % 2):
            nudge(cluster)
    raise AssertionError("nginx never sent the resumed stream to the other instance")


def test_kill_of_the_reading_instance_loses_nothing(page: Page, web_cluster: Cluster) -> None:
    cluster = web_cluster
    count = 150  # 15 s of tokens: time enough to reload, kill and reconnect on a busy machine
    sources = StreamResponses(page)
    producer = generate(page, cluster, sources, count, interval_ms=100)
    generation = card(page)["generation"]
    reader = read_elsewhere(page, cluster, sources, avoid=producer)
    expect(page.locator("#complete")).to_have_attribute("data-state", "running")
    wait_for_tokens(page, 3)
    assert reader.name != producer.name

    seen = len(sources.responses)
    cluster.kill(reader)
    at_kill = int(card(page)["tokens"])
    assert at_kill < count, "the generation ended before the kill: nothing was tested"
    # The client resumes by itself (?stream=&offset=) through nginx, on the producer's instance.
    again = sources.wait_for(page, seen + 1)
    assert cluster.upstream(again.headers).name == producer.name
    expect(page.locator("#complete")).to_have_attribute("data-state", "done", timeout=40_000)

    data = card(page)
    assert int(data["reconnects"]) >= 1
    assert data["resumes"] == "0"  # the client's own resume, not the card's
    assert data["resumed"] == "true"
    assert_whole_generation(page, count, generation)  # no gap, no duplicate, one generation
    assert stored(page) is None
    assert started_lines(cluster) == {producer.name: [generation], reader.name: []}


def test_kill_of_the_producing_instance_shows_unavailable(page: Page, web_cluster: Cluster) -> None:
    cluster = web_cluster
    count = 200
    sources = StreamResponses(page)
    producer = generate(page, cluster, sources, count)
    generation = card(page)["generation"]
    reader = read_elsewhere(page, cluster, sources, avoid=producer)
    expect(page.locator("#complete")).to_have_attribute("data-state", "running")
    wait_for_tokens(page, 3)

    cluster.kill(producer)
    expect(page.locator("#complete")).to_have_attribute(
        "data-state", "unavailable", timeout=LOST_WITHIN_MS
    )
    expect(page.locator("#complete-status")).to_have_text("unavailable · producer lost")
    expect(page.locator("#complete-error")).to_contain_text("unavailable")
    expect(page.locator("#complete-error")).to_contain_text("producer lost")
    assert card(page)["error"] == "unavailable"
    assert stored(page) is None

    # Every token the producer wrote before it died is on the page, each once, in order.
    with urllib.request.urlopen(
        f"{reader.url}/api/complete?stream={card(page)['stream']}&offset=0", timeout=20
    ) as response:
        lines = [json.loads(line) for line in response.read().decode().splitlines() if line]
    assert lines[-1]["error"]["code"] == "unavailable", lines[-1]
    logged = [item.get("text", "") for item in lines[:-1]]
    assert 2 <= len(logged) < count
    shown = assert_whole_generation(page, len(logged), generation)
    assert [t["text"] for t in shown] == logged
    assert started_lines(cluster)[reader.name] == []


def test_graceful_stop_of_the_reading_instance_loses_nothing(
    page: Page, web_cluster: Cluster
) -> None:
    # A deploy: the reader's instance is stopped with SIGTERM. Its readers get an in-band
    # `unavailable` ("the server is shutting down; retry"), which is not the stream's end: the
    # card resumes by itself from its offset, through nginx, on the producer's instance.
    cluster = web_cluster
    count = 150
    sources = StreamResponses(page)
    producer = generate(page, cluster, sources, count, interval_ms=100)
    generation = card(page)["generation"]
    reader = read_elsewhere(page, cluster, sources, avoid=producer)
    expect(page.locator("#complete")).to_have_attribute("data-state", "running")
    wait_for_tokens(page, 3)

    seen = len(sources.responses)
    os.kill(reader.pid, signal.SIGTERM)
    reader.served.process.wait(timeout=30)
    assert int(card(page)["tokens"]) < count, "the generation ended first: nothing was tested"
    again = sources.wait_for(page, seen + 1)
    assert cluster.upstream(again.headers).name == producer.name
    expect(page.locator("#complete")).to_have_attribute("data-state", "done", timeout=40_000)

    data = card(page)
    assert int(data["resumes"]) >= 1  # the card's own resume, after the in-band unavailable
    assert int(data["reconnects"]) >= 1
    assert "error" not in data
    assert_whole_generation(page, count, generation)
    assert started_lines(cluster) == {producer.name: [generation], reader.name: []}
