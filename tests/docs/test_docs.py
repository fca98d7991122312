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
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rpckit import __version__
from tests.docs.blocks import Block, Command, commands, parse
from tests.docs.shell import COMMAND_TIMEOUT, MAIN_JOB, Shell
from tests.support import IN_CI, ROOT, require_tool

pytestmark = pytest.mark.process

FIXED_PORTS = (50051, 8080)
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


def test_python_clients_page_as_printed(tmp_path: Path) -> None:
    """The Python clients page's upload and download, from the repository root with the
    README's main job serving the example, as the page says."""
    page = ROOT / "examples" / "site" / "docs" / "howto" / "python.md"
    blocks = [b for b in parse(page.read_text(), _include) if b.lang == "python" and not b.title]
    assert len(blocks) == 1  # the testing section's file runs in tests/test_testing.py
    for port in FIXED_PORTS:
        if not _port_free(port):
            require_tool(False, f"the page prints port {port}, in use here")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    shell = Shell(ROOT, env, tmp_path)
    try:
        shell.run(Command(" ".join(MAIN_JOB)))
        shell.python(blocks[0], 0)
    finally:
        shell.stop()
