"""Bidi over WebSocket against bidi over gRPC, and gRPC-Web server streaming against Connect,
side by side in one run, all through one ``rpckit serve`` of the streams example.

* bidi round trip: one ``Chat`` call, one message out, wait for its echo, repeated
  (``--pings``): p50/p99 latency per round trip; then ``--messages`` sent without waiting
  and read back: messages per second. Same handler, rpckit's typed client on each
  transport (``GrpcTransport`` and ``WebSocketTransport``, binary protobuf).
* server streaming: ``TextStream`` with no pause, read ``--items`` items with httpx over
  ``application/grpc-web+proto`` and ``application/connect+proto`` (same handler, same
  HTTP server), then close: items per second. Rounds alternate the two (``--rounds``).

Usage: python bench/two_way.py [--pings 2000] [--messages 20000] [--items 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import struct
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.streams.v1.streams_pb2 import ChatMessage, TextStreamRequest  # noqa: E402
from examples.streams.v1.streams_rpckit import StreamsServiceClient  # noqa: E402
from rpckit.grpc import GrpcTransport  # noqa: E402
from rpckit.http import WebSocketTransport  # noqa: E402

TEXT_STREAM = "/examples.streams.v1.StreamsService/TextStream"


async def start_server() -> tuple[asyncio.subprocess.Process, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rpckit", "serve", "examples.streams.server:create_service",
        "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--no-access-log",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    grpc = http = ""
    async with asyncio.timeout(30):
        while not (grpc and http):
            line = (await process.stdout.readline()).decode()
            if not line:
                raise SystemExit("rpckit serve exited while starting")
            if match := re.search(r"gRPC listening on (\S+)", line):
                grpc = match.group(1)
            if match := re.search(r"HTTP listening on (\S+)", line):
                http = "http://" + match.group(1)
    return process, grpc, http


class Pinger:
    """Feeds one bidi call a message whenever asked to."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[ChatMessage | None] = asyncio.Queue()

    async def requests(self) -> AsyncIterator[ChatMessage]:
        while (message := await self.queue.get()) is not None:
            yield message


async def bidi(client: StreamsServiceClient, pings: int, messages: int) -> dict[str, float]:
    pinger = Pinger()
    call = client.chat(pinger.requests())
    replies = aiter(call)
    latencies = []
    for i in range(pings):
        started = time.perf_counter()
        pinger.queue.put_nowait(ChatMessage(text=f"ping {i}"))
        await anext(replies)
        latencies.append(time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(messages):
        pinger.queue.put_nowait(ChatMessage(text=f"m {i}"))
    for _ in range(messages):
        await anext(replies)
    elapsed = time.perf_counter() - started
    pinger.queue.put_nowait(None)
    await call.aclose()
    latencies.sort()
    return {
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99) - 1] * 1e6,
        "msgs_per_s": messages / elapsed,
    }


def frame(data: bytes) -> bytes:
    return struct.pack(">BI", 0, len(data)) + data


async def server_stream(http: str, content_type: str, items: int) -> float:
    """Items per second of TextStream (no pause) over one protocol."""
    body = frame(TextStreamRequest(start=0, interval_ms=0).SerializeToString())
    headers = {"content-type": content_type}
    async with httpx.AsyncClient(base_url=http, timeout=60) as client:
        started = time.perf_counter()
        async with client.stream("POST", TEXT_STREAM, content=body, headers=headers) as response:
            seen = 0
            buffer = bytearray()
            async for chunk in response.aiter_raw():
                buffer += chunk
                while len(buffer) >= 5:
                    length = struct.unpack_from(">I", buffer, 1)[0]
                    if len(buffer) < 5 + length:
                        break
                    del buffer[: 5 + length]
                    seen += 1
                if seen >= items:
                    break
        return seen / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--items", type=int, default=50000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    process, grpc, http = await start_server()
    try:
        print(f"rpckit serve (pid {process.pid}): gRPC {grpc}, HTTP {http}; cpus {os.cpu_count()}")
        print("\nbidi Chat (same handler), rpckit typed client, binary protobuf")
        print(f"{'transport':<12}{'p50 RTT':>12}{'p99 RTT':>12}{'msgs/s':>12}")
        results: dict[str, list[dict[str, float]]] = {"gRPC": [], "WebSocket": []}
        for _ in range(args.rounds):
            for name in results:
                transport = GrpcTransport(grpc) if name == "gRPC" else WebSocketTransport(http)
                client = StreamsServiceClient(transport)
                await bidi(client, args.pings // 10, args.messages // 10)  # warm-up
                results[name].append(await bidi(client, args.pings, args.messages))
                await transport.aclose()
        for name, runs in results.items():
            p50 = statistics.median(r["p50_us"] for r in runs)
            p99 = statistics.median(r["p99_us"] for r in runs)
            rate = statistics.median(r["msgs_per_s"] for r in runs)
            print(f"{name:<12}{p50:>10.0f}us{p99:>10.0f}us{rate:>12.0f}")

        print(f"\nTextStream server streaming, {args.items} items, httpx client")
        rates: dict[str, list[float]] = {
            "application/connect+proto": [],
            "application/grpc-web+proto": [],
        }
        for content_type in rates:
            await server_stream(http, content_type, args.items // 10)  # warm-up
        for _ in range(args.rounds):
            for content_type, found in rates.items():
                found.append(await server_stream(http, content_type, args.items))
        for content_type, found in rates.items():
            print(f"{content_type:<28}{statistics.median(found):>12.0f} items/s")
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()


if __name__ == "__main__":
    asyncio.run(main())
