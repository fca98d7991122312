"""Code generation: committed files are fresh, the plugin works under protoc, output is typed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from examples.streams.v1 import streams_rpckit
from rpckit import HttpRule, Idempotency, MethodKind
from rpckit.codegen import run_protoc
from rpckit.codegen.generator import snake_case
from rpckit.codegen.plugin import run
from rpckit.codegen.protoc import include_paths
from tests.support import ROOT

PROTOS = ["rpckit/v1/stream.proto", "examples/streams/v1/streams.proto"]
# protoc stamps its own version into _pb2 files; everything else must match exactly.
VERSION_MARKERS = ("# Protobuf Python Version:", "_runtime_version.ValidateProtobufRuntimeVersion")


def _comparable(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    if path.name.endswith("_pb2.py"):
        return [
            ln
            for ln in lines
            if not ln.startswith(VERSION_MARKERS) and "_protobuf_runtime" not in ln
        ]
    return lines


def test_committed_generated_code_is_fresh(tmp_path: Path) -> None:
    written = run_protoc(PROTOS, proto_paths=[ROOT / "protos"], out=tmp_path)
    names = sorted(str(p.relative_to(tmp_path)) for p in written)
    assert names == sorted(
        [
            "examples/streams/v1/streams_pb2.py",
            "examples/streams/v1/streams_pb2.pyi",
            "examples/streams/v1/streams_rpckit.py",
            "rpckit/v1/stream_pb2.py",
            "rpckit/v1/stream_pb2.pyi",
        ]
    )
    for name in names:
        assert _comparable(tmp_path / name) == _comparable(ROOT / name), (
            f"{name} is stale: run `rpckit generate`"
        )


@pytest.mark.process
def test_plugin_under_protoc(tmp_path: Path) -> None:
    """protoc runs the installed protoc-gen-rpckit executable, as buf generate would."""
    plugin = Path(sys.executable).parent / "protoc-gen-rpckit"
    assert plugin.exists(), "protoc-gen-rpckit is installed as a console script"
    includes = [f"-I{p}" for p in include_paths([ROOT / "protos"])]
    result = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", *includes,
         f"--plugin=protoc-gen-rpckit={plugin}", f"--rpckit_out={tmp_path}",
         "examples/streams/v1/streams.proto"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = tmp_path / "examples/streams/v1/streams_rpckit.py"
    committed = (ROOT / "examples/streams/v1/streams_rpckit.py").read_text()
    # the plugin sees no file content, so it records no source (rpckit generate does)
    assert "__rpckit_source__" not in out.read_text()
    assert out.read_text() == _without_source(committed)


def _without_source(module: str) -> str:
    """A generated module without the block recording its .proto's digest."""
    lines = module.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("# The .proto this"))
    end = next(i for i, line in enumerate(lines) if line.startswith("__rpckit_source__"))
    return "\n".join(lines[: start - 1] + lines[end + 1 :])


def test_plugin_reports_errors_to_protoc() -> None:
    request = plugin_pb2.CodeGeneratorRequest(file_to_generate=["missing.proto"])
    response = run(request)
    assert response.error.startswith("protoc-gen-rpckit:")
    assert not response.file


def test_files_without_services_produce_nothing() -> None:
    proto = descriptor_pb2.FileDescriptorProto(name="plain.proto", package="p")
    proto.message_type.add(name="M")
    request = plugin_pb2.CodeGeneratorRequest(file_to_generate=["plain.proto"], proto_file=[proto])
    assert list(run(request).file) == []


@pytest.mark.parametrize(
    ("name", "snake"),
    [
        ("GetDog", "get_dog"),
        ("UploadAsByteStream", "upload_as_byte_stream"),
        ("HTTPGet", "http_get"),
        ("GetV2Item", "get_v2_item"),
        ("Import", "import_"),
    ],
)
def test_snake_case(name: str, snake: str) -> None:
    assert snake_case(name) == snake


def test_method_table_matches_the_proto() -> None:
    spec = streams_rpckit.STREAMS_SERVICE
    assert spec.name == "examples.streams.v1.StreamsService"
    kinds = {m.name: m.kind for m in spec.methods}
    assert kinds == {
        "TextStream": MethodKind.SERVER_STREAM,
        "JsonStream": MethodKind.SERVER_STREAM,
        "UploadAsByteStream": MethodKind.CLIENT_STREAM,
        "DownloadAsFileStream": MethodKind.SERVER_STREAM,
        "DownloadFile": MethodKind.SERVER_STREAM,
        "ListFiles": MethodKind.UNARY,
        "UploadFileAsFileStream": MethodKind.CLIENT_STREAM,
        "AdoptDogs": MethodKind.CLIENT_STREAM,
        "GetDog": MethodKind.UNARY,
        "Chat": MethodKind.BIDI_STREAM,
        "UploadWithProgress": MethodKind.BIDI_STREAM,
        "Complete": MethodKind.SERVER_STREAM,
    }
    get_dog = spec.by_name["GetDog"]
    assert get_dog.idempotency is Idempotency.NO_SIDE_EFFECTS
    assert get_dog.http == (HttpRule("GET", "/api/dogs/{index}"),)
    assert get_dog.path == "/examples.streams.v1.StreamsService/GetDog"
    assert spec.by_name["UploadAsByteStream"].http == (
        HttpRule("POST", "/api/upload_as_bytestream", body="*"),
    )
    assert spec.by_name["Chat"].http == ()


def test_service_base_is_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        streams_rpckit.StreamsService()  # type: ignore[abstract]


@pytest.mark.process
def test_cli_generate(tmp_path: Path) -> None:
    """Every file written is listed, grpcio stubs included, and no ``__init__.py`` is made."""
    result = subprocess.run(
        [sys.executable, "-m", "rpckit", "generate", "--out", str(tmp_path), "--grpc-python"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    listed = sorted(Path(line).relative_to(tmp_path).as_posix() for line in result.stdout.split())
    on_disk = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert listed == on_disk
    assert "examples/streams/v1/streams_rpckit.py" in listed
    assert "examples/streams/v1/streams_pb2_grpc.py" in listed
    assert not [name for name in listed if name.endswith("__init__.py")]
