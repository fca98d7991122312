"""Runs protoc from grpcio-tools with the include paths rpckit's users need.

``google/api/*.proto`` come from the installed googleapis-common-protos package,
``google/protobuf/*.proto`` from grpcio-tools, and ``rpckit/v1/*.proto`` from rpckit itself.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import google.api
from google.protobuf import descriptor_pb2

from rpckit.codegen.generator import generate_files

__all__ = ["include_paths", "run_protoc"]


def include_paths(user_paths: Sequence[Path]) -> list[Path]:
    """The user's include paths followed by those of googleapis, protobuf and rpckit."""
    import grpc_tools

    paths = list(user_paths)
    api_dir = Path(next(iter(google.api.__path__)))
    paths.append(api_dir.parent.parent)
    paths.append(Path(next(iter(grpc_tools.__path__))) / "_proto")
    if not any((p / "rpckit" / "v1" / "stream.proto").is_file() for p in user_paths):
        paths.append(Path(__file__).resolve().parent.parent / "_proto")
    return paths


def run_protoc(
    protos: Sequence[str],
    *,
    proto_paths: Sequence[Path],
    out: Path,
    grpc_python: bool = False,
) -> list[Path]:
    """Generate ``_pb2.py``, ``_pb2.pyi`` and ``_rpckit.py`` (and grpcio stubs if asked).

    ``protos`` are names relative to an include path (``examples/streams/v1/streams.proto``).
    Returns the files written.
    """
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "image.binpb"
        args = ["protoc", *(f"-I{p}" for p in include_paths(proto_paths))]
        args += [f"--python_out={out}", f"--pyi_out={out}"]
        if grpc_python:
            args.append(f"--grpc_python_out={out}")
        args += ["--include_imports", "--include_source_info", f"--descriptor_set_out={image}"]
        args += list(protos)
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed for {' '.join(protos)}")
        image_set = descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes())
    written = [out / (p.removesuffix(".proto") + "_pb2.py") for p in protos]
    written += [out / (p.removesuffix(".proto") + "_pb2.pyi") for p in protos]
    for name, text in generate_files(list(image_set.file), protos).items():
        target = out / name
        target.write_text(text)
        written.append(target)
    for p in protos:
        _ensure_packages(out, Path(p).parent)
    return written


def _ensure_packages(out: Path, package_dir: Path) -> None:
    """Create missing ``__init__.py`` files so the generated modules import as packages."""
    parts = package_dir.parts
    for i in range(1, len(parts) + 1):
        init = out.joinpath(*parts[:i], "__init__.py")
        if not init.exists() and os.access(init.parent, os.W_OK):
            init.touch()
