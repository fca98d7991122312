"""The streams example with two test-only changes, for tests/durable/test_cluster.py
(``rpckit serve tests.durable.durable_service:create_service``):

- ``Complete`` logs ``complete: handler stopped at <time.time()>`` when its handler is
  cancelled (a stream cancel reaches the producer as a cancellation of the handler), so a test
  measures how soon after a cancel the producing instance's handler stops;
- ``JsonStream`` is durable with a retention of ``RETAINED`` items: ten dogs, of which only the
  last ones are kept, so an offset from the start expires.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from examples.streams.server import MAX_TOKENS, StreamsExample, sample_files
from examples.streams.v1.streams_pb2 import CompleteRequest, Dog, JsonStreamRequest, Token
from rpckit import Context
from rpckit.durable import durable

log = logging.getLogger("examples.streams")

#: JsonStream's retention (items): fewer than its ten dogs.
RETAINED = 5
DOGS = 10


class ClusterExample(StreamsExample):
    @durable(ttl=600, max_items=MAX_TOKENS + 1, lease_seconds=3)
    async def complete(self, request: CompleteRequest, ctx: Context) -> AsyncIterator[Token]:
        try:
            async for token in super().complete(request, ctx):
                yield token
        except asyncio.CancelledError:
            log.info("complete: handler stopped at %.6f", time.time())
            raise

    @durable(ttl=600, max_items=RETAINED, lease_seconds=3)
    async def json_stream(  # type: ignore[override]
        self, request: JsonStreamRequest, ctx: Context
    ) -> AsyncIterator[Dog]:
        interval = (request.interval_ms if request.HasField("interval_ms") else 0) / 1000
        for count in range(DOGS):
            if count and interval:
                await asyncio.sleep(interval)
            yield Dog(name=f"Dog {count}", age=count)


def create_service(argv: Sequence[str] = ()) -> ClusterExample:
    return ClusterExample(Path(argv[0]) if argv else sample_files())
