"""Every service of the real-schema and hostile corpus is served and called: each module's
generated ``Unimplemented*`` classes run on rpckit's gRPC server and HTTP bridge, and every
method answers ``unimplemented`` with the generated message over gRPC, Connect and each of
its ``google.api.http`` routes.

The corpus shadows installed packages (``google.longrunning``), so it is served from a
subprocess (``corpus_server.py``: one server pair per module) and called from here.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tests.codegen.test_corpus import _env, _modules, corpus  # noqa: F401 - corpus: fixture
from tests.support import ROOT, stop_process_tree

pytestmark = pytest.mark.process

SERVER = Path(__file__).with_name("corpus_server.py")
Method = dict[str, Any]


@pytest.fixture(scope="module")
def served(
    corpus: Path,  # noqa: F811 - the fixture imported above
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[dict[str, Any]]]:
    """Each module's description (addresses, services, methods, filled route URLs)."""
    modules = _modules(corpus)
    log = tmp_path_factory.mktemp("corpus_server") / "stderr.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(SERVER), *modules], cwd=corpus, env=_env(corpus, ROOT),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdin is not None
        described = []
        for _ in range(len(modules) + 1):  # bounded: one line per module, then "ready"
            line = process.stdout.readline().decode()
            if not line.startswith("{"):
                break
            described.append(json.loads(line))
        assert line == "ready\n", log.read_text()
        assert [d["module"] for d in described] == modules
        yield described
        process.stdin.close()  # the server stops its servers and exits
        assert process.wait(timeout=10) == 0, log.read_text()
    finally:
        stop_process_tree(process)


def _calls(served: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], str, Method]]:
    """(module, "module service method" for messages, method) for every method served."""
    for module in served:
        for service in module["services"]:
            for method in service["methods"]:
                where = (
                    f"{module['module']} {service['name']} ({service['class']}) {method['name']}"
                )
                yield module, where, method


def _expected(method: Method) -> str:
    """The generated ``Unimplemented*`` handler's message."""
    return f"{method['path'][1:]} is not implemented"


def test_every_module_and_service_is_served(served: list[dict[str, Any]]) -> None:
    services = {s["name"] for m in served for s in m["services"]}
    assert {
        "google.longrunning.Operations", "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection", "hostile.names.v1.Names", "Naked",
    } <= services  # fmt: skip
    kinds = {method["kind"] for _, _, method in _calls(served)}
    assert kinds == {"unary", "server_stream", "client_stream", "bidi_stream"}
    assert any(method["rules"] for _, _, method in _calls(served))


async def _grpc_call(channel: grpc.aio.Channel, method: Method) -> None:
    kind, path = method["kind"], method["path"]
    if kind == "unary":
        await channel.unary_unary(path)(b"", timeout=10)
    elif kind == "server_stream":
        async for _ in channel.unary_stream(path)(b"", timeout=10):
            pass
    # Request streams are empty: a handler that fails at once ends the call while a request
    # would still be in flight, and grpcio's client then sometimes reports its own
    # "Internal error from Core" instead of the server's status (a client-side race).
    elif kind == "client_stream":
        await channel.stream_unary(path)(iter(()), timeout=10)
    else:
        async for _ in channel.stream_stream(path)(iter(()), timeout=10):
            pass


async def test_every_method_over_grpc(served: list[dict[str, Any]]) -> None:
    failures = []
    channels: dict[str, grpc.aio.Channel] = {}
    try:
        for module, where, method in _calls(served):
            if module["grpc"] not in channels:
                channels[module["grpc"]] = grpc.aio.insecure_channel(module["grpc"])
            try:
                await _grpc_call(channels[module["grpc"]], method)
            except grpc.aio.AioRpcError as error:
                got = (error.code(), error.details())
                if got != (grpc.StatusCode.UNIMPLEMENTED, _expected(method)):
                    failures.append(f"{where}: {got}")
            else:
                failures.append(f"{where}: answered instead of UNIMPLEMENTED")
    finally:
        for channel in channels.values():
            await channel.close()
    assert not failures, "\n".join(failures)


def _envelope(data: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(data)) + data


def _end_of_stream(body: bytes) -> dict[str, Any]:
    """The JSON of the end-of-stream envelope (flag 0x02) of a Connect stream response."""
    offset = 0
    while offset + 5 <= len(body):
        flags, length = struct.unpack(">BI", body[offset : offset + 5])
        payload = body[offset + 5 : offset + 5 + length]
        offset += 5 + length
        if flags & 0x02:
            end: dict[str, Any] = json.loads(payload)
            return end
    raise AssertionError(f"no end-of-stream envelope in {body!r}")


async def test_every_method_over_connect(served: list[dict[str, Any]]) -> None:
    failures = []
    async with httpx.AsyncClient(timeout=10) as http:
        for module, where, method in _calls(served):
            url = module["http"] + method["path"]
            expected = _expected(method)
            if method["kind"] == "unary":
                response = await http.post(
                    url, content=b"", headers={"content-type": "application/proto"}
                )
                got: Any = (response.status_code, response.json())
                want: Any = (501, {"code": "unimplemented", "message": expected})
            else:
                response = await http.post(
                    url, content=_envelope(b""),
                    headers={"content-type": "application/connect+proto"},
                )  # fmt: skip
                got = (response.status_code, _end_of_stream(response.content).get("error"))
                want = (200, {"code": "unimplemented", "message": expected})
            if got != want:
                failures.append(f"{where}: {got} != {want}")
    assert not failures, "\n".join(failures)


async def _plain_request(
    http: httpx.AsyncClient, base: str, method: Method, rule: dict[str, Any]
) -> httpx.Response:
    verb = rule["method"].upper()
    url = base + rule["url"]
    if method["kind"] == "client_stream":  # an empty chunked stream of zero messages

        async def nothing() -> AsyncIterator[bytes]:
            return
            yield b""

        return await http.request(
            verb, url, content=nothing(), headers={"content-type": "application/x-ndjson"}
        )
    if rule["body"]:
        return await http.request(verb, url, json={})
    return await http.request(verb, url)


async def test_every_route_over_plain_http(served: list[dict[str, Any]]) -> None:
    failures = []
    routes = 0
    async with httpx.AsyncClient(timeout=10) as http:
        for module, where, method in _calls(served):
            for rule in method["rules"]:
                routes += 1
                response = await _plain_request(http, module["http"], method, rule)
                if method["kind"] == "bidi_stream":
                    expected = f"{method['name']} is a bidi stream: call it over gRPC"
                else:
                    expected = _expected(method)
                try:
                    body = response.json()
                except ValueError:
                    body = response.text
                got = (response.status_code, body)
                want = (501, {"code": "unimplemented", "message": expected})
                if got != want:
                    failures.append(
                        f"{where} {rule['method'].upper()} {rule['template']} "
                        f"as {rule['url']}: {got} != {want}"
                    )
    assert not failures, "\n".join(failures)
    assert routes >= 6  # Operations (4, multi-segment and a verb) and Names (2)
