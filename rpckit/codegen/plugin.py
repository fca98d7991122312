"""``protoc-gen-rpckit``: the protoc plugin, for ``buf generate`` or ``protoc --rpckit_out``.

It reads only services, methods and message names, which mean the same in proto2, proto3
and every edition up to 2024, so it declares editions support for that range.
"""

from __future__ import annotations

import sys

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from rpckit.codegen.generator import generate_files

__all__ = ["MAXIMUM_EDITION", "MINIMUM_EDITION", "main", "run"]

MINIMUM_EDITION = descriptor_pb2.EDITION_PROTO2
MAXIMUM_EDITION = descriptor_pb2.EDITION_2024
_FEATURES = (
    plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    | plugin_pb2.CodeGeneratorResponse.FEATURE_SUPPORTS_EDITIONS
)


def run(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    """Answer one CodeGeneratorRequest; errors are reported to protoc, not raised."""
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=_FEATURES,
        minimum_edition=MINIMUM_EDITION,
        maximum_edition=MAXIMUM_EDITION,
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
