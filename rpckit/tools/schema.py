"""A schema known at run time: file descriptors (from reflection or local protos) turned into
method specs with dynamic message classes, and a proto-like description of any symbol.

``rpckit call`` uses it to call a method it has no generated code for.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)

from rpckit.service import Idempotency, MethodKind, MethodSpec

__all__ = ["Schema", "SchemaError", "compile_protos"]


class SchemaError(Exception):
    """A schema that cannot be loaded, or a name it does not define (one-line message)."""


_KINDS = {
    (False, False): MethodKind.UNARY,
    (False, True): MethodKind.SERVER_STREAM,
    (True, False): MethodKind.CLIENT_STREAM,
    (True, True): MethodKind.BIDI_STREAM,
}


class Schema:
    """A descriptor pool of known files and the services a server says it offers."""

    def __init__(
        self, files: Iterable[descriptor_pb2.FileDescriptorProto], services: Sequence[str] = ()
    ) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        pending = {f.name: f for f in files}
        added: set[str] = set()

        def add(name: str, chain: tuple[str, ...]) -> None:
            if name in added:
                return
            proto = pending.get(name)
            if proto is None:
                raise SchemaError(f"the schema lacks {name} (imported by {chain[-1]})")
            for dependency in proto.dependency:
                add(dependency, (*chain, name))
            self.pool.Add(proto)
            added.add(name)

        for name in list(pending):
            add(name, (name,))
        self.files = added
        self.services = list(services) or sorted(
            service.full_name
            for name in added
            for service in self.pool.FindFileByName(name).services_by_name.values()
        )

    def service(self, name: str) -> ServiceDescriptor:
        """The service called ``name`` (fully qualified)."""
        try:
            return self.pool.FindServiceByName(name)
        except KeyError:
            raise SchemaError(f"no service {name!r}; known: {', '.join(self.services)}") from None

    def method(self, name: str) -> MethodDescriptor:
        """A method as ``package.Service/Method`` (or ``package.Service.Method``)."""
        service_name, slash, method_name = name.lstrip("/").rpartition("/")
        if not slash:
            service_name, _, method_name = name.rpartition(".")
        if not service_name or not method_name:
            raise SchemaError(f"expected package.Service/Method, got {name!r}")
        service = self.service(service_name)
        method = service.methods_by_name.get(method_name)
        if method is None:
            known = ", ".join(m.name for m in service.methods)
            raise SchemaError(f"{service_name} has no method {method_name!r}; it has: {known}")
        return method

    def method_spec(self, name: str) -> MethodSpec[Any, Any]:
        """A ``MethodSpec`` with dynamic message classes, callable on any rpckit transport."""
        method = self.method(name)
        options = method.GetOptions()
        return MethodSpec(
            service=method.containing_service.full_name,
            name=method.name,
            handler=method.name,
            kind=_KINDS[(method.client_streaming, method.server_streaming)],
            input=message_factory.GetMessageClass(method.input_type),
            output=message_factory.GetMessageClass(method.output_type),
            idempotency=list(Idempotency)[options.idempotency_level],
        )

    def describe(self, name: str) -> str:
        """A proto-like text for a service, method, message or enum (with the messages a
        method takes and returns)."""
        name = name.lstrip(".")
        if "/" in name:
            return _describe_method(self.method(name))
        finders = (
            self.pool.FindServiceByName,
            self.pool.FindMessageTypeByName,
            self.pool.FindEnumTypeByName,
            self.method,
        )
        for find in finders:
            try:
                found = find(name)
            except (KeyError, SchemaError):
                continue
            if isinstance(found, ServiceDescriptor):
                return _describe_service(found)
            if isinstance(found, MethodDescriptor):
                return _describe_method(found)
            if isinstance(found, Descriptor):
                return _describe_message(found)
            return _describe_enum(found)
        raise SchemaError(f"no service, method, message or enum named {name!r}")


def _signature(method: MethodDescriptor) -> str:
    arg = ("stream " if method.client_streaming else "") + method.input_type.full_name
    ret = ("stream " if method.server_streaming else "") + method.output_type.full_name
    return f"rpc {method.name}({arg}) returns ({ret});"


def _describe_service(service: ServiceDescriptor) -> str:
    lines = [f"service {service.full_name} {{"]
    lines += [f"  {_signature(m)}" for m in service.methods]
    return "\n".join([*lines, "}"])


def _describe_method(method: MethodDescriptor) -> str:
    parts = [f"{method.containing_service.full_name}.{method.name}: {_signature(method)}"]
    parts.append(_describe_message(method.input_type))
    if method.output_type is not method.input_type:
        parts.append(_describe_message(method.output_type))
    return "\n\n".join(parts)


def _field_type(field: FieldDescriptor) -> str:
    if field.message_type is not None:
        options = field.message_type.GetOptions()
        if options.map_entry:
            key, value = field.message_type.fields
            return f"map<{_field_type(key)}, {_field_type(value)}>"
        return field.message_type.full_name
    if field.enum_type is not None:
        return field.enum_type.full_name
    names = {
        value: name[len("TYPE_") :].lower()
        for name, value in vars(FieldDescriptor).items()
        if name.startswith("TYPE_")
    }
    return names[field.type]


def _describe_message(message: Descriptor) -> str:
    lines = [f"message {message.full_name} {{"]
    oneofs = {id(o): o for o in message.oneofs if not o.name.startswith("_")}
    shown: set[int] = set()
    for field in message.fields:
        oneof = field.containing_oneof
        if oneof is not None and id(oneof) in oneofs:
            if id(oneof) in shown:
                continue
            shown.add(id(oneof))
            lines.append(f"  oneof {oneof.name} {{")
            lines += [f"    {_field_type(f)} {f.name} = {f.number};" for f in oneof.fields]
            lines.append("  }")
            continue
        label = "repeated " if _repeated(field) and not _is_map(field) else ""
        lines.append(f"  {label}{_field_type(field)} {field.name} = {field.number};")
    return "\n".join([*lines, "}"])


def _repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _describe_enum(enum: EnumDescriptor) -> str:
    lines = [f"enum {enum.full_name} {{"]
    lines += [f"  {v.name} = {v.number};" for v in enum.values]
    return "\n".join([*lines, "}"])


def compile_protos(
    proto_paths: Sequence[Path], protos: Sequence[str] = ()
) -> list[descriptor_pb2.FileDescriptorProto]:
    """Compile ``protos`` (default: every .proto under ``proto_paths``) with their imports,
    using the include paths ``rpckit generate`` uses; SchemaError when protoc refuses them."""
    from grpc_tools import protoc

    from rpckit.codegen.protoc import bundled_include_paths, include_paths

    names = list(protos)
    if not names:
        installed = bundled_include_paths()[:2]
        for root in proto_paths:
            found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.proto"))
            names += [p for p in found if not any((d / p).is_file() for d in installed)]
    if not names:
        raise SchemaError(f"no .proto files under {', '.join(map(str, proto_paths))}")
    with tempfile.TemporaryDirectory() as tmp:
        image = os.path.join(tmp, "image.binpb")
        args = ["protoc", *(f"-I{p}" for p in include_paths(proto_paths))]
        args += ["--include_imports", f"--descriptor_set_out={image}", *names]
        if protoc.main(args) != 0:
            raise SchemaError(f"protoc failed for {' '.join(names)}")
        with open(image, "rb") as f:
            return list(descriptor_pb2.FileDescriptorSet.FromString(f.read()).file)
