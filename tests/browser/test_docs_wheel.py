"""``rpckit serve --docs`` from the wheel, as a user installs it: the wheel built from the
checkout's tracked files (nothing npm left behind), installed into a fresh virtualenv
outside the repo. Without the ``docs`` extra ``--docs`` refuses to start with one line;
with it, Swagger UI renders a generated service's routes in headless Chromium, every
request the page makes stays on 127.0.0.1, and its Authorize button sends the bearer token
of the served ``BearerAuth`` to the route that needs it.

Slow (a wheel build and a pip install), and not skipped in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Request, expect

from tests.browser.conftest import chromium
from tests.serving.process import Served
from tests.support import ROOT, free_port

__all__ = ["chromium"]  # the module-scoped Chromium fixture

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

PROTO = """syntax = "proto3";
package hello.v1;
import "google/api/annotations.proto";
service HelloService {
  rpc Greet(GreetRequest) returns (GreetReply) {
    option (google.api.http) = {get: "/v1/greet/{name}"};
  }
  rpc Secret(GreetRequest) returns (GreetReply) {
    option (google.api.http) = {get: "/v1/secret"};
  }
}
message GreetRequest { string name = 1; }
message GreetReply { string greeting = 1; }
"""

SERVER = """from hello.v1.hello_pb2 import GreetReply, GreetRequest
from hello.v1.hello_rpckit import HelloService
from rpckit import Context
from rpckit.interceptors.auth import BearerAuth, static_tokens


class Hello(HelloService):
    async def greet(self, request: GreetRequest, ctx: Context) -> GreetReply:
        return GreetReply(greeting=f"Hello, {request.name}!")

    async def secret(self, request: GreetRequest, ctx: Context) -> GreetReply:
        return GreetReply(greeting=f"Psst, {ctx.principal}")


auth = BearerAuth(static_tokens({"demo-token": "Ada"}), methods=["hello.v1.HelloService/Secret"])
"""


def _run(*command: str | Path, cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, f"{command}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def _tracked_tree(dest: Path) -> None:
    """The files a commit of the working tree would hold (tracked, or new and not ignored):
    what a clean checkout builds from, without node_modules, caches or build output."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True, timeout=60,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted from the tree but not yet from the index
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _constraints(dest: Path) -> Path:
    """The lock's versions without its hashes: the fresh venv gets the tested releases."""
    pins = re.findall(r"^([A-Za-z0-9_.\-]+==[^\s\\;]+(?:\s*;\s*[^\\\n]+)?)", _lock(), re.M)
    path = dest / "constraints.txt"
    path.write_text("\n".join(p.strip() for p in pins) + "\n")
    return path


def _lock() -> str:
    return (ROOT / "requirements-dev.lock").read_text()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh venv (outside the repo) with the wheel built from the checkout, no extras;
    and the environment to run its commands in."""
    work = tmp_path_factory.mktemp("wheel")
    source, dist, venv = work / "src", work / "dist", work / "venv"
    _tracked_tree(source)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run(
        sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", dist, source,
        cwd=work, env=env,
    )  # fmt: skip
    (wheel,) = dist.glob("rpckit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if "docs_ui" in n or "node_modules" in n], names
    _run(sys.executable, "-m", "venv", venv, cwd=work, env=env)
    env = {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
    pip: list[str | Path] = [venv / "bin" / "python", "-m", "pip", "install", "--quiet"]
    _run(*pip, "-c", _constraints(work), wheel, cwd=work, env=env)
    return (
        venv,
        env | {"RPCKIT_WHEEL": str(wheel), "RPCKIT_CONSTRAINTS": str(work / "constraints.txt")},
    )


def test_docs_from_the_wheel(chromium: Browser, installed: tuple[Path, dict[str, str]]) -> None:
    venv, env = installed
    app = venv.parent / "app"
    (app / "protos" / "hello" / "v1").mkdir(parents=True)
    (app / "protos" / "hello" / "v1" / "hello.proto").write_text(PROTO)
    (app / "hello_server.py").write_text(SERVER)
    rpckit = str(venv / "bin" / "rpckit")
    _run(rpckit, "generate", cwd=app, env=env)
    env = {k: v for k, v in env.items() if k != "RPCKIT_DOCS_UI"}
    port = free_port()
    args = [
        "--grpc", "127.0.0.1:0", "--http", f"127.0.0.1:{port}",
        "--docs", "--interceptor", "hello_server:auth",
    ]  # fmt: skip

    # Without the extra: one line, and no server.
    refused = subprocess.run(
        [rpckit, "serve", "hello_server:Hello", *args],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [
        "rpckit: --docs needs the docs extra: pip install 'rpckit[docs]'"
    ]

    wheel = env["RPCKIT_WHEEL"]
    pip: list[str | Path] = [venv / "bin" / "python", "-m", "pip", "install", "--quiet"]
    _run(*pip, "-c", env["RPCKIT_CONSTRAINTS"], f"rpckit[docs] @ file://{wheel}", cwd=app, env=env)

    python = str(venv / "bin" / "python")
    with Served("hello_server:Hello", *args, cwd=str(app), python=python, env=env) as server:
        server.expect(r"HTTP listening on", timeout=60)
        base = f"http://127.0.0.1:{port}"
        context = chromium.new_context()
        requests: list[str] = []
        context.on("request", lambda r: requests.append(r.url))
        try:
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.goto(f"{base}/docs")
            for path in ("/v1/greet/{name}", "/v1/secret"):
                block = page.locator(f'.opblock-summary-path[data-path="{path}"]')
                expect(block.first).to_be_visible()
            expect(page.locator("#connect")).to_contain_text("POST /hello.v1.HelloService/Secret")

            # Authorize with the bearer token, then try the guarded route.
            page.locator("button.authorize").first.click()
            dialog = page.locator(".dialog-ux")
            expect(dialog).to_contain_text("bearerAuth")
            dialog.locator("input").first.fill("demo-token")
            dialog.locator("button.modal-btn.auth").first.click()
            dialog.locator("button.btn-done, button.modal-btn.btn-done").first.click()
            guarded = page.locator('.opblock-summary-path[data-path="/v1/secret"]')
            operation = page.locator(".opblock").filter(has=guarded)
            operation.locator(".opblock-summary").first.click()
            operation.locator("button.try-out__btn").click()

            def secret(request: Request) -> bool:
                return request.url.startswith(f"{base}/v1/secret")

            with page.expect_request(secret) as sent:
                operation.locator("button.execute").click()
            assert sent.value.headers.get("authorization") == "Bearer demo-token"
            response = sent.value.response()
            assert response is not None
            assert response.status == 200
            assert response.json() == {"greeting": "Psst, Ada"}
        finally:
            context.close()
        assert requests, "the page made no request"
        outside = [
            u for u in requests if not u.startswith(f"{base}/") and not u.startswith("data:")
        ]
        assert outside == []  # the viewer and everything it loads came from the bridge
        # ...and its files from the installed openapi-ui-bundles package.
        found = subprocess.run(
            [venv / "bin" / "python", "-c",
             "import openapi_ui_bundles.swagger_ui as s; print(s.static_path)"],
            env=env, capture_output=True, text=True, check=True, timeout=60,
        ).stdout.strip()  # fmt: skip
        assert Path(found).is_relative_to(venv)
        served = httpx.get(f"{base}/docs/ui/swagger-ui-bundle.js", timeout=30).content
        assert served == (Path(found) / "swagger-ui-bundle.js").read_bytes()
