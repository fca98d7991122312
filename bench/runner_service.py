"""The service ``bench/runner.py`` serves with every rpckit version it compares.

It only uses API that every version has (the generated ``StreamsService``, ``Context``,
``RpcError``), so the same file runs on the commit before the call runner and on this one:
``GetDog`` answers a small message, ``JsonStream`` yields ``RPCKIT_BENCH_DOGS`` dogs as fast
as the transport takes them; every other method answers ``unimplemented``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from examples.streams.v1.streams_pb2 import Dog, GetDogRequest, JsonStreamRequest
from examples.streams.v1.streams_rpckit import StreamsService
from rpckit import Code, Context, RpcError

DOGS = int(os.environ.get("RPCKIT_BENCH_DOGS", "20000"))


async def _unimplemented(self: Any, request: Any, ctx: Context) -> Any:
    raise RpcError(Code.UNIMPLEMENTED, "not in this benchmark")


async def get_dog(self: Any, request: GetDogRequest, ctx: Context) -> Dog:
    return Dog(name=f"Dog {request.index}", age=request.index % 10)


async def json_stream(self: Any, request: JsonStreamRequest, ctx: Context) -> AsyncIterator[Dog]:
    dog = Dog(name="Dog", age=3)
    for _ in range(DOGS):
        yield dog


def create_service(argv: list[str]) -> StreamsService:
    """The ``rpckit serve`` target: the generated base with two real handlers."""
    methods: dict[str, Any] = dict.fromkeys(StreamsService.__abstractmethods__, _unimplemented)
    methods.update(get_dog=get_dog, json_stream=json_stream)
    service: StreamsService = type("BenchDogs", (StreamsService,), methods)()
    return service


def noop() -> Any:
    """An interceptor that overrides no hook (``--interceptor runner_service:noop``)."""
    from rpckit.interceptors import Interceptor

    return Interceptor()
