"""Unary calls through ``rpckit serve`` as shipped against a bare Starlette JSON route.

Every server is a subprocess on loopback; Debian's ``wrk`` (installed with apt when missing
and running as root) is the load generator:

  - **rpckit**: ``python -m rpckit serve bench.unary:create_service --http ... --server S
    --workers W``, the example's ``GetDog`` at its plain route ``GET /api/dogs/3`` and on
    Connect (``POST /examples.streams.v1.StreamsService/GetDog``, JSON);
  - **starlette**: bare Starlette routes with the same answers (a GET with a path parameter,
    and a POST that parses the same JSON body), on the same HTTP server with the same
    settings (uvicorn with uvloop and httptools, or granian), one worker.

For each: p50/p99 latency at concurrency 1 (one keep-alive connection; ``--rounds`` short
runs alternating between bare Starlette and rpckit, both running at once, so drift on a shared
machine hits both alike; the round with the median p50 is reported), requests/s at
concurrency 64, and server CPU per request (user + system of the whole process tree, from
/proc). Goals, printed PASS/FAIL: rpckit's unary p50 <= 1.2x bare Starlette doing the same
(GET against GET, JSON POST against JSON POST) on the same server; ``--workers 2`` >= 1.6x
one worker's throughput, measured with 300 µs of CPU work per call so that the two servers,
not wrk on the same two cores, run out of CPU first.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import Unimplemented  # noqa: E402
from examples.streams.v1.streams_pb2 import Dog, GetDogRequest  # noqa: E402
from rpckit import Context  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")
P50_GOAL = 1.2
WORKERS_GOAL = 1.6
CONNECT_PATH = "/examples.streams.v1.StreamsService/GetDog"


#: Microseconds of CPU work per call (``RPCKIT_BENCH_WORK_US``): the workers rows use it, so
#: that the server, not wrk on the same two cores, is what runs out of CPU.
WORK_US = float(os.environ.get("RPCKIT_BENCH_WORK_US", "0"))
SCALING_WORK_US = 300


def _work() -> None:
    if WORK_US > 0:
        end = time.perf_counter() + WORK_US / 1e6
        while time.perf_counter() < end:
            pass


class UnaryDogs(Unimplemented):
    """Only ``GetDog``: a small message built per call."""

    async def get_dog(self, request: GetDogRequest, ctx: Context) -> Dog:
        _work()
        return Dog(name=f"Dog {request.index}", age=request.index % 10)


def create_service(argv: list[str]) -> UnaryDogs:
    """The ``rpckit serve`` target of this benchmark."""
    return UnaryDogs()


def bare_app() -> Any:
    """The peer: a bare Starlette JSON route with the same answer as GetDog."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def dog(request: Request) -> JSONResponse:
        index = int(request.path_params["index"])
        return JSONResponse({"name": f"Dog {index}", "age": index % 10})

    async def post_dog(request: Request) -> JSONResponse:
        index = int((await request.json()).get("index", 0))
        return JSONResponse({"name": f"Dog {index}", "age": index % 10})

    return Starlette(
        routes=[
            Route("/api/dogs/{index}", dog, methods=["GET"]),
            Route(CONNECT_PATH, post_dog, methods=["POST"]),  # the same JSON in and out
        ]
    )


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (workers, granian's children)."""
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    found.extend(int(child) for child in f.read().split())
        except OSError:
            continue
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


@dataclass
class Server:
    name: str
    kind: str
    workers: int
    process: subprocess.Popen[bytes]
    port: int
    path: str


def _wait_ready(server: Server, log: Path) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"{server.name} exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), 1) as sock:
                sock.sendall(f"GET {server.path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{server.name} did not answer")


def start_rpckit(kind: str, workers: int, tmp: Path, work_us: float = 0) -> Server:
    port = free_port()
    log = tmp / f"rpckit-{kind}-{workers}-{work_us:g}.log"
    env = {**os.environ, "RPCKIT_BENCH_WORK_US": str(work_us)}
    command = [
        sys.executable, "-m", "rpckit", "serve", "bench.unary:create_service",
        "--http", f"127.0.0.1:{port}", "--server", kind, "--workers", str(workers),
        "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    name = f"rpckit serve, {workers} worker{'s' if workers > 1 else ''}"
    if work_us:
        name += f", {work_us:g} µs of work per call"
    server = Server(name, kind, workers, process, port, "/api/dogs/3")
    _wait_ready(server, log)
    return server


def start_bare(kind: str, tmp: Path) -> Server:
    port = free_port()
    log = tmp / f"bare-{kind}.log"
    if kind == "uvicorn":
        command = [
            sys.executable, "-m", "uvicorn", "bench.unary:bare_app", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop",
            "--http", "httptools", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    else:
        command = [
            sys.executable, "-m", "granian", "bench.unary:bare_app", "--factory",
            "--interface", "asginl", "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--workers", "1", "--log-level", "warning",
        ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    server = Server("starlette, 1 worker", kind, 1, process, port, "/api/dogs/3")
    _wait_ready(server, log)
    return server


def stop(server: Server) -> None:
    stop_process(server.process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGINT a server process, SIGKILL it if it lingers, and any worker it leaves behind."""
    pids = process_tree(process.pid)
    process.send_signal(2)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    for pid in pids[1:]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


# --- wrk ------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench/unary.py needs Debian's wrk (apt-get install wrk)")
    return found


@dataclass
class Run:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(binary: str, url: str, connections: int, seconds: float, script: Path | None) -> Run:
    threads = 1 if connections == 1 else 2
    duration = f"-d{max(1, round(seconds))}s"
    command = [
        binary, f"-t{threads}", f"-c{connections}", duration, "--latency", "--timeout", "5s",
        *(["-s", str(script)] if script else []), url,
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    requests = re.search(r"(\d+) requests in ([\d.]+)(ms|s)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (requests and p50 and p99):
        raise SystemExit(f"unexpected wrk output:\n{out}")
    elapsed = float(requests.group(2)) / (1000 if requests.group(3) == "ms" else 1)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: .*", out)
    if socket_errors:
        print(f"  wrk: {socket_errors.group(0)}", file=sys.stderr)
    return Run(
        int(requests.group(1)),
        elapsed,
        _ms(p50.group(1)),
        _ms(p99.group(1)),
        int(errors.group(1)) if errors else 0,
    )


@dataclass
class Row:
    server: Server
    route: str
    latency: Run
    load: Run
    cpu_us: float


def _url_and_script(server: Server, route: str, tmp: Path) -> tuple[str, Path | None]:
    url = f"http://127.0.0.1:{server.port}"
    if route != "connect":
        return url + server.path, None
    script = tmp / "connect.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        "wrk.body = '{\"index\": 3}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return url + CONNECT_PATH, script


def measure(
    binary: str, servers: list[Server], route: str, seconds: float, rounds: int, tmp: Path
) -> list[Row]:
    """One row per server: p50/p99 at concurrency 1, taken in ``rounds`` short runs that
    alternate between the servers (so drift on a shared machine hits all of them alike;
    the round with the median p50 is reported), then req/s and CPU at concurrency 64."""
    targets = [_url_and_script(server, route, tmp) for server in servers]
    for url, script in targets:
        wrk(binary, url, 8, 1, script)  # warm-up
    latencies: list[list[Run]] = [[] for _ in servers]
    for _ in range(rounds):
        for runs, (url, script) in zip(latencies, targets, strict=True):
            runs.append(wrk(binary, url, 1, max(1.0, seconds / rounds), script))
    rows = []
    for server, runs, (url, script) in zip(servers, latencies, targets, strict=True):
        latency = sorted(runs, key=lambda run: run.p50_ms)[len(runs) // 2]
        pids = process_tree(server.process.pid)
        before = cpu_seconds(pids)
        load = wrk(binary, url, 64, seconds, script)
        used = cpu_seconds(pids) - before
        for run in (*runs, load):
            if run.errors:
                raise SystemExit(f"{server.name} ({route}): {run.errors} failed responses")
        rows.append(Row(server, route, latency, load, used / max(load.requests, 1) * 1e6))
    return rows


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="per wrk run (default 5)")
    parser.add_argument(
        "--servers", default="uvicorn,granian", help="comma-separated (default both)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="alternating concurrency-1 runs per server and route (default 5)",
    )
    args = parser.parse_args()
    binary = ensure_wrk()
    rows: list[Row] = []
    goals: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="rpckit-bench-unary-") as name:
        tmp = Path(name)
        for kind in args.servers.split(","):
            bare = start_bare(kind, tmp)
            try:
                one = start_rpckit(kind, 1, tmp)
                try:
                    bare_get, plain = measure(
                        binary, [bare, one], "plain", args.seconds, args.rounds, tmp
                    )
                    bare_post, connect = measure(
                        binary, [bare, one], "connect", args.seconds, args.rounds, tmp
                    )
                finally:
                    stop(one)
            finally:
                stop(bare)
            rows += [bare_get, bare_post, plain, connect]
            # Worker scaling: with CPU work per call, so that the servers (not wrk, which
            # shares the two cores) run out of CPU first.
            scaled = []
            for workers in (1, 2):
                server = start_rpckit(kind, workers, tmp, SCALING_WORK_US)
                try:
                    scaled += measure(binary, [server], "plain", args.seconds, 1, tmp)
                finally:
                    stop(server)
            rows += scaled
            for row, peer in ((plain, bare_get), (connect, bare_post)):
                ratio = row.latency.p50_ms / peer.latency.p50_ms
                goals.append(
                    (
                        f"{kind}: rpckit {row.route} p50 {ratio:.2f}x bare Starlette "
                        f"{'GET' if peer is bare_get else 'JSON POST'} (goal <= {P50_GOAL}x)",
                        ratio <= P50_GOAL,
                    )
                )
            scale = scaled[1].load.rate / scaled[0].load.rate
            goals.append(
                (
                    f"{kind}: --workers 2 throughput {scale:.2f}x one worker "
                    f"(goal >= {WORKERS_GOAL}x)",
                    scale >= WORKERS_GOAL,
                )
            )
    print(
        f"\nrpckit serve vs bare Starlette, unary GET/POST; wrk; {os.cpu_count()} cores, "
        f"{platform.machine()}, Python {platform.python_version()}, uvicorn "
        f"{_version('uvicorn')}, uvloop {_version('uvloop')}, httptools "
        f"{_version('httptools')}, granian {_version('granian')}, starlette "
        f"{_version('starlette')}\n"
    )
    print(
        "| http server | server | route | p50 c=1 | p99 c=1 | req/s c=64 | p50 c=64 "
        "| server CPU/req |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        route = "GET /api/dogs/3" if row.route == "plain" else "JSON POST (Connect path)"
        print(
            f"| {row.server.kind} | {row.server.name} | {route} | "
            f"{row.latency.p50_ms * 1000:.0f} µs | {row.latency.p99_ms * 1000:.0f} µs | "
            f"{row.load.rate:,.0f} | {row.load.p50_ms:.2f} ms | {row.cpu_us:.0f} µs |"
        )
    print()
    for text, ok in goals:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
