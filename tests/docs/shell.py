"""Runs a page's commands as a reader at a terminal would (used by tests/docs): one command
at a time with ``cd`` and exported variables carried over, ``rpckit serve`` lines in the
background until the next one, a ``--reload`` server's restart awaited after a command that
changes a file it watches, and ``--docs`` pages opened in headless Chromium."""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.docs.blocks import Block, Command
from tests.support import require_tool

__all__ = ["MAIN_JOB", "Server", "Shell"]

COMMAND_TIMEOUT = 300.0  # pip install into a fresh venv is the slowest line
READY_TIMEOUT = 60.0
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: The README's first command: the streams example, serving until stopped.
MAIN_JOB = ["bash", "examples/streams/run.sh"]


class Server:
    """A ``rpckit serve`` line running in the background, its output read as it comes."""

    def __init__(self, command: str, shell: Shell) -> None:
        self.command = command
        self.reload = "--reload" in shlex.split(command)
        self.cwd = shell.cwd
        self.process = subprocess.Popen(
            ["bash", "-c", f"{shell.prelude()}\nexec {command}"],
            cwd=shell.cwd, env=shell.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_ready()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, pattern: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            assert line is not None, f"{self.command!r} exited:\n" + "\n".join(self.lines)
            self.lines.append(line)
            if re.search(pattern, line):
                return
        pytest.fail(f"{self.command!r}: no line matching {pattern!r}:\n" + "\n".join(self.lines))

    def wait_ready(self) -> None:
        words = shlex.split(self.command, comments=True)
        both = words[:2] == MAIN_JOB  # the example's script serves both transports
        for flag, name in (("--grpc", "gRPC"), ("--http", "HTTP")):
            if both or flag in words:
                self.expect(rf"{name} listening on ")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)


class Shell:
    """Runs a page's commands one by one as one terminal would: the working directory and
    exported variables (``cd``, ``. .venv/bin/activate``) carry over from line to line."""

    def __init__(self, home: Path, env: dict[str, str], scratch: Path) -> None:
        self.cwd = home
        self.env = env
        self.state = scratch / "shell.state"
        self.state.write_text("")
        self.server: Server | None = None
        self.docs_checked: list[str] = []

    def prelude(self) -> str:
        return f"set -eo pipefail\nsource {shlex.quote(str(self.state))}"

    def write(self, block: Block) -> None:
        assert block.title is not None
        target = self.cwd / block.title
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text)

    def run(self, command: Command) -> None:
        words = shlex.split(command.text, comments=True)
        if words[:2] == ["rpckit", "serve"] or words[:2] == MAIN_JOB:
            self.stop()
            self.server = Server(command.text, self)
            if "--docs" in words:
                self.docs_checked.append(_check_docs_page("http://127.0.0.1:8080/docs"))
            return
        before = self._watched()
        cwd_file = self.state.with_suffix(".cwd")
        script = (
            f"{self.prelude()}\n{command.text}\n"
            f"export -p > {shlex.quote(str(self.state))}\n"
            f"pwd > {shlex.quote(str(cwd_file))}\n"
        )
        done = subprocess.run(
            ["bash", "-c", script], cwd=self.cwd, env=self.env, capture_output=True,
            text=True, timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{command.text!r} exited {done.returncode}:\n{output}"
        self.cwd = Path(cwd_file.read_text().strip())
        for expected in command.prints:
            assert expected in output, f"{command.text!r} printed:\n{output}\nnot {expected!r}"
        if self.server is not None and self.server.reload and self._watched() != before:
            self.server.expect(r"changed; restarting")
            self.server.wait_ready()

    def python(self, block: Block, index: int) -> None:
        """A Python block, run as if pasted into ``python`` in the current folder (which is
        on ``sys.path``, as in an interactive session)."""
        script = self.state.parent / f"block-{index}.py"
        script.write_text(block.text)
        self.run(Command(f"python - < {shlex.quote(str(script))}"))

    def _watched(self) -> dict[Path, float]:
        root = self.server.cwd if self.server is not None else self.cwd
        return {
            path: path.stat().st_mtime
            for pattern in ("*.py", "protos/**/*.proto")
            for path in root.glob(pattern)
        }

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def _check_docs_page(url: str) -> str:
    """``/docs`` in headless Chromium: Swagger UI shows the routes, all from 127.0.0.1."""
    from playwright.sync_api import expect, sync_playwright

    require_tool(Path(CHROMIUM).exists(), "needs Debian's chromium (apt-get install chromium)")
    from tests.browser.conftest import CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.set_default_timeout(20_000)
            page.goto(url)
            expect(page.locator(".opblock-summary-path").first).to_be_visible()
            paths = page.locator(".opblock-summary-path").all_inner_texts()
        finally:
            browser.close()
    outside = [r for r in requests if not r.startswith("http://127.0.0.1:8080/")]
    assert outside == [], outside
    assert any("/v1/greet/" in path for path in paths), paths
    return url
