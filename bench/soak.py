"""Soak test: a mix of calls against ``rpckit serve`` of the example for a fixed time.

    python bench/soak.py [--seconds 600] [--server uvicorn|granian] [--concurrency 32]
                         [--sample-every 60]

Runs outside the normal CI run. The mix, on every transport: unary (plain GET, gRPC,
gRPC-Web), NDJSON and gRPC-Web server streams read to the end, streams aborted after their
first item (plain and WebSocket), WebSocket bidi chats, file uploads (64 KiB), and uploads
aborted halfway. Reports calls per second, outcomes by code, and the server's RSS, open fds
and asyncio task count at the start, every ``--sample-every`` seconds and at the end, after
the clients have closed (the service samples ``len(asyncio.all_tasks())`` into a file once a
second); then PASS/FAIL: fds and tasks back where they started, RSS growth from the first
to the last sample under load within ``--rss-growth`` MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
import httpx  # noqa: E402

from examples.streams.server import StreamsExample  # noqa: E402
from examples.streams.server import create_service as create_example  # noqa: E402
from examples.streams.v1.streams_pb2 import (  # noqa: E402
    ChatMessage,
    Dog,
    GetDogRequest,
    JsonStreamRequest,
    TextStreamRequest,
)
from examples.streams.v1.streams_rpckit import StreamsServiceClient  # noqa: E402
from rpckit.errors import RpcError  # noqa: E402
from rpckit.http import GrpcWebTransport, WebSocketTransport  # noqa: E402

TASKS_FILE = "SOAK_TASKS_FILE"
GET_DOG = "/examples.streams.v1.StreamsService/GetDog"


def create_service(argv: Sequence[str] = ()) -> StreamsExample:
    """The example, plus a sampler writing the loop's task count to ``$SOAK_TASKS_FILE``."""
    service = create_example(argv)
    path = os.environ.get(TASKS_FILE)
    if path:
        original = service.get_dog

        async def get_dog(request: GetDogRequest, ctx: Any) -> Dog:
            if not hasattr(service, "_sampler"):
                service._sampler = asyncio.ensure_future(_sample(Path(path)))  # type: ignore[attr-defined]
            return await original(request, ctx)

        service.get_dog = get_dog  # type: ignore[method-assign]
    return service


async def _sample(path: Path) -> None:
    while True:
        path.write_text(str(len(asyncio.all_tasks())))
        await asyncio.sleep(1)


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _upload_body(size: int, abort: bool) -> AsyncIterator[bytes]:
    for _ in range(size // 16384):
        yield b"u" * 16384
    if abort:
        raise ConnectionAbortedError("client gives up")


async def _chat(ws: StreamsServiceClient, i: int) -> list[str]:
    """A WebSocket bidi chat of three messages; the answers, upper-cased by the server."""
    texts = [f"soak {i} {n}" for n in range(3)]
    answers = ws.chat([ChatMessage(text=t) for t in texts], timeout=10)
    got = [m.text async for m in answers]
    assert got == [t.upper() for t in texts], got
    return got


async def _worker(
    http: httpx.AsyncClient,
    stub: Any,
    web: StreamsServiceClient,
    ws: StreamsServiceClient,
    stop: float,
    outcomes: collections.Counter[str],
    n: int,
) -> None:
    i = n
    while time.monotonic() < stop:
        kind = i % 12
        i += 1
        try:
            if kind in (0, 1):
                r = await http.get(f"/api/dogs/{i % 10}")
                outcomes[f"http unary {r.status_code}"] += 1
            elif kind == 2:
                await stub(GetDogRequest(index=i % 10), timeout=10)
                outcomes["grpc unary ok"] += 1
            elif kind == 3:
                r = await http.get("/api/json_stream?interval_ms=0")
                outcomes[f"http stream {r.status_code}"] += 1
            elif kind == 4:
                async with http.stream("GET", "/api/test_stream?interval_ms=5") as r:
                    async for _ in r.aiter_raw():
                        break  # aborted after the first item
                outcomes["http stream aborted"] += 1
            elif kind in (5, 6):
                r = await http.post(
                    "/api/upload_as_file_stream", content=_upload_body(65536, False),
                    headers={"content-disposition": f"attachment; filename=soak-{i % 50}.bin"},
                )  # fmt: skip
                outcomes[f"http upload {r.status_code}"] += 1
            elif kind == 7:
                with contextlib.suppress(httpx.HTTPError, ConnectionAbortedError):
                    await http.post("/api/upload_as_file_stream", content=_upload_body(32768, True))
                outcomes["http upload aborted"] += 1
            elif kind == 8:
                await web.get_dog(GetDogRequest(index=i % 10), timeout=10)
                outcomes["grpc-web unary ok"] += 1
            elif kind == 9:
                fast = JsonStreamRequest(interval_ms=0)
                dogs = [d async for d in web.json_stream(fast, timeout=10)]
                outcomes[f"grpc-web stream {len(dogs)} items"] += 1
            elif kind == 10:
                await _chat(ws, i)
                outcomes["websocket chat ok"] += 1
            else:
                stream = ws.text_stream(TextStreamRequest(interval_ms=5), timeout=10)
                async with stream:
                    async for _ in stream:
                        break  # aborted after the first item
                outcomes["websocket stream aborted"] += 1
        except RpcError as error:
            outcomes[f"rpc {error.code.name.lower()}"] += 1
        except grpc.aio.AioRpcError as error:
            outcomes[f"grpc {error.code().name.lower()}"] += 1
        except httpx.HTTPError as error:
            outcomes[f"http error {type(error).__name__}"] += 1


async def _soak(args: argparse.Namespace, http_port: int, grpc_port: int, pid: int) -> None:
    tasks_file = Path(os.environ[TASKS_FILE])
    outcomes: collections.Counter[str] = collections.Counter()
    samples: list[tuple[str, float, int, str]] = []

    def sample(label: str) -> None:
        tasks = tasks_file.read_text() if tasks_file.exists() else "?"
        samples.append((label, _rss_mib(pid), _fds(pid), tasks))

    base = f"http://127.0.0.1:{http_port}"
    limits = httpx.Limits(max_connections=args.concurrency)
    async with (
        httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http,
        grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
        GrpcWebTransport(base, client=httpx.AsyncClient(timeout=30, limits=limits)) as grpc_web,
        WebSocketTransport(base) as websocket,
    ):
        stub = channel.unary_unary(
            GET_DOG, request_serializer=GetDogRequest.SerializeToString,
            response_deserializer=Dog.FromString,
        )  # fmt: skip
        web, ws = StreamsServiceClient(grpc_web), StreamsServiceClient(websocket)
        await http.get("/api/dogs/1")  # starts the sampler
        await asyncio.sleep(1.5)
        sample("start")
        start = time.monotonic()
        stop = start + args.seconds
        workers = [
            asyncio.ensure_future(_worker(http, stub, web, ws, stop, outcomes, n))
            for n in range(args.concurrency)
        ]
        every = min(args.sample_every, args.seconds / 2)
        while time.monotonic() + every < stop:
            await asyncio.sleep(every)
            sample(f"{time.monotonic() - start:.0f} s")
        await asyncio.gather(*workers)
        elapsed = time.monotonic() - start
        await grpc_web.client.aclose()
    # clients closed; past the idle timeout every connection the mix opened must be gone
    await asyncio.sleep(6)
    sample("end")
    total = sum(outcomes.values())
    print(f"server {args.server}, {args.seconds:g} s, concurrency {args.concurrency}")
    print(f"calls: {total} ({total / elapsed:.0f}/s)")
    for key, count in sorted(outcomes.items()):
        print(f"  {key}: {count}")
    print("sample   RSS MiB  fds  tasks")
    for label, rss, fds, tasks in samples:
        print(f"{label:8} {rss:8.1f} {fds:4} {tasks:>6}")
    _goals(samples, args.rss_growth, outcomes)


def _goals(
    samples: list[tuple[str, float, int, str]],
    rss_growth: float,
    outcomes: collections.Counter[str],
) -> None:
    """PASS/FAIL: nothing left behind once the clients are gone, memory bounded under load."""
    first, end = samples[0], samples[-1]
    loaded = samples[1:-1]
    growth = loaded[-1][1] - loaded[0][1] if len(loaded) > 1 else 0.0
    done = (" ok", " 200", " aborted", " 10 items")  # every other outcome is a failure
    errors = sum(n for k, n in outcomes.items() if not k.endswith(done))
    goals = [
        (f"fds at the end ({end[2]}) <= at the start ({first[2]}) + 2", end[2] <= first[2] + 2),
        (f"tasks at the end ({end[3]}) == at the start ({first[3]})", end[3] == first[3]),
        (f"RSS growth under load {growth:+.1f} MiB <= {rss_growth:g} MiB", growth <= rss_growth),
        (f"calls that failed: {errors}", errors == 0),
    ]
    for text, ok in goals:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--sample-every", type=float, default=60)
    parser.add_argument("--rss-growth", type=float, default=16, metavar="MIB")
    parser.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    files = Path(tempfile.mkdtemp(prefix="rpckit-soak-"))
    os.environ[TASKS_FILE] = str(files.parent / f"{files.name}.tasks")
    process = subprocess.Popen(
        [sys.executable, "-m", "rpckit", "serve", "bench.soak:create_service",
         "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--server", args.server,
         "--no-access-log", "--log-level", "warning", "--files", str(files)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        ports: dict[str, int] = {}
        assert process.stdout is not None
        while len(ports) < 2:
            line = process.stdout.readline().decode()
            if not line:
                raise SystemExit("soak: the server exited while starting")
            found = re.search(r"(gRPC|HTTP) listening on \S+:(\d+)", line)
            if found:
                ports[found.group(1)] = int(found.group(2))
        pid = process.pid
        if args.server == "granian":  # granian serves from a worker child: sample that
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            pid = int(children[0]) if children else pid
        asyncio.run(_soak(args, ports["HTTP"], ports["gRPC"], pid))
    finally:
        process.terminate()
        process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
