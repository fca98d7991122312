"""The public API, pinned (after httpx's ``tests/test_exported_members.py``).

The public modules are the ones users import: the ones the docs, the examples and the
generated ``*_rpckit.py`` modules name. Every other module under ``rpckit`` is internal:
its ``__all__`` says what its siblings may import from it, and may change freely.

- Each public module's ``__all__`` is the table below: a name added or removed fails
  until the table says so (a change to the public API is then a visible line in a diff).
- Every ``__all__`` name, in every module, exists.
- No module leaves out of its ``__all__`` a name another rpckit module imports from it.
- The package faces (``rpckit``, ``rpckit.grpc``, ``rpckit.http``, ``rpckit.serving``)
  expose nothing public beyond their ``__all__``.
- The names generated code imports from rpckit are pinned too, are in their modules'
  ``__all__``, and are what the generator emits (checked on fresh output and on the
  committed example).
- The examples and the docs' code import rpckit names only from public modules' ``__all__``.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

import rpckit
from rpckit.codegen import generator

ROOT = Path(__file__).resolve().parent.parent

#: The public modules and their ``__all__``, sorted. Also listed in
#: examples/site/docs/reference.md's introduction.
PUBLIC: dict[str, list[str]] = {
    "rpckit": [
        "ByteStream",
        "Code",
        "Context",
        "Event",
        "FileStream",
        "HttpRule",
        "Idempotency",
        "Metadata",
        "MethodKind",
        "MethodSpec",
        "RpcError",
        "Sender",
        "ServerStream",
        "Service",
        "ServiceSpec",
        "Streaming",
        "TextStream",
    ],
    "rpckit.client": [
        "AsyncClosing",
        "CallOptions",
        "Closing",
        "ResponseMetadata",
        "Resuming",
        "ResumingSync",
        "StreamCall",
        "StreamCallSync",
        "Transport",
        "TransportSync",
        "as_async_iterable",
        "as_iterable",
        "request_metadata",
    ],
    "rpckit.context": [
        "CallStats",
        "Context",
        "Dialect",
        "HeaderSender",
        "Transport",
        "UNKNOWN_COMPRESSION",
    ],
    "rpckit.durable": ["Durability", "durable"],
    "rpckit.encodings": [
        "CborEncoding",
        "Encoding",
        "EncodingRegistry",
        "JsonEncoding",
        "MsgPackEncoding",
        "ProtoEncoding",
        "connect_codec",
        "encodings",
        "from_tree",
        "get",
        "media_type",
        "register",
    ],
    "rpckit.errors": ["Code", "RpcError", "message_too_large"],
    "rpckit.files": [
        "BadFileName",
        "content_disposition",
        "parse_content_disposition",
        "relative_parts",
        "sanitize_filename",
        "truncate_utf8",
    ],
    "rpckit.grpc": ["GrpcServer", "GrpcTransport", "GrpcTransportSync", "generic_handler"],
    "rpckit.http": [
        "Bridge",
        "BridgeOptions",
        "ConnectTransport",
        "ConnectTransportSync",
        "Cors",
        "GrpcWebTransport",
        "GrpcWebTransportSync",
        "Lifecycle",
        "RestTransport",
        "RestTransportSync",
        "WebSocketTransport",
        "create_app",
    ],
    "rpckit.interceptors": [
        "ClientCall",
        "ClientInterceptor",
        "ClientOutcome",
        "InterceptedTransport",
        "InterceptedTransportSync",
        "Interceptor",
        "InterceptorChain",
        "Outcome",
        "intercept",
        "intercept_sync",
    ],
    "rpckit.interceptors.access_log": ["AccessLog", "access_fields", "format_fields"],
    "rpckit.interceptors.auth": [
        "ApiKeyAuth",
        "BearerAuth",
        "Credentials",
        "MethodSelector",
        "Verify",
        "static_tokens",
    ],
    "rpckit.interceptors.otel": [
        "OpenTelemetry",
        "OpenTelemetryClient",
        "SYSTEM_NAMES",
        "configure_otlp",
        "otlp_exporters",
        "peer_address",
        "system_name",
    ],
    "rpckit.interceptors.validation": ["Validate", "field_path", "violations_error"],
    "rpckit.metadata": ["Metadata", "MetadataLike", "decode_bin"],
    "rpckit.numbers": ["MAX_DIGITS", "parse_int", "try_int"],
    "rpckit.service": [
        "HttpRule",
        "Idempotency",
        "MethodKind",
        "MethodSpec",
        "PROTO_ROOT",
        "ServerStream",
        "Service",
        "ServiceSpec",
        "generated_base",
        "proto_digest",
        "resolve_stream",
        "stale_source",
        "unimplemented_class",
        "unmatched_handlers",
    ],
    "rpckit.serving": [
        "DrainOptions",
        "HealthPaths",
        "HttpTimeouts",
        "SERVE_FLAGS",
        "ServeOptions",
        "TlsFiles",
        "parse_workers",
    ],
    "rpckit.serving.http_server": [
        "GranianServer",
        "HttpServer",
        "SERVERS",
        "ServerKind",
        "TlsFiles",
        "bind_tcp",
        "create_http_server",
        "split_address",
    ],
    "rpckit.streams": [
        "ByteStream",
        "DEFAULT_BOUND",
        "Event",
        "FileStream",
        "Sender",
        "Streaming",
        "TextStream",
        "aclose",
    ],
    "rpckit.testing": [
        "BASE_URL",
        "DIALECTS",
        "Dialect",
        "InProcessBridge",
        "LoopbackGrpc",
        "StreamingASGITransport",
        "bridge_for",
        "grpc_for",
        "transport_for",
    ],
    "rpckit.tools.openapi": [
        "ERROR_SCHEMA",
        "SecuritySource",
        "document",
        "document_from_protos",
        "http_rules",
    ],
    "rpckit.wellknown": [
        "adapt_requests",
        "checked_chunks",
        "declared_size",
        "encode_stream",
        "file_headers",
        "file_upload",
        "upload_filename",
        "upload_headers",
    ],
}

#: Faces that only gather names from their submodules: nothing public beyond ``__all__``.
FACES = ("rpckit", "rpckit.grpc", "rpckit.http", "rpckit.serving")

#: What generated ``*_rpckit.py`` modules may import from rpckit (by module), sorted.
GENERATED_IMPORTS: dict[str, list[str]] = {
    "rpckit": [
        "ByteStream",
        "Code",
        "Context",
        "Event",
        "FileStream",
        "HttpRule",
        "Idempotency",
        "MethodKind",
        "MethodSpec",
        "RpcError",
        "ServerStream",
        "Service",
        "ServiceSpec",
        "TextStream",
    ],
    "rpckit.client": [
        "CallOptions",
        "ResponseMetadata",
        "StreamCall",
        "StreamCallSync",
        "Transport",
        "TransportSync",
    ],
    "rpckit.metadata": ["MetadataLike"],
}


def _all_modules() -> list[str]:
    """Every rpckit module, but the command line entry point (importing it runs it)."""
    names = ["rpckit"]
    for info in pkgutil.walk_packages(rpckit.__path__, "rpckit."):
        if info.name.rpartition(".")[2] != "__main__" and "_pb2" not in info.name:
            names.append(info.name)
    return sorted(names)


MODULES = _all_modules()


def _source(module: str) -> Path:
    path = ROOT / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _rpckit_imports(tree: ast.AST) -> Iterator[tuple[str, str]]:
    """(module, name) of every ``from rpckit... import name`` in a tree, at any depth."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
            continue
        if node.module == "rpckit" or node.module.startswith("rpckit."):
            for alias in node.names:
                yield node.module, alias.name


def _is_submodule(module: str, name: str) -> bool:
    return _source(f"{module}.{name}").exists()


# --- the public modules' __all__ -----------------------------------------------------------


def test_the_public_modules_exist_and_the_table_is_sorted() -> None:
    assert sorted(PUBLIC) == list(PUBLIC)
    for module, names in PUBLIC.items():
        assert module in MODULES
        assert names == sorted(names), module


@pytest.mark.parametrize("module", list(PUBLIC))
def test_public_module_all_is_pinned(module: str) -> None:
    exported = importlib.import_module(module).__all__
    assert len(exported) == len(set(exported)), f"{module}.__all__ repeats a name"
    assert sorted(exported) == PUBLIC[module], (
        f"{module}.__all__ changed: a change to the public API; update PUBLIC in this test"
    )


@pytest.mark.parametrize("module", FACES)
def test_faces_expose_nothing_public_beyond_all(module: str) -> None:
    face = importlib.import_module(module)
    public = {
        name
        for name in dir(face)
        if not name.startswith("_")
        and not isinstance(getattr(face, name), types.ModuleType)
        # rpckit's own objects: typing.Any or importlib's import_module are not offered
        and getattr(getattr(face, name), "__module__", "").startswith("rpckit")
    }
    assert public <= set(face.__all__)


# --- every module's __all__ ----------------------------------------------------------------


@pytest.mark.parametrize("module", MODULES)
def test_every_all_name_exists(module: str) -> None:
    imported = importlib.import_module(module)
    exported = getattr(imported, "__all__", [])
    missing = [name for name in exported if not hasattr(imported, name)]
    assert missing == []


def test_no_module_leaves_out_a_name_its_siblings_import() -> None:
    """A name one rpckit module imports from another is in the other's ``__all__`` (the
    ``__all__`` of an internal module is what its siblings may use)."""
    exports = {m: set(getattr(importlib.import_module(m), "__all__", ())) for m in MODULES}
    left_out: set[str] = set()
    for importer in MODULES:
        tree = ast.parse(_source(importer).read_text(), str(_source(importer)))
        for module, name in _rpckit_imports(tree):
            if name.startswith("_") or module.endswith("_pb2") or _is_submodule(module, name):
                continue  # generated protobuf modules have no __all__
            if module not in exports or name not in exports[module]:
                left_out.add(f"{importer}: from {module} import {name}")
    assert sorted(left_out) == []


# --- the names generated code imports ------------------------------------------------------


def test_generated_imports_are_pinned_and_public() -> None:
    emitted = {
        m: sorted(names) for m, names in generator._IMPORTS.items() if m.startswith("rpckit")
    }
    assert emitted == GENERATED_IMPORTS
    for module, names in GENERATED_IMPORTS.items():
        assert module in PUBLIC
        exported = importlib.import_module(module).__all__
        assert [name for name in names if name not in exported] == []


def _with_dependencies(descriptor: FileDescriptor) -> list[descriptor_pb2.FileDescriptorProto]:
    """A file and everything it imports, dependencies first, as protoc hands them over."""
    ordered: list[FileDescriptor] = []

    def visit(f: FileDescriptor) -> None:
        if f not in ordered:
            for dependency in f.dependencies:
                visit(dependency)
            ordered.append(f)

    visit(descriptor)
    protos = []
    for f in ordered:
        proto = descriptor_pb2.FileDescriptorProto()
        f.CopyToProto(proto)
        protos.append(proto)
    return protos


def _generated_sources() -> dict[str, str]:
    from examples.streams.v1 import streams_pb2

    fresh = generator.generate_files(
        _with_dependencies(streams_pb2.DESCRIPTOR), [streams_pb2.DESCRIPTOR.name]
    )
    committed = {
        str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / "examples").rglob("*_rpckit.py")
    }
    assert fresh
    assert committed
    return {**{f"fresh:{k}": v for k, v in fresh.items()}, **committed}


def test_generated_code_imports_only_pinned_names() -> None:
    seen: set[tuple[str, str]] = set()
    for where, source in _generated_sources().items():
        tree = ast.parse(source, where)
        for module, name in _rpckit_imports(tree):
            assert name in GENERATED_IMPORTS.get(module, []), f"{where}: {module}.{name}"
            seen.add((module, name))
        for node in ast.walk(tree):  # ``import rpckit.v1.stream_pb2 as ...`` resolves
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("rpckit."):
                        importlib.import_module(alias.name)
    assert ("rpckit", "Context") in seen
    assert ("rpckit.client", "Transport") in seen


# --- what the examples and the docs import -------------------------------------------------

_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)
_FROM_IMPORT = re.compile(r"^\s*from (rpckit(?:\.\w+)*) import \(?([\w, ]+)", re.M)


def _user_imports() -> Iterator[tuple[str, str, str]]:
    """(file, module, name) of every rpckit import in the examples' code and the docs."""
    for path in sorted((ROOT / "examples").rglob("*.py")):
        if "node_modules" in path.parts or path.name.endswith(("_pb2.py", "_rpckit.py")):
            continue
        for module, name in _rpckit_imports(ast.parse(path.read_text(), str(path))):
            yield str(path.relative_to(ROOT)), module, name
    for path in sorted((ROOT / "examples" / "site" / "docs").rglob("*.md")):
        for block in _PYTHON_BLOCK.findall(path.read_text()):
            for module, names in _FROM_IMPORT.findall(block):
                for name in filter(None, (n.strip() for n in names.split(","))):
                    yield str(path.relative_to(ROOT)), module, name


def test_examples_and_docs_import_only_public_names() -> None:
    imports = list(_user_imports())
    assert len(imports) > 20
    private = [
        f"{where}: from {module} import {name}"
        for where, module, name in imports
        if name not in PUBLIC.get(module, [])
    ]
    assert private == []
