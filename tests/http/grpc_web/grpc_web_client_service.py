"""The example with error details, and GetDog echoing ``x-echo``/``x-echo-bin`` request
metadata into response headers and trailers: what
tests/http/grpc_web/test_grpc_web_client.py serves."""

from __future__ import annotations

from collections.abc import Sequence

from examples.streams.v1.streams_pb2 import Dog, GetDogRequest
from rpckit import Context
from tests.http.grpc_web.grpc_web_service import DetailedExample
from tests.http.grpc_web.grpc_web_service import create_service as create_detailed

__all__ = ["EchoExample", "create_service"]


class EchoExample(DetailedExample):
    """GetDog sends ``x-echo`` back as a header and ``x-echo-bin`` back as a trailer."""

    async def get_dog(self, request: GetDogRequest, ctx: Context) -> Dog:
        echo = ctx.request_headers.get("x-echo")
        if echo is not None:
            ctx.response_headers["x-echo"] = echo
        raw = ctx.request_headers.get_bytes("x-echo-bin")
        if raw is not None:
            ctx.response_trailers["x-echo-bin"] = raw[::-1]
        return await super().get_dog(request, ctx)


def create_service(argv: Sequence[str] = ()) -> EchoExample:
    return EchoExample(create_detailed(argv).files_dir)
