"""``protoc-gen-rpckit``: the protoc plugin, for ``buf generate`` or ``protoc --rpckit_out``."""

from __future__ import annotations

import sys

from google.protobuf.compiler import plugin_pb2

from rpckit.codegen.generator import generate_files

__all__ = ["main", "run"]


def run(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    """Answer one CodeGeneratorRequest; errors are reported to protoc, not raised."""
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    try:
        files = generate_files(list(request.proto_file), request.file_to_generate)
    except (KeyError, ValueError) as exc:
        response.error = f"protoc-gen-rpckit: {exc}"
        return response
    for name, content in files.items():
        response.file.add(name=name, content=content)
    return response


def main() -> None:
    """Read a CodeGeneratorRequest on stdin, write the response on stdout."""
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    sys.stdout.buffer.write(run(request).SerializeToString())
