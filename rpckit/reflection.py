"""gRPC server reflection on both transports, and a reflection client for any transport.

The gRPC server and the bridge (Connect, gRPC-Web, WebSocket) serve
``grpc.reflection.v1.ServerReflection`` and ``...v1alpha...`` as the same bidi stream, each
request answered as it arrives, so ``rpckit call`` and ``buf curl --reflect`` need no local
protos on either port. rpckit's own client asks one question per call (a bidi stream of one
request), which any gRPC reflection server answers, and which HTTP/1.1 carries. On both
transports reflection is an ordinary rpckit service run by the call runner, so the
server's interceptors see it like any method: an auth interceptor that guards every
method keeps a protected server from listing its schema to strangers, on gRPC as on HTTP
(one that guards some methods by name leaves reflection open on both).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection_pb2 as pb

from rpckit.context import Context
from rpckit.errors import Code
from rpckit.service import MethodKind, MethodSpec, Service, ServiceSpec

__all__ = [
    "SERVICE_NAMES",
    "ReflectionService",
    "answer",
    "reflection_services",
    "reflection_spec",
]  # fmt: skip

#: v1 and v1alpha share one wire format; rpckit uses grpcio-reflection's v1alpha classes.
SERVICE_NAMES = ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection")


def reflection_spec(service: str, kind: MethodKind) -> MethodSpec[Any, Any]:
    """The ``ServerReflectionInfo`` method of one reflection service name, in ``kind``'s shape
    (a bidi stream on gRPC; one answer per call where HTTP/1.1 cannot stream both ways)."""
    return MethodSpec(
        service=service,
        name="ServerReflectionInfo",
        handler="server_reflection_info",
        kind=kind,
        input=pb.ServerReflectionRequest,
        output=pb.ServerReflectionResponse,
    )


def answer(
    request: pb.ServerReflectionRequest,
    services: Sequence[str],
    pool: descriptor_pool.DescriptorPool,
) -> pb.ServerReflectionResponse:
    """The reply to one reflection request (pure: a lookup in ``pool``)."""
    kind = request.WhichOneof("message_request")
    try:
        if kind == "list_services":
            listed = [pb.ServiceResponse(name=name) for name in sorted(services)]
            return pb.ServerReflectionResponse(
                original_request=request,
                list_services_response=pb.ListServiceResponse(service=listed),
            )
        if kind == "file_by_filename":
            if request.file_by_filename == _V1_FILE:
                return _file_list(request, [_v1_file()])
            return _files(request, pool.FindFileByName(request.file_by_filename))
        if kind == "file_containing_symbol":
            if request.file_containing_symbol.startswith(_V1_PACKAGE):
                return _file_list(request, [_v1_file()])
            return _files(request, pool.FindFileContainingSymbol(request.file_containing_symbol))
        if kind == "file_containing_extension":
            ask = request.file_containing_extension
            extension = pool.FindExtensionByNumber(
                pool.FindMessageTypeByName(ask.containing_type), ask.extension_number
            )
            return _files(request, pool.FindFileContainingSymbol(extension.full_name))
        if kind == "all_extension_numbers_of_type":
            message = pool.FindMessageTypeByName(request.all_extension_numbers_of_type)
            numbers = sorted(e.number for e in pool.FindAllExtensions(message))
            return pb.ServerReflectionResponse(
                original_request=request,
                all_extension_numbers_response=pb.ExtensionNumberResponse(
                    base_type_name=message.full_name, extension_number=numbers
                ),
            )
    except KeyError:
        return _error(request, Code.NOT_FOUND, "not found")
    return _error(request, Code.INVALID_ARGUMENT, "unknown reflection request")


def _error(request: pb.ServerReflectionRequest, code: Code, text: str) -> Any:
    return pb.ServerReflectionResponse(
        original_request=request,
        error_response=pb.ErrorResponse(error_code=int(code), error_message=text),
    )


def _files(request: pb.ServerReflectionRequest, root: FileDescriptor) -> Any:
    """The file and everything it imports, as serialized FileDescriptorProtos."""
    seen: dict[str, FileDescriptor] = {}
    stack = [root]
    while stack:
        current = stack.pop()
        if current.name in seen:
            continue
        seen[current.name] = current
        stack.extend(current.dependencies)
    protos = []
    for descriptor in seen.values():
        proto = descriptor_pb2.FileDescriptorProto()
        descriptor.CopyToProto(proto)
        protos.append(proto.SerializeToString())
    return _file_list(request, protos)


def _file_list(request: pb.ServerReflectionRequest, protos: Sequence[bytes]) -> Any:
    return pb.ServerReflectionResponse(
        original_request=request,
        file_descriptor_response=pb.FileDescriptorResponse(file_descriptor_proto=protos),
    )


_V1_PACKAGE = "grpc.reflection.v1."
_V1_FILE = "grpc/reflection/v1/reflection.proto"


@functools.cache
def _v1_file() -> bytes:
    """The v1 reflection file, which no PyPI package ships (grpcio-reflection has v1alpha
    only): v1alpha's descriptor under v1's file and package names, the messages being the
    same on the wire. Served, never added to a pool, so it cannot clash with a real one."""
    proto = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(proto)
    alpha = proto.package
    proto.name = _V1_FILE
    proto.package = _V1_PACKAGE.rstrip(".")
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(f".{alpha}.", f".{proto.package}.")
            method.output_type = method.output_type.replace(f".{alpha}.", f".{proto.package}.")
    for message in proto.message_type:
        for field in message.field:
            if field.type_name:
                field.type_name = field.type_name.replace(f".{alpha}.", f".{proto.package}.")
    proto.ClearField("options")
    return proto.SerializeToString()


class ReflectionService(Service):
    """Reflection as an ordinary rpckit service, on gRPC and on the bridge alike: a bidi
    stream answering each request as it arrives (the protocol's shape). On the bridge that
    lets ``buf curl --reflect`` work on the HTTP port over HTTP/2, and a client that asks
    one question at a time over HTTP/1.1 gets each answer before it asks the next; a
    one-question call (``rpckit call``) is a bidi stream of one request."""

    __rpckit_spec__ = ServiceSpec(
        SERVICE_NAMES[1], (reflection_spec(SERVICE_NAMES[1], MethodKind.BIDI_STREAM),)
    )

    def __init__(self, services: Iterable[str], pool: descriptor_pool.DescriptorPool | None = None):
        self.names = [*services, *SERVICE_NAMES]
        self.pool = pool or descriptor_pool.Default()

    async def server_reflection_info(
        self, requests: AsyncIterator[pb.ServerReflectionRequest], ctx: Context
    ) -> AsyncIterator[pb.ServerReflectionResponse]:
        """Answer every request of the stream, in order."""
        async for request in requests:
            yield answer(request, self.names, self.pool)


class _ReflectionV1(ReflectionService):
    __rpckit_spec__ = ServiceSpec(
        SERVICE_NAMES[0], (reflection_spec(SERVICE_NAMES[0], MethodKind.BIDI_STREAM),)
    )


def reflection_services(names: Sequence[str]) -> list[Service]:
    """The v1 and v1alpha reflection services of a server serving the services ``names``
    (reflection lists itself)."""
    return [_ReflectionV1(names), ReflectionService(names)]
