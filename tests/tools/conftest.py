"""Fixtures for the tool tests: the tutorial project generated from an empty folder, and
``rpckit serve`` of it and of the streams example as real processes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving.process import Served
from tests.support import ROOT

TUTORIAL = ROOT / "examples" / "tutorial"


def make_tutorial(target: Path) -> Path:
    """The tutorial's steps in ``target``: copy the proto and greeter.py, ``rpckit generate``."""
    shutil.copytree(TUTORIAL / "protos", target / "protos")
    shutil.copy(TUTORIAL / "greeter.py", target / "greeter.py")
    done = subprocess.run(
        [sys.executable, "-m", "rpckit", "generate"], cwd=target,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return target


@pytest.fixture(scope="module")
def tutorial_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tutorial(tmp_path_factory.mktemp("tutorial"))


@pytest.fixture(scope="module")
def tutorial(tutorial_dir: Path) -> Iterator[dict[str, str]]:
    """The tutorial's Greeter served on both transports: ``{"grpc": ..., "http": ...}``."""
    with Served(
        "greeter:Greeter", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", cwd=str(tutorial_dir)
    ) as served:
        ports = served.ports(("gRPC", "HTTP"))
        yield {"grpc": f"127.0.0.1:{ports['gRPC']}", "http": f"http://127.0.0.1:{ports['HTTP']}"}


@pytest.fixture(scope="module")
def example() -> Iterator[dict[str, str]]:
    """The streams example served on both transports, with the docs page."""
    with Served(
        "examples.streams.server:create_service", "--grpc", "127.0.0.1:0",
        "--http", "127.0.0.1:0", "--docs", "--no-access-log",
    ) as served:  # fmt: skip
        ports = served.ports(("gRPC", "HTTP"))
        yield {"grpc": f"127.0.0.1:{ports['gRPC']}", "http": f"http://127.0.0.1:{ports['HTTP']}"}
