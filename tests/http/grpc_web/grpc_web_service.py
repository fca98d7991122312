"""The streams example with error details: what tests/http/grpc_web/test_grpc_web.py serves through
``rpckit serve tests.http.grpc_web.grpc_web_service:create_service``."""

from __future__ import annotations

from collections.abc import Sequence

from google.rpc import error_details_pb2

from examples.streams.server import DOG_COUNT, StreamsExample
from examples.streams.server import create_service as create_example
from examples.streams.v1.streams_pb2 import Dog, GetDogRequest
from rpckit import Code, Context, RpcError

__all__ = ["DetailedExample", "create_service"]


class DetailedExample(StreamsExample):
    """GetDog's not_found carries a ``google.rpc.ErrorInfo`` and a trailer."""

    async def get_dog(self, request: GetDogRequest, ctx: Context) -> Dog:
        if request.index >= DOG_COUNT:
            ctx.response_trailers["x-dog-count"] = str(DOG_COUNT)
            info = error_details_pb2.ErrorInfo(
                reason="NO_SUCH_DOG",
                domain="example.rpckit",
                metadata={"index": str(request.index)},
            )
            raise RpcError(Code.NOT_FOUND, f"no dog {request.index}; there are {DOG_COUNT}", [info])
        return await super().get_dog(request, ctx)


def create_service(argv: Sequence[str] = ()) -> DetailedExample:
    example = create_example(argv)
    return DetailedExample(example.files_dir)
