"""gRPC through ``rpckit serve`` against bare grpc.aio: server CPU per call and per message.

Contenders, each in its own process, all up at once (idle ones cost nothing):

- **bare grpc.aio** (twice: the two identical servers measure the noise): generic handlers
  for ``GetDog`` and ``JsonStream`` (the same handlers as ``bench/runner_service.py``), on
  uvloop like ``rpckit serve``, with the same message-size and ``so_reuseport`` options
  rpckit's ``GrpcServer`` sets; no reflection or health (rpckit registers them after the
  service, so grpcio finds the service's handler first);
- **rpckit serve, no access log**: ``python -m rpckit serve bench/runner_service.py --grpc
  ... --no-access-log`` (one worker, uvloop, reflection and health as shipped);
- **rpckit serve, access log on**: the default (``--log-level info``), its lines to a file.

Load, from h2load (C, so the client's CPU stays small and out of the server processes):

- unary: ``GetDog`` ``--calls`` times, 4 connections x 16 streams; server CPU per call from
  ``/proc/<pid>/stat`` (utime + stime, the server's whole process tree) before and after,
  and req/s;
- streams: ``--streams`` concurrent ``JsonStream`` calls (10 connections) of ``--messages``
  messages each; server CPU per message, msgs/s. One grpcio call per server first checks
  that the stream really carries that many messages and ends with status OK.

Rounds go A, B, C, D, A, B, C, D...; each figure is the median of its rounds (min-max
beside it). Goals (PASS/FAIL): rpckit without the access log at >= 1.0x bare grpc.aio for
unary req/s, unary server CPU per call and stream msgs/s; the access log costs <= 5 µs of
server CPU per call. ``--profile DIR`` runs the rpckit servers under cProfile instead.

    python bench/grpc_peer.py [--rounds 5] [--calls 20000] [--streams 1000] [--messages 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
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

from bench.runner import DOG_PATH, STREAM_PATH, ensure_h2load  # noqa: E402
from bench.unary import cpu_seconds, free_port, process_tree, stop_process  # noqa: E402


def serve_bare(port: int) -> None:
    """Bare grpc.aio with generic handlers, on uvloop (as ``rpckit serve``)."""
    import grpc
    import uvloop

    from examples.streams.v1.streams_pb2 import Dog, GetDogRequest, JsonStreamRequest

    dogs = int(os.environ["RPCKIT_BENCH_DOGS"])

    async def get_dog(request: GetDogRequest, context: Any) -> Dog:
        return Dog(name=f"Dog {request.index}", age=request.index % 10)

    async def json_stream(request: JsonStreamRequest, context: Any) -> Any:
        dog = Dog(name="Dog", age=3)
        for _ in range(dogs):
            yield dog

    async def main() -> None:
        size = 4 * 1024 * 1024
        server = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", size),
                ("grpc.max_receive_message_length", 2 * size),
                ("grpc.so_reuseport", 0),
            ]
        )
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

    uvloop.run(main())


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    rounds: list[dict[str, float]] = field(default_factory=list)


def _wait(server: Server) -> None:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"{server.name} exited:\n{server.log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), 1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{server.name} did not listen on {server.port}")


def start(name: str, extra: list[str] | None, tmp: Path, profile: Path | None) -> Server:
    port = free_port()
    log = tmp / (re.sub(r"\W+", "-", name) + ".log")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'bench'}"}
    if extra is None:
        command = [sys.executable, __file__, "--serve-bare", str(port)]  # DOGS from the env
    else:
        prefix = [sys.executable]
        if profile is not None:
            out = profile / (re.sub(r"\W+", "-", name) + ".prof")
            prefix += ["-m", "cProfile", "-o", str(out)]
        command = [*prefix, "-m", "rpckit", "serve", "runner_service:create_service",
                   "--grpc", f"127.0.0.1:{port}", *extra]  # fmt: skip
    with log.open("wb") as out_file:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out_file, stderr=subprocess.STDOUT
        )
    server = Server(name, process, port, log)
    _wait(server)
    return server


def h2load(port: int, path: str, data: Path, n: int, clients: int, streams: int) -> float:
    """``n`` calls of ``path``; returns req/s (every call must have succeeded)."""
    command = [
        "h2load", f"-n{n}", f"-c{clients}", f"-m{streams}", "-d", str(data),
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        f"http://127.0.0.1:{port}{path}",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if not (rate and done) or not (int(done.group(1)) == int(done.group(2)) == n):
        raise SystemExit(f"unexpected h2load output:\n{out}")
    return float(rate.group(1))


def check_stream(port: int, messages: int) -> None:
    import grpc

    async def once() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call: Any = channel.unary_stream(STREAM_PATH)(b"")
            count = sum([1 async for _ in call])
            code = await call.code()
        if count != messages or code != grpc.StatusCode.OK:
            raise SystemExit(f"port {port}: stream gave {count} messages, {code}")

    asyncio.run(once())


def measure(server: Server, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    unary, stream = tmp / "get_dog.bin", tmp / "stream.bin"
    pids = process_tree(server.process.pid)
    figures: dict[str, float] = {}
    used = cpu_seconds(pids)
    figures["unary_rate"] = h2load(server.port, DOG_PATH, unary, args.calls, 4, 16)
    figures["unary_cpu"] = (cpu_seconds(pids) - used) / args.calls * 1e6
    clients = 10
    used = cpu_seconds(pids)
    started = time.perf_counter()
    h2load(server.port, STREAM_PATH, stream, args.streams, clients, args.streams // clients)
    elapsed = time.perf_counter() - started
    total = args.streams * args.messages
    figures["stream_cpu"] = (cpu_seconds(pids) - used) / total * 1e6
    figures["stream_rate"] = total / elapsed
    return figures


COLUMNS = [
    ("unary_cpu", "unary CPU/call", "{:.0f} µs"),
    ("unary_rate", "unary req/s", "{:,.0f}"),
    ("stream_cpu", "stream CPU/msg", "{:.1f} µs"),
    ("stream_rate", "stream msgs/s", "{:,.0f}"),
]


def _cell(values: list[float], fmt: str) -> str:
    low, high = min(values), max(values)
    spread = f" ({fmt.format(low).split()[0]}-{fmt.format(high).split()[0]})"
    return fmt.format(statistics.median(values)) + spread


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20000, help="unary calls per round")
    parser.add_argument("--streams", type=int, default=1000, help="concurrent streams")
    parser.add_argument("--messages", type=int, default=100, help="messages per stream")
    parser.add_argument("--only", default="", help="comma-separated contender numbers (1-5)")
    parser.add_argument("--profile", type=Path, help="cProfile the rpckit servers into DIR")
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0
    os.environ["RPCKIT_BENCH_DOGS"] = str(args.messages)
    ensure_h2load()
    plans: list[tuple[str, list[str] | None]] = [
        ("bare grpc.aio", None),
        ("rpckit serve, no access log", ["--log-level", "warning", "--no-access-log"]),
        ("bare grpc.aio (2nd, noise)", None),
        ("rpckit serve, access log on (default)", []),
        # Only with --only 5: grpc core's adaptive flow-control windows, as bare grpc.aio has.
        (
            "rpckit serve, no access log, --grpc-window 0",
            ["--log-level", "warning", "--no-access-log", "--grpc-window", "0"],
        ),
    ]
    plans = [plans[int(i) - 1] for i in args.only.split(",")] if args.only else plans[:4]
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="rpckit-grpc-peer-") as name:
        tmp = Path(name)
        (tmp / "get_dog.bin").write_bytes(struct.pack(">BI", 0, 2) + b"\x08\x03")
        (tmp / "stream.bin").write_bytes(struct.pack(">BI", 0, 0))
        try:
            for label, extra in plans:
                servers.append(start(label, extra, tmp, args.profile))
            for server in servers:
                check_stream(server.port, args.messages)
                h2load(server.port, DOG_PATH, tmp / "get_dog.bin", 2000, 4, 16)  # warm-up
            for number in range(args.rounds):
                for server in servers:
                    print(f"round {number + 1}: {server.name}", file=sys.stderr, flush=True)
                    server.rounds.append(measure(server, args, tmp))
        finally:
            for server in servers:
                stop_process(server.process)
            access = [s for s in servers if "access log on" in s.name]
            for server in access:
                lines = server.log.read_text().count("rpckit.access: method=")
                print(f"{server.name}: {lines:,} access log lines", file=sys.stderr)
    report(servers, args)
    return 0


def report(servers: list[Server], args: argparse.Namespace) -> None:
    import grpc

    print(
        f"\ngRPC, {args.rounds} rounds: unary GetDog x {args.calls:,} (h2load 4x16); "
        f"{args.streams:,} concurrent JsonStream x {args.messages} msgs (h2load); "
        f"median (min-max); grpcio {grpc.__version__}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cores\n"
    )
    print("| server | " + " | ".join(title for _, title, _ in COLUMNS) + " |")
    print("|---|" + "---:|" * len(COLUMNS))
    for server in servers:
        cells = [_cell([r[key] for r in server.rounds], fmt) for key, _, fmt in COLUMNS]
        print(f"| {server.name} | " + " | ".join(cells) + " |")
    by = {s.name: s for s in servers}

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in by[name].rounds)

    print()
    bare, bare2 = "bare grpc.aio", "bare grpc.aio (2nd, noise)"
    off, on = "rpckit serve, no access log", "rpckit serve, access log on (default)"
    if bare in by and bare2 in by:
        for key, title, _ in COLUMNS:
            print(f"noise: {title}: 2nd bare / bare = {med(bare2, key) / med(bare, key):.3f}")
    if bare in by and off in by:
        for who in (off, on, "rpckit serve, no access log, --grpc-window 0"):
            if who not in by:
                continue
            rate = med(who, "unary_rate") / med(bare, "unary_rate")
            cpu = med(bare, "unary_cpu") / med(who, "unary_cpu")
            stream = med(who, "stream_rate") / med(bare, "stream_rate")
            stream_cpu = med(bare, "stream_cpu") / med(who, "stream_cpu")
            strict = who == off
            for label, value in (
                ("unary req/s", rate),
                ("unary CPU/call (bare/rpckit)", cpu),
                ("stream msgs/s", stream),
                ("stream CPU/msg (bare/rpckit)", stream_cpu),
            ):
                verdict = ("PASS" if value >= 1.0 else "FAIL") if strict else "info"
                print(f"{verdict}: {who}: {label} {value:.2f}x bare grpc.aio (goal >= 1.0x)")
    if off in by and on in by:
        cost = med(on, "unary_cpu") - med(off, "unary_cpu")
        paired = statistics.median(
            a["unary_cpu"] - b["unary_cpu"]
            for a, b in zip(by[on].rounds, by[off].rounds, strict=True)
        )
        verdict = "PASS" if cost <= 5 else "FAIL"
        print(
            f"{verdict}: access log on vs off: {cost:+.1f} µs server CPU per call "
            f"(median of paired rounds {paired:+.1f} µs; goal <= 5 µs)"
        )


if __name__ == "__main__":
    raise SystemExit(main())
