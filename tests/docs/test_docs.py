"""README.md's quick start and the tutorial, run exactly as printed: in an empty folder
outside the repository, with the wheel built from a clean checkout of this tree (the files
git tracks) installed by the page's own ``pip install`` line into the page's own virtualenv.

pip finds the wheel through ``PIP_FIND_LINKS`` and the dependencies at the lock's versions
through ``PIP_CONSTRAINT``: the commands are the page's, the package index is the test's.
A ``rpckit serve`` line runs in the background until the next one (as in a second terminal);
after a command that changes a file a ``--reload`` server watches, the next command waits for
the restart, as a reader would. With ``--docs``, the page loads in headless Chromium and no
request leaves 127.0.0.1. The pages print fixed ports (:50051, :8080), so those must be free.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rpckit import __version__
from tests.docs.blocks import Block, Command, commands, parse
from tests.support import IN_CI, ROOT, require_tool

FIXED_PORTS = (50051, 8080)
COMMAND_TIMEOUT = 300.0  # pip install into a fresh venv is the slowest line
READY_TIMEOUT = 60.0
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: The README's first command: the streams example, serving until stopped.
MAIN_JOB = ["bash", "examples/streams/run.sh"]
#: The README's second command is the test suite itself (``.ci/run`` runs exactly it).
SUITE = ["bash", "tests/run.sh"]


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment the pages run in: the wheel of a clean checkout for pip, the lock's
    versions as constraints, no virtualenv of the repository's."""
    base = tmp_path_factory.mktemp("clean")
    checkout = base / "checkout"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, tracked):
        source = ROOT / name.decode()
        if source.is_file():
            target = checkout / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    wheels = base / "wheels"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(wheels)],
        cwd=checkout, capture_output=True, check=True, timeout=COMMAND_TIMEOUT,
    )  # fmt: skip
    constraints = base / "constraints.txt"
    locked = re.findall(r"^([A-Za-z0-9_.\-]+==[^ \\\n]+(?: ; [^\\\n]+)?)", (
        ROOT / "requirements-dev.lock"
    ).read_text(), re.M)  # fmt: skip
    constraints.write_text("\n".join([*locked, f"rpckit=={__version__}"]) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    env.update(
        PIP_FIND_LINKS=str(wheels),
        PIP_CONSTRAINT=str(constraints),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PYTHONUNBUFFERED="1",
        HOME=str(base),  # nothing from the developer's own configuration
        PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")),
    )
    return env


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
        script = self.state.parent / f"block-{index}.py"
        script.write_text(block.text)
        self.run(Command(f"python {shlex.quote(str(script))}"))

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


def _run_page(page: Path, blocks: list[Block], folder: Path, env: dict[str, str]) -> Shell:
    """Every block of ``blocks`` in order, in ``folder``: files written, commands run."""
    for port in FIXED_PORTS:
        if not _port_free(port):
            reason = f"{page.name} prints port {port}, which is in use here"
            if IN_CI:
                pytest.fail(reason)
            pytest.skip(reason)
    shell = Shell(folder, env, folder.parent)
    try:
        for index, block in enumerate(blocks):
            if block.title is not None:
                shell.write(block)
            elif block.lang in ("sh", "bash", "shell"):
                for command in commands(block):
                    shell.run(command)
            elif block.lang == "python":
                shell.python(block, index)
    finally:
        shell.stop()
    return shell


def _include(path: str) -> str:
    return (ROOT / path).read_text()


def _section(markdown: str, heading: str) -> str:
    start = markdown.index(heading)
    end = markdown.find("\n## ", start + len(heading))
    return markdown[start : end if end >= 0 else None]


@pytest.fixture
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty folder outside the repository."""
    base = tmp_path_factory.mktemp("reader")
    (base / "home").mkdir()
    return base / "home"


def test_readme_quick_start_as_printed(wheel_env: dict[str, str], folder: Path) -> None:
    readme = ROOT / "README.md"
    blocks = parse(_section(readme.read_text(), "## Quick start"), _include)
    assert [b.lang for b in blocks] == ["sh", "proto", "python", "sh", "sh", "python"], blocks
    shell = _run_page(readme, blocks, folder, wheel_env)
    assert shell.docs_checked, "the quick start serves --docs"


def test_tutorial_as_printed(wheel_env: dict[str, str], folder: Path) -> None:
    tutorial = ROOT / "examples" / "site" / "docs" / "tutorial.md"
    blocks = parse(tutorial.read_text(), _include)
    assert not any("--8<--" in b.text for b in blocks)
    if not shutil.which("buf", path=wheel_env["PATH"]):
        require_tool(False, "the tutorial's last step needs buf (tests/node: npm ci)")
    shell = _run_page(tutorial, blocks, folder, wheel_env)
    assert shell.docs_checked


def test_readme_two_commands_as_printed(tmp_path: Path) -> None:
    """The README's main job, from the repository as printed: the example on both transports
    with its page. (The second command is this suite: ``.ci/run`` runs exactly it.)"""
    import grpc
    import httpx

    from examples.streams.v1.streams_pb2 import Dog, GetDogRequest

    readme = ROOT / "README.md"
    blocks = parse(_section(readme.read_text(), "## Two commands"), _include)
    lines = [shlex.split(c.text, comments=True) for c in commands(blocks[0])]
    assert lines == [MAIN_JOB, SUITE], lines
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for port in FIXED_PORTS:
        if not _port_free(port):
            require_tool(False, f"the README's main job prints port {port}, in use here")
    shell = Shell(ROOT, env, tmp_path)
    try:
        shell.run(commands(blocks[0])[0])
        page = httpx.get("http://127.0.0.1:8080/", timeout=10)
        assert page.status_code == 200
        assert "<html" in page.text.lower()
        dog = httpx.post(
            "http://127.0.0.1:8080/examples.streams.v1.StreamsService/GetDog",
            json={"index": 1},
            timeout=10,
        )
        assert dog.status_code == 200, dog.text
        assert dog.json()["name"] == "Dog 1", dog.text
        with grpc.insecure_channel("127.0.0.1:50051") as channel:
            get_dog = channel.unary_unary(
                "/examples.streams.v1.StreamsService/GetDog",
                request_serializer=GetDogRequest.SerializeToString,
                response_deserializer=Dog.FromString,
            )
            assert get_dog(GetDogRequest(index=2), timeout=10).name == "Dog 2"
    finally:
        shell.stop()
