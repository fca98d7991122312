"""rpckit's own Python per call and per message, in-process, against the bare handler.

In the server every bytecode costs several times what it costs here (grpc core's threads,
the kernel and the other calls run between two of them): adding 4.4 µs of pure Python to
bare grpc.aio's handler cost it 14.5 µs of server CPU per unary call, and 0.15 µs more per
streamed message cost 1.0 µs per message (``bench/README.md``). So what rpckit adds to a
call is measured here, where it is steady, and the servers are compared by
``bench/grpc_peer.py``. Three figures, each the best of ``--batches`` batches (the spread
of the batches is the noise):

- **gRPC unary**: ``generic_handler``'s method handler for ``GetDog`` (context, runner,
  responder, decode and encode) against a bare grpc.aio handler that decodes, answers and
  serializes the same messages; both awaited with a stand-in servicer context that answers
  what grpcio's would (no metadata, no deadline);
- **gRPC stream message**: ``JsonStream`` through the same handler (100,000 messages over 5
  calls) against a bare loop that takes the same messages from an async generator,
  serializes each and awaits the stand-in ``write``;
- **access log**: ``CallRunner.run`` on a unary call with ``AccessLog`` (to a plain stream
  handler on ``/dev/null``, the format ``rpckit serve`` uses) against without.

    python bench/inprocess.py [--batches 15]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

os.environ.setdefault("RPCKIT_BENCH_DOGS", "20000")

from bench.runner_service import create_service  # noqa: E402
from examples.streams.v1.streams_pb2 import Dog, GetDogRequest, JsonStreamRequest  # noqa: E402
from rpckit.call import CallRunner  # noqa: E402
from rpckit.context import Context  # noqa: E402
from rpckit.grpc.server import generic_handler  # noqa: E402
from rpckit.interceptors.access_log import AccessLog  # noqa: E402

SERVICE = "/examples.streams.v1.StreamsService/"


class StandIn:
    """What the adapter asks of grpcio's servicer context, answered as grpcio would."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("user-agent", "h2load"),)

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50312"

    def time_remaining(self) -> None:
        return None

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    def disable_next_message_compression(self) -> None:
        return None

    async def write(self, data: bytes) -> None:
        return None


class Details:
    """grpcio's handler call details."""

    invocation_metadata = ()

    def __init__(self, name: str) -> None:
        self.method = SERVICE + name


class Quiet:
    """A responder that writes nowhere (the access log figure measures the runner)."""

    async def send_headers(self, ctx: Context) -> None:
        return None

    async def send_stream(self, ctx: Context, stream: AsyncIterator[Any]) -> bool:
        return False

    async def send_message(self, ctx: Context, message: Any, event: Any) -> None:
        return None

    async def finish(self, ctx: Context, error: Any) -> None:
        return None


async def timed(units: int, run: Callable[[], Awaitable[None]]) -> float:
    """Seconds per unit of one batch (``run`` does ``units`` of them)."""
    started = time.perf_counter()
    await run()
    return (time.perf_counter() - started) / units


def cell(times: list[float]) -> str:
    ordered = sorted(times)
    return f"{ordered[0] * 1e6:.2f} µs (median {ordered[len(ordered) // 2] * 1e6:.2f})"


async def main(batches: int) -> list[tuple[str, list[float], list[float]]]:
    service = create_service([])
    runner = CallRunner()
    runner.loop = asyncio.get_running_loop()
    handler = generic_handler(service, runner)
    unary = handler.service(Details("GetDog")).unary_unary
    stream = handler.service(Details("JsonStream")).unary_stream
    stand_in = StandIn()
    request = GetDogRequest(index=3).SerializeToString()
    empty = JsonStreamRequest().SerializeToString()
    calls = 20_000
    dogs = int(os.environ["RPCKIT_BENCH_DOGS"])

    async def bare_unary(data: bytes, context: Any) -> bytes:
        got = GetDogRequest.FromString(data)
        return Dog(name=f"Dog {got.index}", age=got.index % 10).SerializeToString()

    async def many(call: Callable[[bytes, Any], Awaitable[Any]]) -> None:
        for _ in range(calls):
            await call(request, stand_in)

    async def bare_stream() -> None:
        dog = Dog(name="Dog", age=3)

        async def dogs_() -> AsyncIterator[Dog]:
            for _ in range(dogs):
                yield dog

        async for message in dogs_():
            await stand_in.write(message.SerializeToString())

    async def rpckit_stream() -> None:
        await stream(empty, stand_in)

    rows: list[tuple[str, list[float], list[float]]] = []
    bare_times: list[float] = []
    rpckit_times: list[float] = []
    for _ in range(batches):  # interleaved, so that a noisy moment hits both
        bare_times.append(await timed(calls, lambda: many(bare_unary)))
        rpckit_times.append(await timed(calls, lambda: many(unary)))
    rows.append(("gRPC unary call", bare_times, rpckit_times))
    bare_times, rpckit_times = [], []
    for _ in range(batches):
        bare_times.append(await timed(dogs, bare_stream))
        rpckit_times.append(await timed(dogs, rpckit_stream))
    rows.append(("gRPC stream message", bare_times, rpckit_times))

    handler_fn = next(fn for method, fn in service.bind() if method.name == "GetDog")
    method = next(method for method, _ in service.bind() if method.name == "GetDog")
    message = GetDogRequest(index=3)
    logger = logging.getLogger("rpckit.access")
    sink = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115  # lives with the run
    sink.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(sink)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logged = CallRunner([AccessLog()])
    for each in (runner, logged):
        each.loop = runner.loop
    quiet = Quiet()

    async def run_calls(on: CallRunner) -> None:
        for i in range(calls):
            ctx = Context(method, transport="grpc", peer="ipv4:127.0.0.1:50312")
            await on.run(ctx, handler_fn, message, quiet, owns_task=False)
            if i % 64 == 0:
                await asyncio.sleep(0)  # lets the log's timer write its batch, as a server would

    off: list[float] = []
    on: list[float] = []
    for _ in range(batches):
        off.append(await timed(calls, lambda: run_calls(runner)))
        on.append(await timed(calls, lambda: run_calls(logged)))
    access_log = logged.chain.interceptors[0]
    assert isinstance(access_log, AccessLog)
    access_log.flush()
    rows.append(("runner, access log off / on", off, on))
    return rows


def report(rows: list[tuple[str, list[float], list[float]]], batches: int) -> str:
    lines = [
        f"In-process, best of {batches} interleaved batches (median beside it); "
        f"Python {sys.version.split()[0]}",
        "",
        "| path | bare (or off) | rpckit (or on) | rpckit adds (best) |",
        "|---|---:|---:|---:|",
    ]
    for name, bare, ours in rows:
        added = (min(ours) - min(bare)) * 1e6
        lines.append(f"| {name} | {cell(bare)} | {cell(ours)} | {added:.2f} µs |")
    access = rows[-1]
    cost = (min(access[2]) - min(access[1])) * 1e6
    lines.append("")
    verdict = "PASS" if cost <= 5 else "FAIL"
    lines.append(f"{verdict}: the access log adds {cost:.2f} µs per call in-process (goal <= 5 µs)")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=15)
    args = parser.parse_args()
    print(report(asyncio.run(main(args.batches)), args.batches))
