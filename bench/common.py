"""What the benchmarks share: the example service with only the method under test."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.streams.v1.streams_pb2 import (  # noqa: E402 - after the path set-up above
    Dog,
    JsonStreamRequest,
)
from examples.streams.v1.streams_rpckit import UnimplementedStreamsService  # noqa: E402
from rpckit import Context  # noqa: E402

__all__ = ["ROOT", "RpckitDogs", "Unimplemented", "bare_ndjson_app", "serve_on_uvicorn"]

_NOT_HERE = "not in this benchmark"


#: Every method answers unimplemented; a benchmark overrides the one it measures.
Unimplemented = UnimplementedStreamsService


class RpckitDogs(Unimplemented):
    """json_stream is an async generator of ``count`` dogs; nothing else is implemented."""

    def __init__(self, count: int) -> None:
        self.count = count

    async def json_stream(self, request: JsonStreamRequest, ctx: Context) -> AsyncIterator[Dog]:
        for i in range(self.count):
            yield Dog(name=f"Dog {i}", age=i % 10)


def bare_ndjson_app(count: int, path: str) -> object:
    """The peer: a bare Starlette ``StreamingResponse`` of ``count`` dogs as NDJSON at ``path``."""
    import json

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def dogs(request: Request) -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(count):
                yield (json.dumps({"name": f"Dog {i}", "age": i % 10}) + "\n").encode()

        return StreamingResponse(gen(), media_type="application/x-ndjson")

    return Starlette(routes=[Route(path, dogs, methods=["GET"])])


async def serve_on_uvicorn(app: object, port: int = 0) -> None:
    """Serve ``app`` on uvicorn at 127.0.0.1:``port`` (0: a free one) inside a benchmark's
    server subprocess: prints "port loop http" once ready, stops when stdin closes."""
    import asyncio
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task  # raises what went wrong
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    http = getattr(config, "http_protocol_class", None)
    http_name = getattr(http, "__module__", "?").rsplit(".", 1)[-1].removesuffix("_impl")
    loop_name = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
    print(port, loop_name, http_name, flush=True)
    # The parent closes our stdin (or dies) to stop us.
    await loop.run_in_executor(None, sys.stdin.read)
    server.should_exit = True
    await task
