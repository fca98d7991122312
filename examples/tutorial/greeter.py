"""The tutorial's service: ``rpckit serve greeter:Greeter --grpc ... --http ...``."""

import asyncio
from collections.abc import AsyncIterator

from greet.v1.greet_pb2 import GreetManyRequest, GreetRequest, GreetResponse
from greet.v1.greet_rpckit import GreeterService

from rpckit import Code, Context, RpcError


class Greeter(GreeterService):
    """Greets people: one, many times, or all at once."""

    async def greet(self, request: GreetRequest, ctx: Context) -> GreetResponse:
        if not request.name:
            raise RpcError(Code.INVALID_ARGUMENT, "name is required")
        word = ctx.request_headers.get("x-greeting", "Hello")
        return GreetResponse(greeting=f"{word}, {request.name}!")

    async def greet_many(
        self, request: GreetManyRequest, ctx: Context
    ) -> AsyncIterator[GreetResponse]:
        if request.count > 100 or request.interval_ms > 10_000:
            raise RpcError(Code.INVALID_ARGUMENT, "count <= 100 and interval_ms <= 10000")
        for number in range(request.count):
            if number:
                await asyncio.sleep(request.interval_ms / 1000)
            yield GreetResponse(greeting=f"Hello #{number + 1}, {request.name}!")

    async def greet_all(self, requests: AsyncIterator[GreetRequest], ctx: Context) -> GreetResponse:
        names = [request.name async for request in requests]
        return GreetResponse(greeting=f"Hello, {' and '.join(names) or 'nobody'}!")

