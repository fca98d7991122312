"""The example served by rpckit's grpc.aio server, called by a real Node client
(@grpc/grpc-js + @grpc/proto-loader, tests/node/grpc_client.mjs): TextStream (read five items,
then cancel), JsonStream, UploadAsByteStream and GetDog, every item checked on both sides."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import google.api
import grpc_tools
import pytest

from tests.support import ROOT, node_available, require_tool

pytestmark = pytest.mark.process

SCRIPT = ROOT / "tests" / "node" / "grpc_client.mjs"
TIMEOUT = 60.0
UPLOAD_SIZE = 1024 * 1024
CANCELLED = 1
NOT_FOUND = 5


def include_dirs() -> list[str]:
    """The repo's protos, googleapis-common-protos' site dir and grpc_tools' google/protobuf."""
    googleapis = Path(next(iter(google.api.__path__))).parent.parent
    well_known = Path(next(iter(grpc_tools.__path__))) / "_proto"
    return [str(ROOT / "protos"), str(googleapis), str(well_known)]


def node_payload(size: int = UPLOAD_SIZE) -> bytes:
    """The bytes grpc_client.mjs uploads: sha256(b"rpckit-node:<i>") for i = 0, 1, ..."""
    blocks = (hashlib.sha256(f"rpckit-node:{i}".encode()).digest() for i in range(size // 32 + 1))
    return b"".join(blocks)[:size]


async def run_node(*args: str) -> tuple[int, str, str]:
    """Run ``node SCRIPT args...`` from tests/node; kill it if it outlives TIMEOUT."""
    process = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        *args,
        cwd=SCRIPT.parent,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{SCRIPT.name} did not finish within {TIMEOUT} s") from None
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_node_grpc_js_client(grpc_address: str) -> None:
    require_tool(node_available(), "node and tests/node/node_modules (npm ci) are needed")
    code, stdout, stderr = await run_node(grpc_address, *include_dirs())
    if stderr:
        sys.stderr.write(stderr)
    assert code == 0, f"{SCRIPT.name} exited {code}:\n{stderr}\n{stdout}"
    result: dict[str, Any] = json.loads(stdout)

    assert result["text"] == [f"Hello, world! {n}" for n in range(5, 10)]
    assert result["cancel"]["code"] == CANCELLED

    assert result["dogs"] == [{"name": f"Dog {i}", "age": i % 10} for i in range(10)]

    payload = node_payload()
    sha256 = hashlib.sha256(payload).hexdigest()
    assert result["upload"] == {
        "size": UPLOAD_SIZE,
        "sha256": sha256,
        "filename": "node.bin",
        "clientSha256": sha256,
    }

    assert result["dog"] == {"name": "Dog 3", "age": 3}
    assert result["notFound"] == {"code": NOT_FOUND, "details": "no dog 42; there are 10"}
