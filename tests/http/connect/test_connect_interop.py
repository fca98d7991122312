"""Real Connect clients against ``rpckit serve ... --http``: connect-es (Node) and connect-py.

The clients' code is generated at test time into pytest temp dirs, with grpcio-tools' protoc:
``protoc-gen-es`` (npm ``@bufbuild/protoc-gen-es``) for Node, ``protoc-gen-connectrpc`` (PyPI
``protoc-gen-connectrpc``, ``protobuf=google``, so it reuses the repo's ``*_pb2`` modules) for
Python. Each client calls GetDog (found and not_found), TextStream (5 items, then leaves),
JsonStream (ten dogs) and UploadAsByteStream (1 MiB in 64 KiB chunks) in binary and JSON mode,
checks what it got itself, and prints it as JSON; the results are checked here once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import NODE_MODULES, ROOT, node_available, require_tool

pytestmark = pytest.mark.process

SERVER_START_TIMEOUT = 30.0
CLIENT_TIMEOUT = 90.0
UPLOAD_SIZE = 1024 * 1024
TEXTS = [f"Hello, world! {n}" for n in range(5, 10)]
DOGS = [{"name": f"Dog {i}", "age": i} for i in range(10)]
MODES = ["binary", "json"]

STREAMS_PROTO = "examples/streams/v1/streams.proto"
# streams.proto and everything it imports that protoc-gen-es must emit (google/protobuf/* comes
# with @bufbuild/protobuf/wkt).
ES_PROTOS = [
    STREAMS_PROTO,
    "rpckit/v1/stream.proto",
    "google/api/annotations.proto",
    "google/api/http.proto",
    "google/api/httpbody.proto",
]


def include_dirs() -> list[Path]:
    """The repo's protos, googleapis-common-protos and grpcio-tools' google/protobuf."""
    import google.api
    import grpc_tools

    googleapis = Path(next(iter(google.api.__path__))).parent.parent
    return [ROOT / "protos", googleapis, Path(grpc_tools.__file__).parent / "_proto"]


def protoc(plugin_name: str, plugin: Path, out: Path, option: str, protos: list[str]) -> None:
    command = [
        sys.executable, "-m", "grpc_tools.protoc",
        *(f"-I{d}" for d in include_dirs()),
        f"--plugin=protoc-gen-{plugin_name}={plugin}",
        f"--{plugin_name}_out={out}", f"--{plugin_name}_opt={option}",
        *protos,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"protoc-gen-{plugin_name} failed:\n{done.stderr}"


@pytest.fixture(scope="session")
def es_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """streams.proto as ES modules (target=js), importable with tests/node's node_modules."""
    plugin = NODE_MODULES / ".bin" / "protoc-gen-es"
    require_tool(
        node_available() and plugin.exists() and (NODE_MODULES / "@connectrpc").is_dir(),
        "node, @connectrpc/connect-node and @bufbuild/protoc-gen-es are needed (npm ci)",
    )
    out = tmp_path_factory.mktemp("connect-es")
    protoc("es", plugin, out, "target=js,import_extension=js", ES_PROTOS)
    # The generated files import "@bufbuild/protobuf": resolve it from tests/node, as ESM.
    (out / "node_modules").symlink_to(NODE_MODULES, target_is_directory=True)
    (out / "package.json").write_text('{"type": "module"}\n')
    return out


@pytest.fixture(scope="session")
def connect_py_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The connect-py client module for streams.proto, over the repo's google-protobuf pb2."""
    bin_dir = Path(sys.executable).parent
    found = shutil.which("protoc-gen-connectrpc", path=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    require_tool(
        found is not None and importlib.util.find_spec("connectrpc") is not None,
        "the connectrpc and protoc-gen-connectrpc PyPI packages are needed",
    )
    assert found is not None
    out = tmp_path_factory.mktemp("connect-py")
    protoc("connectrpc", Path(found), out, "protobuf=google", [STREAMS_PROTO])
    assert (out / "examples" / "streams" / "v1" / "streams_connect.py").is_file()
    return out


@pytest.fixture
async def base_url(tmp_path: Path) -> AsyncIterator[str]:
    """``rpckit serve`` of the streams example as a real process; yields its HTTP base URL."""
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rpckit", "serve", "examples.streams.server:create_service",
            "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=log,
        )  # fmt: skip
    try:
        address = await asyncio.wait_for(_http_address(process), SERVER_START_TIMEOUT)
        assert address, f"no HTTP address from rpckit serve:\n{log_path.read_text()}"
        yield f"http://{address}"
    finally:
        await _terminate(process)


async def _http_address(process: asyncio.subprocess.Process) -> str | None:
    assert process.stdout is not None
    while line := (await process.stdout.readline()).decode():
        if match := re.search(r"HTTP listening on (\S+)", line):
            return match.group(1)
    return None


async def _terminate(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def run_client(*command: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one client to completion; it must exit 0 and print one JSON object."""
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), CLIENT_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{command[1]} did not finish in {CLIENT_TIMEOUT} s")
    output = f"stdout:\n{stdout.decode()}\nstderr:\n{stderr.decode()}"
    assert process.returncode == 0, f"{command[1]} exited {process.returncode}\n{output}"
    lines = stdout.decode().strip().splitlines()
    assert lines, output
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def payload(size: int = UPLOAD_SIZE) -> bytes:
    """The clients' upload: sha256(f"rpckit-node:{i}") for i = 0, 1, ... concatenated."""
    blocks = [hashlib.sha256(f"rpckit-node:{i}".encode()).digest() for i in range(size // 32 + 1)]
    return b"".join(blocks)[:size]


def check_upload(upload: dict[str, Any], filename: str) -> None:
    assert upload == {
        "size": UPLOAD_SIZE,
        "sha256": hashlib.sha256(payload()).hexdigest(),
        "filename": filename,
    }


@pytest.mark.parametrize("mode", MODES)
async def test_connect_es_node_client(base_url: str, es_code: Path, mode: str) -> None:
    script = ROOT / "tests" / "node" / "connect_client.mjs"
    result = await run_client("node", str(script), base_url, str(es_code), mode)
    assert result["mode"] == mode
    assert result["dog"] == {"name": "Dog 3", "age": 3}
    assert result["notFound"]["code"] == "NotFound"
    assert result["notFound"]["rawMessage"] == "no dog 42; there are 10"
    assert result["textStream"]["texts"] == TEXTS
    assert result["textStream"]["end"]["code"] == "Canceled"
    assert result["dogs"] == DOGS
    check_upload(result["upload"], "node.bin")


@pytest.mark.parametrize("mode", MODES)
async def test_connect_python_client(base_url: str, connect_py_code: Path, mode: str) -> None:
    script = ROOT / "tests" / "http" / "connect" / "connect_python_client.py"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = await run_client(
        sys.executable, str(script), base_url, str(connect_py_code), mode, env=env
    )
    assert result["mode"] == mode
    assert result["dog"] == {"name": "Dog 3", "age": 3}
    assert result["not_found"] == {"code": "NOT_FOUND", "message": "no dog 42; there are 10"}
    assert result["text_stream"] == {"texts": TEXTS, "end": "closed"}
    assert result["dogs"] == DOGS
    check_upload(result["upload"], "python.bin")
