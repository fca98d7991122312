"""Runs protoc from grpcio-tools with the include paths rpckit's users need.

``google/api/*.proto`` come from the installed googleapis-common-protos package,
``google/protobuf/*.proto`` from grpcio-tools, and ``rpckit/v1/*.proto`` from rpckit itself.

Output is only ever the files protoc and rpckit generate for the named protos: no
``__init__.py`` is written (generated directories are namespace packages), so a schema in
``google/`` or ``grpc/`` cannot hide the installed ``protobuf`` or ``grpcio``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import google.api
from google.protobuf import descriptor_pb2

from rpckit.codegen.generator import generate_files
from rpckit.service import proto_digest

__all__ = [
    "ProtocError",
    "bundled_include_paths",
    "import_clashes",
    "include_paths",
    "link_includes",
    "run_protoc",
]


class ProtocError(Exception):
    """protoc rejected the input; it has already printed its diagnostics on stderr."""


def bundled_include_paths() -> list[Path]:
    """The include directories of googleapis-common-protos, grpcio-tools and rpckit."""
    import grpc_tools

    api_dir = Path(next(iter(google.api.__path__)))
    return [
        api_dir.parent.parent,
        Path(next(iter(grpc_tools.__path__))) / "_proto",
        Path(__file__).resolve().parent.parent / "_proto",
    ]


def include_paths(user_paths: Sequence[Path]) -> list[Path]:
    """The user's include paths followed by those of googleapis, protobuf and rpckit."""
    googleapis, protobuf, own = bundled_include_paths()
    paths = [*user_paths, googleapis, protobuf]
    if not any((p / "rpckit" / "v1" / "stream.proto").is_file() for p in user_paths):
        paths.append(own)
    return paths


def run_protoc(
    protos: Sequence[str],
    *,
    proto_paths: Sequence[Path],
    out: Path,
    grpc_python: bool = False,
    descriptor_sets: Sequence[Path] = (),
) -> list[Path]:
    """Generate ``_pb2.py``, ``_pb2.pyi`` and ``_rpckit.py`` (and grpcio stubs if asked).

    ``protos`` are names relative to an include path (``examples/streams/v1/streams.proto``).
    ``descriptor_sets`` are compiled ``FileDescriptorSet`` files (``buf build -o``, or a
    package's embedded descriptors) searched before the include paths.
    Everything is generated in a scratch directory first, so nothing is written when protoc
    or the generator fails. Returns the files written, as protoc names them.
    Raises ``ProtocError`` (protoc printed why) or ``ValueError`` (a schema Python cannot name).
    """
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp) / "out"
        staging.mkdir()
        image = Path(tmp) / "image.binpb"
        args = ["protoc", *(f"-I{p}" for p in include_paths(proto_paths))]
        if descriptor_sets:
            args.append("--descriptor_set_in=" + os.pathsep.join(map(str, descriptor_sets)))
        args += [f"--python_out={staging}", f"--pyi_out={staging}"]
        if grpc_python:
            args.append(f"--grpc_python_out={staging}")
        args += ["--include_imports", "--include_source_info", f"--descriptor_set_out={image}"]
        args += list(protos)
        if protoc.main(args) != 0:
            raise ProtocError(f"protoc failed for {' '.join(protos)}")
        image_set = descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes())
        digests = _digests(protos, proto_paths)
        for name, text in generate_files(list(image_set.file), protos, digests).items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_text(text)
        written = []
        for source in sorted(p for p in staging.rglob("*") if p.is_file()):
            target = out / source.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(source, target)
            written.append(target)
    return written


def _digests(protos: Sequence[str], proto_paths: Sequence[Path]) -> dict[str, str]:
    """The digest of each proto's content, read where protoc read it: the first of the
    user's include paths that holds it (none for a proto from a descriptor set)."""
    found = {}
    for name in protos:
        source = next((p / name for p in proto_paths if (p / name).is_file()), None)
        if source is not None:
            found[name] = proto_digest(source.read_bytes())
    return found


def import_clashes(written: Sequence[Path], out: Path) -> list[str]:
    """A warning for each generated package that an installed one hides (``grpc/...``)."""
    warnings = []
    tops = sorted(
        {p.relative_to(out).parts[0] for p in written if len(p.relative_to(out).parts) > 1}
    )
    for top in tops:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            continue
        if spec is None or spec.origin is None or not spec.origin.endswith("__init__.py"):
            continue  # absent, or a namespace package that merges with the output
        installed = Path(spec.origin).parent
        if installed.resolve() != (out / top).resolve():
            warnings.append(
                f"warning: {out / top} cannot be imported as {top!r}: the package at "
                f"{installed} has that name; keep your .proto files under another directory"
            )
    return warnings


def link_includes(target: Path) -> list[Path]:
    """Symlink the bundled ``google/*`` and ``rpckit`` proto directories into ``target``.

    ``buf`` only reads modules inside its workspace; listing ``target`` as a module in
    ``buf.yaml`` lets ``buf generate`` resolve those imports offline. ``google/protobuf`` is
    left out: buf has its own copy. Returns the links (existing ones are replaced).
    """
    googleapis, _, own = bundled_include_paths()
    pairs = [
        (d, Path("google", d.name))
        for d in sorted((googleapis / "google").iterdir())
        if d.name != "protobuf" and _has_protos(d)
    ]
    pairs.append((own / "rpckit", Path("rpckit")))
    links = []
    for source, name in pairs:
        link = target / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(source, target_is_directory=True)
        links.append(link)
    return links


def _has_protos(directory: Path) -> bool:
    return directory.is_dir() and next(directory.rglob("*.proto"), None) is not None
