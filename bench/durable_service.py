"""The service ``bench/durable.py`` serves: the streams example's ``Complete`` (``GET
/api/complete``), as a stamping handler, durable or not.

``rpckit serve bench.durable_service:create_service [--plain]``: without ``--plain``
``Complete`` is ``@durable`` (produced once into the stream log, every call a reader of it);
with ``--plain`` it is the very same handler as a plain server stream, the baseline. Every
``Token`` carries ``time.time_ns()`` taken just before it is yielded in ``text`` (the client
runs on the same machine, on the same clock), so a reader knows each item's produce-to-receive
time. ``tokens`` items (no upper bound here), one every ``interval_ms``; ``interval_ms=0``
yields as fast as the handler can, never awaiting (the durable writer then batches its
appends, and the plain stream merges what is produced while a send is in flight). Every other
method answers ``unimplemented``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Sequence

from examples.streams.v1.streams_pb2 import CompleteRequest, Token
from examples.streams.v1.streams_rpckit import UnimplementedStreamsService
from rpckit import Context
from rpckit.durable import durable

__all__ = ["DurableStamps", "PlainStamps", "create_service"]

#: Retention of a durable stream: every item of the longest throughput run stays readable.
MAX_ITEMS = 5_000_000
TTL_SECONDS = 600.0


async def _stamps(request: CompleteRequest) -> AsyncIterator[Token]:
    interval = request.interval_ms / 1000
    clock = time.time_ns
    if interval <= 0:
        for index in range(request.tokens):
            yield Token(text=str(clock()), index=index)
        return
    for index in range(request.tokens):
        if index:
            await asyncio.sleep(interval)
        yield Token(text=str(clock()), index=index)


class PlainStamps(UnimplementedStreamsService):
    """``Complete`` as a plain (non-durable) server stream: the baseline."""

    async def complete(self, request: CompleteRequest, ctx: Context) -> AsyncIterator[Token]:
        async for token in _stamps(request):
            yield token


class DurableStamps(UnimplementedStreamsService):
    """``Complete`` as a durable stream: the same handler under ``@durable``."""

    @durable(ttl=TTL_SECONDS, max_items=MAX_ITEMS, lease_seconds=10)
    async def complete(self, request: CompleteRequest, ctx: Context) -> AsyncIterator[Token]:
        async for token in _stamps(request):
            yield token


def create_service(argv: Sequence[str] = ()) -> UnimplementedStreamsService:
    """The ``rpckit serve`` target: ``[--plain]`` picks the baseline."""
    parser = argparse.ArgumentParser(prog="bench.durable_service")
    parser.add_argument("--plain", action="store_true", help="Complete without @durable")
    args = parser.parse_args(list(argv))
    return PlainStamps() if args.plain else DurableStamps()
