"""gRPC server reflection on both transports, and a reflection client for any transport.

The bridge serves ``grpc.reflection.v1.ServerReflection`` and ``...v1alpha...`` over Connect
so that ``rpckit call http://...`` needs no local protos. HTTP/1.1 has no bidi streams, so
the bridge answers one request per call (a half-duplex stream); the client asks one
question per call on every transport, which any gRPC reflection server also answers.

The gRPC server serves the same answers as a bidi stream (the protocol's shape). On both
transports reflection is an ordinary rpckit service run by the call runner, so the
server's interceptors see it like any method: an auth interceptor that guards every
method keeps a protected server from listing its schema to strangers, on gRPC as on HTTP
(one that guards some methods by name leaves reflection open on both).
"""

from __future__ import annotations

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
    "GrpcReflection",
    "ReflectionService",
    "answer",
    "grpc_reflection_services",
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
            return _files(request, pool.FindFileByName(request.file_by_filename))
        if kind == "file_containing_symbol":
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
    return pb.ServerReflectionResponse(
        original_request=request,
        file_descriptor_response=pb.FileDescriptorResponse(file_descriptor_proto=protos),
    )


class ReflectionService(Service):
    """Reflection as an ordinary rpckit service, so the bridge serves it over Connect.

    Declared server-streaming: one request in, its answer out (half-duplex over HTTP/1.1).
    """

    __rpckit_spec__ = ServiceSpec(
        SERVICE_NAMES[1], (reflection_spec(SERVICE_NAMES[1], MethodKind.SERVER_STREAM),)
    )

    def __init__(self, services: Iterable[str], pool: descriptor_pool.DescriptorPool | None = None):
        self.names = [*services, *SERVICE_NAMES]
        self.pool = pool or descriptor_pool.Default()

    async def server_reflection_info(
        self, request: pb.ServerReflectionRequest, ctx: Context
    ) -> AsyncIterator[pb.ServerReflectionResponse]:
        """Answer the one request of this call."""
        yield answer(request, self.names, self.pool)


class _ReflectionV1(ReflectionService):
    __rpckit_spec__ = ServiceSpec(
        SERVICE_NAMES[0], (reflection_spec(SERVICE_NAMES[0], MethodKind.SERVER_STREAM),)
    )


def reflection_services(services: Sequence[Service]) -> list[Service]:
    """The v1 and v1alpha reflection services describing ``services`` (for the bridge)."""
    names = [s.spec().name for s in services]
    return [_ReflectionV1(names), ReflectionService(names)]


class GrpcReflection(ReflectionService):
    """Reflection for the gRPC server: a bidi stream answering each request in turn."""

    __rpckit_spec__ = ServiceSpec(
        SERVICE_NAMES[1], (reflection_spec(SERVICE_NAMES[1], MethodKind.BIDI_STREAM),)
    )

    async def server_reflection_info(  # bidi: a stream of requests in
        self, requests: AsyncIterator[pb.ServerReflectionRequest], ctx: Context
    ) -> AsyncIterator[pb.ServerReflectionResponse]:
        """Answer every request of the stream, in order."""
        async for request in requests:
            yield answer(request, self.names, self.pool)


class _GrpcReflectionV1(GrpcReflection):
    __rpckit_spec__ = ServiceSpec(
        SERVICE_NAMES[0], (reflection_spec(SERVICE_NAMES[0], MethodKind.BIDI_STREAM),)
    )


def grpc_reflection_services(names: Sequence[str]) -> list[Service]:
    """The v1 and v1alpha reflection services of a gRPC server serving ``names`` (its
    services, health included; reflection lists itself)."""
    return [_GrpcReflectionV1(names), GrpcReflection(names)]
