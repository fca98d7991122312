"""gRPC and HTTP on one event loop (``rpckit serve``, one process) against each in a process
of its own (``rpckit serve --separate-grpc``): which design serves a mixed load better.

Every server is ``python -m rpckit serve bench/runner_service.py`` as shipped (uvicorn,
uvloop, httptools, access log below INFO). Per design, in rounds that alternate between the
two designs (each figure is the median of its rounds):

- HTTP alone: ``GET /api/dogs/3`` with Debian's ``wrk`` at 64 connections;
- gRPC alone: ``GetDog`` with ``h2load`` at 64 streams over 4 connections;
- both at once: the same two loads started together, each one's requests/s, their sum as a
  share of what each transport does alone, and the server CPU per request.

There is no goal to pass or fail: the table is the measurement the serving design rests on.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.runner import H2Run, Server, _start, ensure_h2load, h2load, stop  # noqa: E402
from bench.unary import cpu_seconds, ensure_wrk, free_port, process_tree, wrk  # noqa: E402


def _serve(name: str, tmp: Path, http: int, grpc: int, *extra: str) -> Server:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'bench'}"}
    command = [
        sys.executable, "-m", "rpckit", "serve", "runner_service:create_service",
        "--http", f"127.0.0.1:{http}", "--grpc", f"127.0.0.1:{grpc}", *extra,
        "--log-level", "warning",
    ]  # fmt: skip
    return _start(name, command, REPO, env, tmp, http, grpc)


class Design:
    """One serving design: the processes and the ports of both transports."""

    def __init__(self, name: str, servers: list[Server], http: int, grpc: int) -> None:
        self.name = name
        self.servers = servers
        self.http = http
        self.grpc = grpc
        self.figures: dict[str, list[float]] = {}

    def pids(self) -> list[int]:
        return [pid for server in self.servers for pid in process_tree(server.process.pid)]

    def add(self, key: str, value: float) -> None:
        self.figures.setdefault(key, []).append(value)

    def median(self, key: str) -> float:
        return statistics.median(self.figures[key])


def _http(tools: dict[str, str], design: Design, seconds: float) -> Any:
    return wrk(tools["wrk"], f"http://127.0.0.1:{design.http}/api/dogs/3", 64, seconds, None)


def _grpc(tools: dict[str, str], design: Design, data: Path, seconds: float) -> H2Run:
    """``GetDog`` for ``seconds`` at 64 streams over 4 connections."""
    return h2load(tools["h2load"], design.grpc, data, 4, 16, seconds=seconds)


def measure(tools: dict[str, str], design: Design, seconds: float, data: Path) -> None:
    design.add("http_alone", _http(tools, design, seconds).rate)
    design.add("grpc_alone", _grpc(tools, design, data, seconds).rate)
    results: dict[str, H2Run] = {}

    def grpc_load() -> None:
        results["grpc"] = _grpc(tools, design, data, seconds)

    before = cpu_seconds(design.pids())
    thread = threading.Thread(target=grpc_load)
    thread.start()
    http = _http(tools, design, seconds)
    thread.join()
    used = cpu_seconds(design.pids()) - before
    grpc = results["grpc"]
    design.add("http_mixed", http.rate)
    design.add("grpc_mixed", grpc.rate)
    design.add("cpu_mixed", used / (http.requests + grpc.succeeded) * 1e6)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4, help="per wrk run (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per design (default 3)")
    args = parser.parse_args()
    tools = {"wrk": ensure_wrk(), "h2load": ensure_h2load()}
    with tempfile.TemporaryDirectory(prefix="rpckit-bench-shared-") as name:
        tmp = Path(name)
        data = tmp / "get_dog.bin"
        data.write_bytes(struct.pack(">BI", 0, 2) + b"\x08\x03")  # GetDogRequest{index: 3}
        http, grpc = free_port(), free_port()
        shared = Design("rpckit serve (one loop)", [_serve("shared", tmp, http, grpc)], http, grpc)
        http2, grpc2 = free_port(), free_port()
        split = Design(
            "rpckit serve --separate-grpc",
            [_serve("separate", tmp, http2, grpc2, "--separate-grpc")],
            http2,
            grpc2,
        )
        designs = [shared, split]
        try:
            for design in designs:  # warm-up
                wrk(tools["wrk"], f"http://127.0.0.1:{design.http}/api/dogs/3", 8, 1, None)
                h2load(tools["h2load"], design.grpc, data, 1, 1, n=2000)
            for _ in range(args.rounds):
                for design in designs:
                    measure(tools, design, args.seconds, data)
        finally:
            for design in designs:
                for server in design.servers:
                    stop(server)
    print(
        f"\ngRPC and HTTP sharing one loop vs a process each; rpckit serve, uvicorn; "
        f"medians of {args.rounds} alternating rounds\n"
    )
    print(
        "| design | HTTP GET req/s alone | gRPC req/s alone | HTTP req/s mixed "
        "| gRPC req/s mixed | mixed as share of alone | server CPU/req mixed |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for design in designs:
        share = design.median("http_mixed") / design.median("http_alone") + design.median(
            "grpc_mixed"
        ) / design.median("grpc_alone")
        print(
            f"| {design.name} | {design.median('http_alone'):,.0f} | "
            f"{design.median('grpc_alone'):,.0f} | {design.median('http_mixed'):,.0f} | "
            f"{design.median('grpc_mixed'):,.0f} | {share:.2f} | "
            f"{design.median('cpu_mixed'):.0f} µs |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
