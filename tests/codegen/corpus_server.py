"""Serves every generated corpus module's ``Unimplemented*`` services, one gRPC server and
one HTTP bridge per module, and prints what a client needs to call each method.

Run as a script with the corpus output on ``PYTHONPATH`` (the corpus shadows installed
packages such as ``google.longrunning``, so it is not imported into the test process):
``python corpus_server.py MODULE...`` prints one JSON line per module, then ``ready``, and
serves until stdin closes.

``corpus.grpc_health``/``corpus.grpc_reflection`` are the schemas of the installed
``grpc_health``/``grpc_reflection`` packages, which rpckit's gRPC server imports: one
descriptor pool cannot hold the same symbols twice, so the installed ``*_pb2`` names are
pointed at the generated ones (same schema) before rpckit loads them, and those modules'
servers run without rpckit's own health and reflection services (the names would clash).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import re
import sys
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from rpckit import Service

SHADOWS = "corpus."

#: A value valid for a path variable of each scalar field type (strings get ``x``).
_SAMPLES = {
    FieldDescriptor.CPPTYPE_INT32: "1",
    FieldDescriptor.CPPTYPE_INT64: "1",
    FieldDescriptor.CPPTYPE_UINT32: "1",
    FieldDescriptor.CPPTYPE_UINT64: "1",
    FieldDescriptor.CPPTYPE_DOUBLE: "1.5",
    FieldDescriptor.CPPTYPE_FLOAT: "1.5",
    FieldDescriptor.CPPTYPE_BOOL: "true",
}
_VARIABLE = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}")


def _sample(message: Descriptor, path: str) -> str:
    """A value for the (possibly nested) field ``path`` of ``message``, valid for its type."""
    *parents, leaf = path.split(".")
    for name in parents:
        field = message.fields_by_name[name]
        assert field.message_type is not None, f"{path}: {name} is not a message"
        message = field.message_type
    field = message.fields_by_name[leaf]
    if field.cpp_type == FieldDescriptor.CPPTYPE_ENUM:
        assert field.enum_type is not None
        return field.enum_type.values[-1].name
    return _SAMPLES.get(field.cpp_type, "x")


def fill_template(template: str, message: Descriptor) -> str:
    """A concrete path for a ``google.api.http`` template: each variable becomes a value
    valid for its field, its literal segments are kept, ``*`` and ``**`` are one segment."""

    def variable(match: re.Match[str]) -> str:
        value = _sample(message, match.group(1))
        segments = match.group(2)
        if segments is None:
            return value
        return "/".join(value if s in ("*", "**") else s for s in segments.split("/"))

    return _VARIABLE.sub(variable, template)


def _unimplemented(module: Any) -> list[Service]:
    """One instance of each generated ``Unimplemented*`` class, for every abstract service."""
    found: dict[str, Service] = {}
    abstract: set[str] = set()
    for cls in vars(module).values():
        if not (isinstance(cls, type) and issubclass(cls, Service)):
            continue
        if cls.__module__ != module.__name__:
            continue
        if inspect.isabstract(cls):
            abstract.add(cls.spec().name)
        elif cls.__name__.startswith("Unimplemented"):
            found[cls.spec().name] = cls()
    assert abstract, module.__name__
    assert abstract == set(found), (module.__name__, abstract, set(found))
    return [found[name] for name in sorted(found)]


def describe(name: str, services: list[Service], grpc: int, http: int) -> dict[str, Any]:
    return {
        "module": name,
        "grpc": f"127.0.0.1:{grpc}",
        "http": f"http://127.0.0.1:{http}",
        "services": [
            {
                "name": service.spec().name,
                "class": type(service).__name__,
                "methods": [
                    {
                        "name": m.name,
                        "path": m.path,
                        "kind": m.kind.value,
                        "rules": [
                            {
                                "method": r.method,
                                "template": r.path,
                                "url": fill_template(r.path, m.input.DESCRIPTOR),
                                "body": r.body,
                            }
                            for r in m.http
                        ],
                    }
                    for m in service.spec().methods
                ],
            }
            for service in services
        ],
    }


def _alias_shadowed(names: list[str]) -> None:
    """Let the installed package names of shadowed schemas resolve to the generated modules."""
    for name in names:
        if name.startswith(SHADOWS):
            generated = name.removesuffix("_rpckit") + "_pb2"
            installed = generated.removeprefix(SHADOWS)
            assert installed not in sys.modules, f"{installed} was imported before the alias"
            sys.modules[installed] = importlib.import_module(generated)


async def main(names: list[str]) -> None:
    _alias_shadowed(names)
    from rpckit.grpc import GrpcServer
    from rpckit.http import create_app
    from rpckit.serving.http_server import HttpServer

    servers: list[GrpcServer | HttpServer] = []
    try:
        for name in names:
            services = _unimplemented(importlib.import_module(name))
            own = not name.startswith(SHADOWS)
            grpc_server = GrpcServer(services, health=own, reflection=own)
            servers.append(grpc_server)
            grpc = await grpc_server.start("127.0.0.1:0")
            http_server = HttpServer(create_app(services), grace=1)
            servers.append(http_server)
            http = await http_server.start("127.0.0.1:0")
            print(json.dumps(describe(name, services, grpc, http)), flush=True)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        for server in reversed(servers):
            await (server.stop(0) if isinstance(server, GrpcServer) else server.stop())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
