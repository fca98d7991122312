"""A reflection client for any transport: the schema a server lists (gRPC server
reflection, v1 then v1alpha), for ``rpckit call`` without local protos. The services that
answer it are ``rpckit.reflection``'s."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as pb

from rpckit.client import CallOptions, Transport
from rpckit.errors import Code, RpcError
from rpckit.reflection import SERVICE_NAMES, reflection_spec
from rpckit.service import MethodKind, MethodSpec
from rpckit.tools.schema import Schema

__all__ = ["fetch_schema"]


async def _ask(
    transport: Transport,
    method: MethodSpec[Any, Any],
    request: pb.ServerReflectionRequest,
    options: CallOptions,
) -> pb.ServerReflectionResponse:
    async with transport.server_stream(method, request, options) as responses:
        async for response in responses:
            if response.HasField("error_response"):
                error = response.error_response
                raise RpcError(Code(error.error_code), f"reflection: {error.error_message}")
            reply: pb.ServerReflectionResponse = response
            return reply
    raise RpcError(Code.INTERNAL, "reflection: no answer")


async def fetch_schema(transport: Transport, options: CallOptions | None = None) -> Schema:
    """The services a server lists, with every file they need, by reflection (v1, then
    v1alpha when the server has no v1)."""
    options = options or CallOptions()
    for name in SERVICE_NAMES:
        method = reflection_spec(name, MethodKind.SERVER_STREAM)
        ask = pb.ServerReflectionRequest(list_services="*")
        try:
            listed = await _ask(transport, method, ask, options)
        except RpcError as exc:
            if exc.code == Code.UNIMPLEMENTED and name != SERVICE_NAMES[-1]:
                continue
            raise
        break
    services = [s.name for s in listed.list_services_response.service]
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for service in services:
        ask = pb.ServerReflectionRequest(file_containing_symbol=service)
        try:
            found = await _ask(transport, method, ask, options)
        except RpcError as exc:
            if exc.code == Code.NOT_FOUND:
                continue  # listed but not described (grpcio's own health service, say)
            raise
        for data in found.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(data)
            files.setdefault(proto.name, proto)
    return Schema(files.values(), [s for s in services if s not in SERVICE_NAMES])
