"""``rpckit serve --reload`` on the tutorial's project: an edited handler is live on the next
call; an edited .proto is regenerated and its new method is served."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rpckit.serving.reload import watched
from tests.serving.process import Served
from tests.support import ROOT, free_port
from tests.tools.conftest import make_tutorial

pytestmark = pytest.mark.process

GREET = "greet.v1.GreeterService"


def call(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rpckit", "call", address, *args], cwd=ROOT,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_watched() -> None:
    assert watched("app/service.py")
    assert watched("protos/greet/v1/greet.proto")
    assert not watched("greet/v1/greet_pb2.py")
    assert not watched("greet/v1/greet_rpckit.py")
    assert not watched(".venv/lib/site.py")
    assert not watched("notes.txt")


def test_reload_on_handler_and_proto_changes(tmp_path: Path) -> None:
    project = make_tutorial(tmp_path)
    http, grpc = free_port(), free_port()
    with Served(
        "greeter:Greeter", "--grpc", f"127.0.0.1:{grpc}", "--http", f"127.0.0.1:{http}",
        "--grace", "1", "--reload", "--no-access-log", cwd=str(project),
    ) as served:  # fmt: skip
        served.ports(("gRPC", "HTTP"))
        url = f"http://127.0.0.1:{http}"
        first = call(url, f"{GREET}/Greet", "-d", '{"name": "Ada"}')
        assert json.loads(first.stdout) == {"greeting": "Hello, Ada!"}, first.stderr

        source = project / "greeter.py"
        source.write_text(source.read_text().replace('"Hello")', '"Howdy")'))
        served.expect(r"greeter\.py changed; restarting")
        served.expect(r"HTTP listening")
        second = call(url, f"{GREET}/Greet", "-d", '{"name": "Ada"}')
        assert json.loads(second.stdout) == {"greeting": "Howdy, Ada!"}, second.stderr

        # A new method: its handler first (harmless before the code is regenerated)...
        handler = (
            "\n    async def ping(self, request: GreetRequest, ctx: Context) -> GreetResponse:\n"
            '        return GreetResponse(greeting="pong")\n'
        )
        source.write_text(source.read_text().rstrip("\n").rsplit("\n", 1)[0] + handler)
        proto = project / "protos" / "greet" / "v1" / "greet.proto"
        text = proto.read_text()
        rpc = "  rpc Ping(GreetRequest) returns (GreetResponse);\n}\n\n// Who to greet."
        proto.write_text(text.replace("}\n\n// Who to greet.", rpc, 1))
        served.expect(r"greet\.proto.* changed; restarting")
        served.expect(r"HTTP listening")
        shown = call(f"127.0.0.1:{grpc}", "describe", GREET)
        assert "rpc Ping(greet.v1.GreetRequest) returns (greet.v1.GreetResponse);" in shown.stdout
        pong = call(url, f"{GREET}/Ping", "-d", "{}")
        assert json.loads(pong.stdout) == {"greeting": "pong"}, pong.stderr
