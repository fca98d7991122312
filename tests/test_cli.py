"""``rpckit serve`` as a real process: serves, shuts down gracefully on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from examples.streams.v1.streams_pb2 import GetDogRequest, JsonStreamRequest, TextStreamRequest
from examples.streams.v1.streams_rpckit import StreamsServiceClient
from rpckit import Code, RpcError
from rpckit.cli import main
from rpckit.grpc import GrpcTransport
from rpckit.http import ConnectTransport
from tests.serving.process import Served
from tests.support import ROOT

pytestmark = pytest.mark.process


async def _start(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rpckit", "serve", "examples.streams.server:create_service",
        "--grpc", "127.0.0.1:0", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
    match = re.search(r"gRPC listening on (\S+)", line)
    assert match, line
    return process, match.group(1)


@pytest.fixture
async def served(files_dir: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    process, address = await _start("--files", str(files_dir), "--grace", "5")
    try:
        yield process, address
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_serve_and_graceful_shutdown(
    served: tuple[asyncio.subprocess.Process, str],
) -> None:
    process, address = served
    async with GrpcTransport(address) as transport:
        client = StreamsServiceClient(transport)
        assert (await client.get_dog(GetDogRequest(index=5))).name == "Dog 5"
        dogs = client.json_stream(JsonStreamRequest(interval_ms=100))
        first = await anext(dogs)
        process.send_signal(signal.SIGTERM)  # mid-stream: the stream may finish
        rest = [dog async for dog in dogs]
    assert [d.name for d in [first, *rest]] == [f"Dog {i}" for i in range(10)]
    assert await asyncio.wait_for(process.wait(), timeout=10) == 0


async def test_grace_period_cancels_endless_streams(files_dir: Path) -> None:
    process, address = await _start("--files", str(files_dir), "--grace", "0.2")
    try:
        async with GrpcTransport(address) as transport:
            texts = StreamsServiceClient(transport).text_stream(TextStreamRequest(interval_ms=20))
            await anext(texts)
            process.send_signal(signal.SIGINT)
            with pytest.raises(RpcError) as caught:
                async for _ in texts:
                    pass
        assert caught.value.code in (Code.UNAVAILABLE, Code.CANCELLED)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_http_stream_finishes_on_sigterm(files_dir: Path) -> None:
    process, _ = await _start("--files", str(files_dir), "--http", "127.0.0.1:0", "--grace", "5")
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        match = re.search(r"HTTP listening on (\S+)", line)
        assert match, line
        async with ConnectTransport(f"http://{match.group(1)}", encoding="json") as transport:
            dogs = StreamsServiceClient(transport).json_stream(JsonStreamRequest(interval_ms=100))
            first = await anext(dogs)
            process.send_signal(signal.SIGTERM)
            rest = [dog async for dog in dogs]
        assert [d.name for d in [first, *rest]] == [f"Dog {i}" for i in range(10)]
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_http_grace_ends_open_streams_cleanly(files_dir: Path) -> None:
    """When the grace period is over, open streams end with an in-band ``unavailable``
    (Connect and plain NDJSON alike), and the server exits with nothing cancelled under it."""
    process, _ = await _start("--files", str(files_dir), "--http", "127.0.0.1:0", "--grace", "0.5")
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        match = re.search(r"HTTP listening on (\S+)", line)
        assert match, line
        url = f"http://{match.group(1)}"
        ndjson = {"accept": "application/x-ndjson"}
        async with (
            ConnectTransport(url) as transport,
            httpx.AsyncClient(base_url=url, timeout=30) as http,
            http.stream("GET", "/api/test_stream?interval_ms=50", headers=ndjson) as plain,
        ):
            texts = StreamsServiceClient(transport).text_stream(TextStreamRequest(interval_ms=50))
            await anext(texts)
            lines = plain.aiter_lines()
            assert json.loads(await anext(lines)) == {"text": "Hello, world! 0"}
            process.send_signal(signal.SIGTERM)
            with pytest.raises(RpcError) as caught:
                async for _ in texts:
                    pass
            rest = [json.loads(line) async for line in lines if line]
        assert caught.value.code is Code.UNAVAILABLE
        assert rest[-1] == {
            "error": {"code": "unavailable", "message": "the server is shutting down; retry"}
        }
        assert await asyncio.wait_for(process.wait(), timeout=15) == 0
        assert process.stderr is not None
        stderr = (await process.stderr.read()).decode()
        assert "Traceback" not in stderr
        assert "Cancel" not in stderr  # uvicorn's hard stop was never needed
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_bad_target_is_a_clear_error() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rpckit", "serve", "examples.streams.server:nope",
        "--grpc", "127.0.0.1:0", cwd=ROOT, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode != 0
    assert b"has no attribute 'nope'" in stderr
    assert b"Traceback" not in stderr


async def test_port_in_use_is_a_clear_error(served: tuple[asyncio.subprocess.Process, str]) -> None:
    _, address = served
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rpckit", "serve", "examples.streams.server:create_service",
        "--grpc", address, cwd=ROOT, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode != 0
    assert f"could not bind gRPC server to {address}".encode() in stderr
    async with grpc.aio.insecure_channel(address) as channel:  # the first server is unharmed
        client = StreamsServiceClient(GrpcTransport(channel))
        assert (await client.get_dog(GetDogRequest(index=1))).name == "Dog 1"


@pytest.mark.parametrize("flag", ["--grpc", "--http"])
@pytest.mark.parametrize("reload", [False, True])
def test_bind_errors_are_one_line_with_the_reason(flag: str, reload: bool) -> None:
    """A port in use: one line naming the address and the reason, no grpcio log line;
    under --reload the reloader says it waits for a change (it does not serve nothing)."""
    name = {"--grpc": "gRPC", "--http": "HTTP"}[flag]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        expected = (
            f"rpckit: could not bind {name} server to 127.0.0.1:{port}: Address already in use"
        )
        args = [flag, f":{port}", "--reload"] if reload else [flag, f":{port}"]
        with Served("examples.streams.server:create_service", *args) as served:
            if not reload:
                assert served.process.wait(timeout=30) != 0
                assert served.rest().splitlines() == [expected]
                return
            served.expect("waiting for a change to restart it")
            lines = [line for line in served.lines if "reloading on" not in line]
            assert lines == [
                expected,
                "rpckit: the server exited (status 1); waiting for a change to restart it",
            ]
            assert served.process.poll() is None


def test_colon_port_means_loopback_on_both_flags() -> None:
    with Served("examples.streams.server:create_service", "--grpc", ":0", "--http", ":0") as served:
        served.expect(r"gRPC listening on 127\.0\.0\.1:\d+$")
        served.expect(r"HTTP listening on 127\.0\.0\.1:\d+$")


BAD_SERVICE = """
from pathlib import Path
from examples.streams.server import StreamsExample

class SyncGetDog(StreamsExample):
    def get_dog(self, request, ctx):
        return None

def sync_handler():
    return SyncGetDog(Path("."))
"""


@pytest.mark.parametrize(
    ("target", "extra", "expected"),
    [
        ("nowhere:svc", [], "rpckit: no module named 'nowhere' (from nowhere:svc)"),
        (
            "examples.streams.v1.streams_rpckit:StreamsService",
            [],
            "rpckit: examples.streams.v1.streams_rpckit:StreamsService does not implement",
        ),
        (
            "bad_service:sync_handler",
            [],
            "rpckit: SyncGetDog.get_dog (/examples.streams.v1.StreamsService/GetDog) must be an "
            "async def, not a plain def",
        ),
        ("bad_service:sync_handler", ["surplus"], "rpckit: unrecognised arguments: surplus"),
        # a file path names the same module (the handler check shows it was imported)
        ("./bad_service.py:sync_handler", [], "rpckit: SyncGetDog.get_dog"),
        ("./bad_service:sync_handler", [], "rpckit: SyncGetDog.get_dog"),
        ("../bad_service.py:x", [], "rpckit: ../bad_service.py is not under the current dir"),
        ("./nothing.py:x", [], "rpckit: no file ./nothing.py under"),
        # greeter.py is there; what it imports (greet, a generated package) is not
        (
            "greeter:Greeter",
            [],
            "rpckit: greeter imports greet, which is not found; did you run rpckit generate?",
        ),
        ("uses_lib:svc", [], "rpckit: uses_lib imports nolib_xyz, which is not found"),
    ],
)
async def test_serve_mistakes_are_one_line(
    tmp_path: Path, target: str, extra: list[str], expected: str
) -> None:
    (tmp_path / "bad_service.py").write_text(BAD_SERVICE)
    (tmp_path / "greeter.py").write_text("from greet.v1 import greet_pb2\n")
    (tmp_path / "protos" / "greet" / "v1").mkdir(parents=True)
    (tmp_path / "uses_lib.py").write_text("import nolib_xyz\n")
    args = ["--grpc", "127.0.0.1:0", *extra]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rpckit", "serve", target, *args,
        cwd=tmp_path, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode != 0
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(expected), lines


async def test_granian_missing_is_one_line() -> None:
    code = "import sys; sys.modules['granian'] = None; from rpckit.cli import main; main()"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "serve", "examples.streams.server:create_service",
        "--http", "127.0.0.1:0", "--server", "granian", cwd=ROOT, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode != 0
    assert stderr.decode().splitlines() == [
        "rpckit: --server granian needs granian: pip install 'rpckit[fast]'"
    ]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from rpckit import __version__

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"rpckit {__version__}\n"


def test_help_of_every_command_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    for command in [[], ["generate"], ["protos-path"], ["call"], ["openapi"], ["serve"]]:
        with pytest.raises(SystemExit) as exited:
            main([*command, "--help"])
        assert exited.value.code == 0
        shown = capsys.readouterr().out
        assert shown.startswith("usage: rpckit")
        assert not re.search(r"``|`\w[^`]*`|:\w+:`", shown), shown
