"""``rpckit generate`` and ``rpckit protos-path`` as a user runs them, on hostile protos."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from rpckit.codegen.plugin import run
from tests.serving.process import Served
from tests.support import ROOT, require_tool

pytestmark = pytest.mark.process

HOSTILE = Path(__file__).parent / "protos"
BUF = ROOT / "tests" / "node" / "node_modules" / ".bin" / "buf"


def _rpckit(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rpckit", *args], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_grpc_package_does_not_shadow_installed_packages(tmp_path: Path) -> None:
    """Item 1: no ``__init__.py`` in ``grpc/``; grpcio, protobuf and rpckit.grpc still import,
    and the user is told why ``grpc/testing/*`` cannot be imported."""
    result = _rpckit("generate", "-I", str(HOSTILE), "--out", str(tmp_path),
                     "grpc/testing/hostile.proto", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "grpc/testing/hostile_rpckit.py").is_file()
    assert not list(tmp_path.rglob("__init__.py"))
    assert "cannot be imported as 'grpc'" in result.stderr
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    check = subprocess.run(
        [sys.executable, "-c", "import grpc, google.protobuf, rpckit.grpc; grpc.aio"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_vendored_google_protos_are_not_generated(tmp_path: Path) -> None:
    """Item 1: a copy of an installed proto under protos/ is left to its installed package."""
    protos = tmp_path / "protos"
    (protos / "google/api").mkdir(parents=True)
    shutil.copy(HOSTILE / "nopackage.proto", protos / "nopackage.proto")
    installed = Path(sys.prefix).glob("lib/python*/site-packages/google/api/http.proto")
    shutil.copy(next(installed), protos / "google/api/http.proto")
    result = _rpckit("generate", "--out", "gen", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "gen").rglob("*") if p.is_file()) == [
        "nopackage_pb2.py", "nopackage_pb2.pyi", "nopackage_rpckit.py"
    ]  # fmt: skip


def test_syntax_error_is_protocs_line_only(tmp_path: Path) -> None:
    """Item 12: protoc's diagnostic, a non-zero exit, no traceback, nothing written."""
    (tmp_path / "protos").mkdir()
    shutil.copy(HOSTILE / "broken.proto.txt", tmp_path / "protos/broken.proto")
    result = _rpckit("generate", "--out", "gen", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].endswith('broken.proto:4:1: Expected ";".')
    assert not (tmp_path / "gen").exists() or not list((tmp_path / "gen").rglob("*.py"))


def test_dashed_file_names_and_grpc_stubs_are_listed(tmp_path: Path) -> None:
    """Item 17: the listing is exactly what is on disk, with protoc's own file names."""
    result = _rpckit("generate", "-I", str(HOSTILE), "--out", str(tmp_path), "--grpc-python",
                     "my-edge.proto", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    listed = sorted(Path(line).name for line in result.stdout.split())
    assert listed == [
        "my_edge_pb2.py", "my_edge_pb2.pyi", "my_edge_pb2_grpc.py", "my_edge_rpckit.py"
    ]  # fmt: skip
    assert listed == sorted(p.name for p in tmp_path.iterdir() if p.is_file())


def test_plugin_declares_editions() -> None:
    """Item 10: protoc accepts the plugin for editions files."""
    response = run(plugin_pb2.CodeGeneratorRequest())
    assert response.supported_features & plugin_pb2.CodeGeneratorResponse.FEATURE_SUPPORTS_EDITIONS
    assert response.minimum_edition == descriptor_pb2.EDITION_PROTO2
    assert response.maximum_edition >= descriptor_pb2.EDITION_2023


def test_plugin_under_protoc_on_editions(tmp_path: Path) -> None:
    plugin = Path(sys.executable).parent / "protoc-gen-rpckit"
    paths = _rpckit("protos-path", cwd=tmp_path).stdout.split()
    result = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{HOSTILE}", *(f"-I{p}" for p in paths),
         f"--plugin=protoc-gen-rpckit={plugin}", f"--rpckit_out={tmp_path}",
         "hostile/editions/v1/editions.proto"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "hostile/editions/v1/editions_rpckit.py").is_file()


def test_protos_path_lists_the_bundled_includes(tmp_path: Path) -> None:
    result = _rpckit("protos-path", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    paths = [Path(p) for p in result.stdout.split()]
    assert (paths[0] / "google/api/annotations.proto").is_file()
    assert (paths[1] / "google/protobuf/timestamp.proto").is_file()
    assert (paths[2] / "rpckit/v1/stream.proto").is_file()


BUF_YAML = """version: v2
modules:
  - path: protos
  - path: third_party
"""
BUF_GEN_YAML = """version: v2
plugins:
  - local: protoc-gen-rpckit
    out: gen
  - protoc_builtin: python
    protoc_path: [python, -m, grpc_tools.protoc]
    out: gen
  - protoc_builtin: pyi
    protoc_path: [python, -m, grpc_tools.protoc]
    out: gen
inputs:
  - directory: protos
"""


def test_buf_generate_offline(tmp_path: Path) -> None:
    """Item 10: the README's buf setup, with google/api and rpckit imports, and no network."""
    require_tool(BUF.exists(), "buf is installed by tests/node (npm ci)")
    (tmp_path / "protos").mkdir()
    shutil.copytree(HOSTILE / "hostile/names", tmp_path / "protos/hostile/names")
    shutil.copytree(HOSTILE / "hostile/editions", tmp_path / "protos/hostile/editions")
    (tmp_path / "buf.yaml").write_text(BUF_YAML)
    (tmp_path / "buf.gen.yaml").write_text(BUF_GEN_YAML)
    linked = _rpckit("protos-path", "--link", "third_party", cwd=tmp_path)
    assert linked.returncode == 0, linked.stderr
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    result = subprocess.run(
        [str(BUF), "generate"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    made = sorted(
        p.relative_to(tmp_path / "gen").as_posix() for p in (tmp_path / "gen").rglob("*.py")
    )
    assert made == [
        "hostile/editions/v1/editions_pb2.py",
        "hostile/editions/v1/editions_rpckit.py",
        "hostile/names/v1/names_pb2.py",
        "hostile/names/v1/names_rpckit.py",
    ]


LIBRARY = "aip/library/v1/library.proto"
LIBRARY_IMPL = """
from aip.library.v1.library_rpckit import UnimplementedLibrary


class Books(UnimplementedLibrary):
    pass
"""


def test_serve_refuses_code_generated_from_an_older_proto(tmp_path: Path) -> None:
    """Issue 16, item 4: the module records its .proto's digest; ``rpckit serve`` refuses,
    in one line, a module whose ``protos/`` file changed since, and checks nothing when the
    file is not there (an installed package)."""
    (tmp_path / "protos/aip/library/v1").mkdir(parents=True)
    proto = tmp_path / "protos" / LIBRARY
    shutil.copy(HOSTILE / LIBRARY, proto)
    (tmp_path / "books.py").write_text(LIBRARY_IMPL)
    generated = _rpckit("generate", cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr
    module = (tmp_path / "aip/library/v1/library_rpckit.py").read_text()
    assert f'__rpckit_source__: Final = ("{LIBRARY}", "sha256:' in module

    proto.write_text(proto.read_text() + "\n// Reviewed.\n")
    served = Served("books:Books", "--http", "127.0.0.1:0", cwd=str(tmp_path))
    with served:
        output = served.rest()
    assert served.process.returncode == 1
    assert output == (
        "rpckit: aip/library/v1/library_rpckit.py was generated from an older "
        "protos/aip/library/v1/library.proto; run rpckit generate"
    )

    shutil.rmtree(tmp_path / "protos")  # no source on disk: nothing to compare
    with Served("books:Books", "--http", "127.0.0.1:0", cwd=str(tmp_path)) as served:
        served.ports(("HTTP",))
