"""Generation holds for any valid schema: real and hostile protos are generated, imported,
ruff- and mypy-strict-clean, and a real service is served and called on every transport.

Real schemas come from installed packages at test time (googleapis-common-protos'
longrunning operations, grpcio-health-checking's and grpcio-reflection's compiled
descriptors, grpcio-tools' well-known types); hostile ones live in ``protos/``.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from rpckit.codegen import run_protoc
from rpckit.codegen.protoc import bundled_include_paths
from tests.support import ROOT, stop_process_tree

pytestmark = pytest.mark.process

# googleapis-common-protos ships no .pyi for longrunning; the test only calls through it.
ops_pb2: Any = importlib.import_module("google.longrunning.operations_proto_pb2")
HOSTILE = Path(__file__).parent / "protos"
HOSTILE_PROTOS = sorted(
    p.relative_to(HOSTILE).as_posix()
    for p in HOSTILE.rglob("*.proto")
    if not p.relative_to(HOSTILE).as_posix().startswith("grpc/")
)
SITE = bundled_include_paths()[0]
OPERATIONS = "google/longrunning/operations.proto"


def _env(*paths: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths))}


def _python(code: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], env=_env(*paths), cwd=paths[0],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _descriptor_set(path: Path) -> list[str]:
    """health.proto and reflection.proto as their packages compiled them, under ``corpus/``
    (the installed ``grpc_health`` and ``grpc_reflection`` packages own the original paths)."""
    files = []
    for module in (health_pb2, reflection_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        proto.name = f"corpus/{proto.name}"
        files.append(proto)
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=files).SerializeToString())
    return [f.name for f in files]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    src = tmp_path_factory.mktemp("src")
    operations = src / OPERATIONS  # shipped as operations_proto.proto, imported by this name
    operations.parent.mkdir(parents=True)
    operations.write_text((SITE / "google/longrunning/operations_proto.proto").read_text())
    run_protoc([OPERATIONS], proto_paths=[src], out=out)
    image = src / "image.binpb"
    run_protoc(_descriptor_set(image), proto_paths=[], out=out, descriptor_sets=[image])
    run_protoc(HOSTILE_PROTOS, proto_paths=[HOSTILE], out=out)
    return out


def _modules(out: Path) -> list[str]:
    return sorted(
        p.relative_to(out).with_suffix("").as_posix().replace("/", ".")
        for p in out.rglob("*_rpckit.py")
    )


def test_corpus_is_complete(corpus: Path) -> None:
    assert _modules(corpus) == [
        "aip.library.v1.library_rpckit",
        "corpus.grpc_health.v1.health_rpckit",
        "corpus.grpc_reflection.v1alpha.reflection_rpckit",
        "google.longrunning.operations_rpckit",
        "hostile.a.v1.service_rpckit",
        "hostile.b.v1.service_rpckit",
        "hostile.editions.v1.editions_rpckit",
        "hostile.legacy.v1.legacy_rpckit",
        "hostile.names.v1.names_rpckit",
        "hostile.wkt.v1.wkt_rpckit",
        "my_edge_rpckit",
        "nopackage_rpckit",
    ]
    assert not list(corpus.rglob("__init__.py"))


_INSPECT = """
import importlib, inspect, json, sys
from rpckit import Service
found = {}
for name in sys.argv[1:]:
    module = importlib.import_module(name)
    for cls in vars(module).values():
        if isinstance(cls, type) and issubclass(cls, Service) and cls.__module__ == name \\
                and inspect.isabstract(cls):
            handlers = [m.handler for m in cls.spec().methods]
            assert len(set(handlers)) == len(handlers), handlers
            assert cls.bind is Service.bind and cls.spec.__func__ is Service.spec.__func__
            docs = {m.name: inspect.getdoc(getattr(cls, m.handler)) for m in cls.spec().methods}
            found[cls.spec().name] = {"class": cls.__name__, "handlers": handlers, "docs": docs}
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def inspected(corpus: Path) -> dict[str, dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-c", _INSPECT, *_modules(corpus)], env=_env(corpus), cwd=corpus,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found: dict[str, dict[str, object]] = json.loads(result.stdout)
    return found


def test_every_module_imports_and_keeps_service_members(
    inspected: dict[str, dict[str, object]],
) -> None:
    assert {"google.longrunning.Operations", "grpc.health.v1.Health", "Naked"} <= set(inspected)
    assert inspected["grpc.reflection.v1alpha.ServerReflection"]["handlers"] == [
        "server_reflection_info"
    ]


def test_installed_packages_still_import_with_the_output_on_the_path(corpus: Path) -> None:
    code = "import google.protobuf, google.api.annotations_pb2, grpc, rpckit.grpc, rpckit.http"
    result = _python(code, corpus)
    assert result.returncode == 0, result.stderr


def test_names_are_renamed_deterministically(inspected: dict[str, dict[str, object]]) -> None:
    """Item 4: keywords, Service/client members, names the module reads, case collisions."""
    names = inspected["hostile.names.v1.Names"]
    assert names["handlers"] == [
        "bind_", "spec_", "transport_", "import_", "class_", "str_", "float_", "bytes_",
        "abc_", "annotations_", "http_get", "http_get_", "http_get_2", "private", "mangled",
    ]  # fmt: skip
    classes = {svc: info["class"] for svc, info in inspected.items() if svc.startswith("hostile")}
    assert classes["hostile.names.v1.Context"] == "Context_"
    assert classes["hostile.names.v1.Event"] == "Event_"
    assert classes["hostile.names.v1.Service"] == "Service_"
    assert classes["hostile.names.v1.NamesMethods"] == "NamesMethods_"
    assert classes["hostile.names.v1.str"] == "str_"


def test_comments_with_quotes_and_backslashes(inspected: dict[str, dict[str, object]]) -> None:
    """Item 2: schema text becomes exactly the docstring, whatever quotes it holds."""
    docs = inspected["hostile.names.v1.Names"]["docs"]
    assert isinstance(docs, dict)
    assert docs["Bind"] == 'Ends with a quote: Hook will "hang"'
    assert docs["Spec"] == "Backslashes \\ and \\\\ and a trailing one \\"
    assert docs["Transport"] == (
        "Triple quotes \"\"\" and ''' inside; tabs  and a curly quote \u2019 and an en dash \u2013"
    )


def test_ruff_clean(corpus: Path) -> None:
    """Item 11: the project's own ruff rules, without needless noqa."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--config",
         str(ROOT / "pyproject.toml"), "."],
        cwd=corpus, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


_USER_CODE = """
from google.longrunning import operations_pb2
from google.longrunning.operations_rpckit import Operations, UnimplementedOperations
from rpckit import Context


class Partial(UnimplementedOperations):
    async def get_operation(
        self, request: operations_pb2.GetOperationRequest, ctx: Context
    ) -> operations_pb2.Operation:
        return operations_pb2.Operation(name=request.name, done=True)


class Incomplete(Operations):
    async def get_operation(
        self, request: operations_pb2.GetOperationRequest, ctx: Context
    ) -> operations_pb2.Operation:
        return operations_pb2.Operation(name=request.name, done=True)


def make() -> list[Operations]:
    return [Partial(), Incomplete()]
"""


def test_mypy_strict(corpus: Path, tmp_path: Path) -> None:
    """Generated modules are mypy-strict clean; a missing handler is reported, a partial
    service built on ``Unimplemented*`` is not."""
    user = corpus / "corpus_user.py"
    user.write_text(_USER_CODE)
    try:
        files = sorted(str(p.relative_to(corpus)) for p in corpus.rglob("*_rpckit.py"))
        result = subprocess.run(
            [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
             "--cache-dir", str(tmp_path), *files, "corpus_user.py"],
            cwd=corpus, env={**os.environ, "MYPYPATH": str(ROOT)},
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    finally:
        user.unlink()
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    # protoc's own .pyi for proto2 maps uses a bare Mapping; that is not rpckit's output.
    ours = [e for e in errors if "_pb2.pyi:" not in e]
    assert len(ours) == 1, result.stdout
    assert re.match(
        r'corpus_user\.py:\d+: error: Cannot instantiate abstract class "Incomplete"', ours[0]
    )
    assert "list_operations" in ours[0]


_IMPL = """
from google.longrunning import operations_pb2
from google.longrunning.operations_rpckit import UnimplementedOperations
from rpckit import Context


class Ops(UnimplementedOperations):
    async def get_operation(
        self, request: operations_pb2.GetOperationRequest, ctx: Context
    ) -> operations_pb2.Operation:
        return operations_pb2.Operation(name=request.name, done=True)
"""


@pytest.fixture
def served_operations(corpus: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``rpckit serve`` of a partial google.longrunning.Operations; (grpc address, base URL)."""
    (tmp_path / "ops_impl.py").write_text(_IMPL)
    process = subprocess.Popen(
        [sys.executable, "-m", "rpckit", "serve", "ops_impl:Ops",
         "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"],
        cwd=tmp_path, env=_env(tmp_path, corpus, ROOT),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        found: dict[str, str] = {}
        for _ in range(20):  # bounded: a few lines before both transports are announced
            line = process.stdout.readline().decode()
            if not line:
                break
            match = re.search(r"(gRPC|HTTP) listening on (\S+)", line)
            if match:
                found[match.group(1)] = match.group(2)
            if len(found) == 2:
                break
        assert len(found) == 2, process.stderr.read().decode() if process.stderr else ""
        yield found["gRPC"], f"http://{found['HTTP']}"
    finally:
        stop_process_tree(process)


async def test_operations_served_on_every_transport(served_operations: tuple[str, str]) -> None:
    """A real schema, partly implemented: the implemented method answers on gRPC, Connect
    and its google.api.http route; the others answer ``unimplemented`` on each."""
    address, base = served_operations
    get_path = "/google.longrunning.Operations/GetOperation"
    list_path = "/google.longrunning.Operations/ListOperations"
    async with grpc.aio.insecure_channel(address) as channel:
        get = channel.unary_unary(
            get_path,
            request_serializer=ops_pb2.GetOperationRequest.SerializeToString,
            response_deserializer=ops_pb2.Operation.FromString,
        )
        reply = await get(ops_pb2.GetOperationRequest(name="operations/abc"), timeout=10)
        assert reply == ops_pb2.Operation(name="operations/abc", done=True)
        list_call = channel.unary_unary(
            list_path,
            request_serializer=ops_pb2.ListOperationsRequest.SerializeToString,
            response_deserializer=ops_pb2.ListOperationsResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await list_call(ops_pb2.ListOperationsRequest(name="operations"), timeout=10)
        assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "ListOperations is not implemented" in (failed.value.details() or "")
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        connect = await http.post(get_path, json={"name": "operations/abc"})
        assert connect.status_code == 200, connect.text
        assert connect.json() == {"name": "operations/abc", "done": True}
        plain = await http.get("/v1/operations/abc")
        assert plain.status_code == 200, plain.text
        assert plain.json() == {"name": "operations/abc", "done": True}
        connect_list = await http.post(list_path, json={"name": "operations"})
        assert connect_list.status_code == 501
        assert connect_list.json()["code"] == "unimplemented"
        plain_list = await http.get("/v1/operations")
        assert plain_list.status_code == 501, plain_list.text
