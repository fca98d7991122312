"""rpckit before and after the call runner, against bare Starlette and bare grpc.aio.

Every rpckit row is ``python -m rpckit serve bench/runner_service.py`` as shipped, from a git
worktree of the named commit (``--before``, default: the commit before the runner landed) or
from this checkout; the peers are a bare Starlette app on the same uvicorn settings (uvloop,
httptools) and a bare ``grpc.aio`` server with generic handlers on uvloop. One run measures,
per server:

- unary over HTTP: ``GET /api/dogs/3`` (plain route) and a Connect JSON ``POST``, p50 at
  concurrency 1 and requests/s at 64 (Debian's ``wrk``), plus server CPU per request;
- unary over gRPC: ``GetDog`` with ``h2load`` (Debian's ``nghttp2-client``), mean latency at
  one stream, requests/s at 64 streams over 4 connections;
- server streaming: ``JsonStream`` of ``RPCKIT_BENCH_DOGS`` small messages as NDJSON over
  HTTP (curl) and over gRPC (a grpc.aio client), items/s, best of three.

rpckit after the runner runs three ways: no interceptor, one interceptor that overrides no
hook (an empty chain's cost), and with the access log on. All servers run at once and the
rounds go through them in turn; each figure is the median of its rounds. Goals, printed
PASS/FAIL: the runner is not slower than before on any path (5% noise allowed), and the
no-op interceptor costs nothing measurable (within 5%).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.unary import (  # noqa: E402
    cpu_seconds,
    ensure_wrk,
    free_port,
    process_tree,
    stop_process,
    wrk,
)

BEFORE = "295b18d"  # the last commit before "One call path" (2de04a3)
DOG_PATH = "/examples.streams.v1.StreamsService/GetDog"
STREAM_PATH = "/examples.streams.v1.StreamsService/JsonStream"
NOISE = 1.05


# --- the peers, as subprocess entry points ---------------------------------------------------


def bare_app() -> Any:
    """Bare Starlette: the same answers as the bench service, JSON and NDJSON."""
    import json

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    dogs = int(os.environ.get("RPCKIT_BENCH_DOGS", "20000"))

    async def dog(request: Request) -> JSONResponse:
        index = int(request.path_params["index"])
        return JSONResponse({"name": f"Dog {index}", "age": index % 10})

    async def connect_dog(request: Request) -> JSONResponse:
        index = int((await request.json()).get("index", 0))
        return JSONResponse({"name": f"Dog {index}", "age": index % 10})

    async def stream(request: Request) -> StreamingResponse:
        async def lines() -> Any:
            line = json.dumps({"name": "Dog", "age": 3}, separators=(",", ":")).encode() + b"\n"
            for _ in range(dogs):
                yield line

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return Starlette(
        routes=[
            Route("/api/dogs/{index}", dog, methods=["GET"]),
            Route(DOG_PATH, connect_dog, methods=["POST"]),
            Route("/api/json_stream", stream, methods=["GET"]),
        ]
    )


def serve_bare_grpc(port: int) -> None:
    """Bare grpc.aio: generic handlers for GetDog and JsonStream, on uvloop when installed."""
    import grpc

    from examples.streams.v1.streams_pb2 import Dog, GetDogRequest, JsonStreamRequest

    dogs = int(os.environ.get("RPCKIT_BENCH_DOGS", "20000"))

    async def get_dog(request: GetDogRequest, context: Any) -> Dog:
        return Dog(name=f"Dog {request.index}", age=request.index % 10)

    async def json_stream(request: JsonStreamRequest, context: Any) -> Any:
        dog = Dog(name="Dog", age=3)
        for _ in range(dogs):
            yield dog

    async def main() -> None:
        server = grpc.aio.server()
        handlers = {
            "GetDog": grpc.unary_unary_rpc_method_handler(
                get_dog, GetDogRequest.FromString, Dog.SerializeToString
            ),
            "JsonStream": grpc.unary_stream_rpc_method_handler(
                json_stream, JsonStreamRequest.FromString, Dog.SerializeToString
            ),
        }
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("examples.streams.v1.StreamsService", handlers)]
        )
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


# --- processes -------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    http: int | None
    grpc: int | None


def _wait_port(server: Server, port: int, log: Path) -> None:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"{server.name} exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise SystemExit(f"{server.name} did not listen on {port}")


def _start(name: str, command: list[str], cwd: Path, env: dict[str, str], tmp: Path,
           http: int | None, grpc: int | None) -> Server:  # fmt: skip
    log = tmp / (re.sub(r"\W+", "-", name) + ".log")
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(name, process, http, grpc)
    for port in (http, grpc):
        if port is not None:
            _wait_port(server, port, log)
    return server


def start_rpckit(name: str, tree: Path, extra: list[str], tmp: Path) -> Server:
    http, grpc = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{REPO / 'bench'}"}
    command = [
        sys.executable, "-m", "rpckit", "serve", "runner_service:create_service",
        "--http", f"127.0.0.1:{http}", "--grpc", f"127.0.0.1:{grpc}", *extra,
    ]  # fmt: skip
    return _start(name, command, tree, env, tmp, http, grpc)


def start_starlette(tmp: Path) -> Server:
    http = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "bench.runner:bare_app", "--factory",
        "--host", "127.0.0.1", "--port", str(http), "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return _start("bare Starlette", command, REPO, dict(os.environ), tmp, http, None)


def start_grpc(tmp: Path) -> Server:
    grpc = free_port()
    command = [sys.executable, str(Path(__file__)), "--serve-grpc", str(grpc)]
    return _start("bare grpc.aio", command, REPO, dict(os.environ), tmp, None, grpc)


def stop(server: Server) -> None:
    stop_process(server.process)


# --- load ------------------------------------------------------------------------------------


def ensure_h2load() -> str:
    found = shutil.which("h2load")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nghttp2-client"], check=True, env=env)
        found = shutil.which("h2load")
    if found is None:
        raise SystemExit("bench/runner.py needs h2load (apt-get install nghttp2-client)")
    return found


@dataclass
class H2Run:
    """One h2load run: requests/s, mean latency in µs, and requests that succeeded."""

    rate: float
    mean_us: float
    succeeded: int


def h2load(
    binary: str, port: int, data: Path, clients: int, streams: int, *,
    n: int = 0, seconds: float = 0.0,
) -> H2Run:  # fmt: skip
    """GetDog over gRPC, ``n`` requests or for ``seconds``; exits unless every finished
    request succeeded."""
    amount = f"-n{n}" if n else f"-D{max(1, round(seconds))}"
    command = [
        binary, amount, f"-c{clients}", f"-m{streams}", "-d", str(data),
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        f"http://127.0.0.1:{port}{DOG_PATH}",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if not (rate and mean and done) or done.group(1) != done.group(2):
        raise SystemExit(f"unexpected h2load output:\n{out}")
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", mean.group(1)).groups()  # type: ignore[union-attr]
    return H2Run(
        float(rate.group(1)),
        float(value) * {"us": 1, "ms": 1e3, "s": 1e6}[unit],
        int(done.group(2)),
    )


def ndjson_rate(port: int, dogs: int) -> float:
    times = []
    for _ in range(3):
        out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total} %{http_code}",
             f"http://127.0.0.1:{port}/api/json_stream"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        if out[1] != "200":
            raise SystemExit(f"json_stream answered {out[1]}")
        times.append(float(out[0]))
    return dogs / min(times)


def grpc_stream_rate(port: int, dogs: int) -> float:
    import grpc

    async def once() -> float:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call: Any = channel.unary_stream(STREAM_PATH)(b"")
            start = time.perf_counter()
            count = 0
            async for _ in call:
                count += 1
            elapsed = time.perf_counter() - start
        if count != dogs:
            raise SystemExit(f"gRPC stream gave {count} of {dogs} messages")
        return elapsed

    return dogs / min(asyncio.run(once()) for _ in range(3))


@dataclass
class Result:
    name: str
    figures: dict[str, float] = field(default_factory=dict)


def measure(server: Server, tools: dict[str, str], seconds: float, tmp: Path, dogs: int) -> Result:
    result = Result(server.name)
    figures = result.figures
    if server.http is not None:
        base = f"http://127.0.0.1:{server.http}"
        script = tmp / "connect.lua"
        script.write_text(
            'wrk.method = "POST"\nwrk.body = \'{"index": 3}\'\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        for key, url, lua in (
            ("get", base + "/api/dogs/3", None),
            ("connect", base + DOG_PATH, script),
        ):
            wrk(tools["wrk"], url, 8, 1, lua)  # warm-up
            figures[f"{key}_p50"] = wrk(tools["wrk"], url, 1, seconds, lua).p50_ms * 1000
            pids = process_tree(server.process.pid)
            used = cpu_seconds(pids)
            load = wrk(tools["wrk"], url, 64, seconds, lua)
            figures[f"{key}_rate"] = load.rate
            figures[f"{key}_cpu"] = (cpu_seconds(pids) - used) / max(load.requests, 1) * 1e6
        figures["ndjson"] = ndjson_rate(server.http, dogs)
    if server.grpc is not None:
        data = tmp / "get_dog.bin"
        data.write_bytes(struct.pack(">BI", 0, 2) + b"\x08\x03")
        h2load(tools["h2load"], server.grpc, data, 1, 1, n=2000)  # warm-up
        figures["grpc_mean"] = h2load(tools["h2load"], server.grpc, data, 1, 1, n=5000).mean_us
        figures["grpc_rate"] = h2load(tools["h2load"], server.grpc, data, 4, 16, n=40000).rate
        figures["grpc_stream"] = grpc_stream_rate(server.grpc, dogs)
    return result


COLUMNS = [
    ("get_p50", "GET p50 c=1", "{:.0f} µs", False),
    ("get_rate", "GET req/s c=64", "{:,.0f}", True),
    ("get_cpu", "GET CPU/req", "{:.0f} µs", False),
    ("connect_p50", "Connect p50 c=1", "{:.0f} µs", False),
    ("connect_rate", "Connect req/s c=64", "{:,.0f}", True),
    ("grpc_mean", "gRPC mean c=1", "{:.0f} µs", False),
    ("grpc_rate", "gRPC req/s c=64", "{:,.0f}", True),
    ("ndjson", "NDJSON items/s", "{:,.0f}", True),
    ("grpc_stream", "gRPC stream items/s", "{:,.0f}", True),
]


def _not_worse(after: float, before: float, higher_is_better: bool) -> bool:
    return after * NOISE >= before if higher_is_better else after <= before * NOISE


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help=f"commit to compare (default {BEFORE})")
    parser.add_argument("--seconds", type=float, default=3, help="per wrk run (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server (default 3)")
    parser.add_argument("--serve-grpc", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_grpc:
        serve_bare_grpc(args.serve_grpc)
        return 0
    dogs = int(os.environ.setdefault("RPCKIT_BENCH_DOGS", "20000"))
    tools = {"wrk": ensure_wrk(), "h2load": ensure_h2load()}
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="rpckit-bench-runner-") as name:
        tmp = Path(name)
        before_tree = tmp / "before"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(before_tree), args.before],
            check=True, capture_output=True,
        )  # fmt: skip
        quiet = ["--log-level", "warning"]
        plans = [
            ("bare Starlette / bare grpc.aio", None),
            (f"rpckit before the runner ({args.before})", (before_tree, quiet)),
            ("rpckit, no interceptor", (REPO, [*quiet, "--no-access-log"])),
            ("rpckit, one no-op interceptor", (REPO, [*quiet, "--no-access-log",
                                                     "--interceptor", "runner_service:noop"])),
            ("rpckit, access log on", (REPO, ["--log-level", "info"])),
        ]  # fmt: skip
        groups: list[tuple[str, list[Server]]] = []
        try:
            for label, plan in plans:
                if plan is None:
                    groups.append((label, [start_starlette(tmp), start_grpc(tmp)]))
                else:
                    tree, extra = plan
                    groups.append((label, [start_rpckit(label, tree, extra, tmp)]))
            # Every server is up (idle ones cost nothing); rounds go through all of them in
            # turn, so drift in the machine's speed falls on every row alike.
            rounds: list[list[dict[str, float]]] = [[] for _ in groups]
            for number in range(args.rounds):
                for index, (label, servers) in enumerate(groups):
                    print(f"round {number + 1}: {label}...", file=sys.stderr)
                    figures: dict[str, float] = {}
                    for server in servers:
                        figures.update(measure(server, tools, args.seconds, tmp, dogs).figures)
                    rounds[index].append(figures)
            for (label, _), measured in zip(groups, rounds, strict=True):
                keys = measured[0].keys()
                results.append(
                    Result(label, {k: statistics.median(m[k] for m in measured) for k in keys})
                )
        finally:
            for _, servers in groups:
                for server in servers:
                    stop(server)
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(before_tree)],
                check=False, capture_output=True,
            )  # fmt: skip
    print(f"\nBefore and after the call runner: {os.cpu_count()} cores, Python "
          f"{sys.version.split()[0]}, {dogs} messages per stream, medians of {args.rounds} "
          f"interleaved rounds\n")  # fmt: skip
    print("| server | " + " | ".join(title for _, title, _, _ in COLUMNS) + " |")
    print("|---|" + "---:|" * len(COLUMNS))
    for result in results:
        cells = [fmt.format(result.figures[key]) if key in result.figures else "—"
                 for key, _, fmt, _ in COLUMNS]  # fmt: skip
        print(f"| {result.name} | " + " | ".join(cells) + " |")
    before, after, noop = results[1], results[2], results[3]
    print()
    for key, title, _, higher in COLUMNS:
        ok = _not_worse(after.figures[key], before.figures[key], higher)
        print(f"{'PASS' if ok else 'FAIL'}: runner not slower than before: {title} "
              f"({after.figures[key]:,.1f} vs {before.figures[key]:,.1f})")  # fmt: skip
    for key, title, _, higher in COLUMNS:
        ok = _not_worse(noop.figures[key], after.figures[key], higher)
        print(f"{'PASS' if ok else 'FAIL'}: a no-op interceptor costs nothing: {title} "
              f"({noop.figures[key]:,.1f} vs {after.figures[key]:,.1f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
