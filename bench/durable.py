"""Durable streams through ``rpckit serve``: append-to-reader latency, one stream's
throughput, and 1,000 concurrent streams with two readers each.

Every server is ``python -m rpckit serve bench.durable_service:create_service`` as shipped
(uvicorn, uvloop and httptools when installed, access log off), a subprocess on loopback,
stopped by its PID; the Redis rows use a Debian ``redis-server`` this script starts on a free
loopback port in a temp dir (no persistence) and kills by PID. The peers, all up at once and
measured round by round in turn so that drift on the shared machine hits them alike:

- **plain**: ``Complete`` without ``@durable`` (``--plain``): a plain server stream, the
  baseline;
- **durable, memory**: the same handler under ``@durable``, ``--streams memory``;
- **durable, redis**: the same, ``--streams redis://127.0.0.1:PORT/0``.

The handler (``bench/durable_service.py``) puts ``time.time_ns()`` in each ``Token`` just
before it yields it; the client, in this process on the same clock, takes the time when the
item's NDJSON line arrives. The client is raw asyncio sockets (HTTP/1.1, chunked NDJSON, on
uvloop when installed), not httpx: 2,000 httpx streams cost more CPU than the two cores have.

1. **Latency**: one reader per stream, ``--latency-items`` items ``--interval-ms`` apart, per
   round and peer; p50/p99 of every item of every round, and the spread of the round p50s.
   Goals: Redis adds <= 1 ms at p50 over the plain stream; p99 under the Durable Streams
   protocol's own 10 ms target (memory and Redis).
2. **Throughput** of one stream: the handler yields ``--items`` items without awaiting (the
   producer batches its appends), one reader; items/s from the request to the last item, and
   the server's (and Redis') CPU per item. Goal: >= 50,000 items/s through Redis.
3. **Fleet**: ``--fleet-streams`` durable streams on Redis (started over ``--fleet-ramp``
   seconds), each read by the client that started it and by a second reader that joins with
   ``?stream=<id>&offset=0``; every stream ``--fleet-tokens`` items ``--fleet-interval-ms``
   apart. Items/s delivered, the server's peak RSS (``VmRSS``), Redis' ``used_memory_human``
   and clients, CPU of server, Redis and client (which one ran out), and produce-to-receive
   latency under load. Run once per ``--fleet-pools`` entry: ``default`` is ``--streams
   redis://...`` as shipped (RedisLog.from_url's pool, POOL_SIZE connections), a number N adds
   ``?max_connections=N`` to the URL. Goal: every reader gets every item.

``redis://`` servers parse replies with hiredis (``rpckit[redis]`` brings it; the header
line says which version). ``--without-hiredis`` adds the peer **durable, redis, pure-Python
parser**: the same server with a ``hiredis`` module that fails to import first on its
PYTHONPATH, so redis-py falls back to its own RESP parser; ``--fleet-pools`` entries may then
end with ``+pure``. ``RPCKIT_BENCH_PROFILE=DIR`` runs every server under cProfile
(``DIR/<server>.prof``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.unary import cpu_seconds, free_port, process_tree, stop_process  # noqa: E402

ROUTE = "/api/complete"
LATENCY_GOAL_MS = 1.0  # Redis over the plain stream, at p50
PROTOCOL_TARGET_MS = 10.0  # the Durable Streams protocol's own latency target
THROUGHPUT_GOAL = 50_000  # items/s of one stream through Redis


# --- redis-server ----------------------------------------------------------------------------


@dataclass
class Redis:
    """A redis-server of this run's own: loopback, a free port, its own dir, no persistence."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        executable = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(executable).exists():
            raise SystemExit("bench/durable.py needs redis-server (apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            executable, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--save", "", "--appendonly", "no",
            "--logfile", "", "--daemonize", "no",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        ready = threading.Event()
        stdout = self.process.stdout
        assert stdout is not None

        def drain() -> None:  # reads the log to its end, so that the pipe never fills
            for line in stdout:
                self.lines.append(line.decode(errors="replace"))
                if b"Ready to accept connections" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(10) or self.process.poll() is not None:
            self.stop()
            raise SystemExit("redis-server did not start:\n" + "".join(self.lines[-20:]))
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


def redis_version() -> str:
    executable = shutil.which("redis-server") or "/usr/bin/redis-server"
    try:
        out = subprocess.run([executable, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return "absent"
    found = re.search(r"v=(\S+)", out)
    return found.group(1) if found else out.strip()


# --- rpckit serve ----------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def rss_kib(self) -> int:
        """VmRSS of the ``rpckit serve`` process (one worker: the process itself)."""
        total = 0
        for pid in process_tree(self.process.pid):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total

    def cpu(self) -> float:
        return cpu_seconds(process_tree(self.process.pid))


def start_server(
    name: str, streams: str | None, tmp: Path, *, plain: bool = False, site: str | None = None
) -> Server:
    """``rpckit serve`` the bench service; ``site``: a directory put first on its PYTHONPATH
    (``--without-hiredis``: see ``no_hiredis_site``)."""
    port = free_port()
    log = tmp / (re.sub(r"\W+", "-", name).strip("-") + ".log")
    command = [sys.executable]
    profile = os.environ.get("RPCKIT_BENCH_PROFILE")
    if profile:
        Path(profile).mkdir(parents=True, exist_ok=True)
        command += ["-m", "cProfile", "-o", str(Path(profile) / f"{log.stem}.prof")]
    command += [
        "-m", "rpckit", "serve", "bench.durable_service:create_service",
        "--http", f"127.0.0.1:{port}", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    if streams is not None:
        command += ["--streams", streams]
    if plain:
        command.append("--plain")
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [site, env.get("PYTHONPATH")]))
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(name, process, port, log)
    deadline = time.monotonic() + 60
    import socket

    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return server
        time.sleep(0.05)
    stop_process(process)
    raise SystemExit(f"{name} did not listen on {port}")


def no_hiredis_site(tmp: Path) -> str:
    """A directory whose ``hiredis`` module fails to import: first on a server's PYTHONPATH,
    redis-py falls back to its pure-Python RESP parser."""
    site = tmp / "no-hiredis-site"
    site.mkdir(exist_ok=True)
    (site / "hiredis.py").write_text('raise ImportError("hidden by bench/durable.py")\n')
    return str(site)


# --- the client: raw asyncio sockets, HTTP/1.1, chunked NDJSON ----------------------------


@dataclass
class Sink:
    """What readers received: item counts, produce-to-receive times (ns) if kept, errors."""

    keep_latency: bool = True
    items: int = 0
    latencies: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class Read:
    headers: dict[str, str]
    items: int
    error: str | None
    started: float
    finished: float


def _short(error: str) -> str:
    """An error line without what differs from stream to stream (ids, numbers)."""
    return re.sub(r"[0-9a-f]{32}|\d+", "#", error)[:160]


async def read_stream(
    port: int,
    path: str,
    sink: Sink,
    headers_seen: asyncio.Future[dict[str, str]] | None = None,
) -> Read:
    """GET ``path`` and read its NDJSON to the end, counting items into ``sink``."""
    started = time.perf_counter()
    headers: dict[str, str] = {}
    items = 0
    error: str | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        writer.write(f"GET {path} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n".encode())
        status = await reader.readline()
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers_seen is not None and not headers_seen.done():
            headers_seen.set_result(headers)
        if not status.startswith(b"HTTP/1.1 200"):
            body = await reader.read(1000)
            error = f"{status.decode(errors='replace').strip()}: {body[:300]!r}"
        else:
            rest = b""
            keep = sink.keep_latency
            latencies = sink.latencies
            clock = time.time_ns
            while True:
                size_line = await reader.readline()
                if not size_line:
                    error = "connection closed mid-stream"
                    break
                size = int(size_line.split(b";", 1)[0], 16)
                if size == 0:
                    break
                chunk = await reader.readexactly(size + 2)
                now = clock()
                lines = (rest + chunk[:-2]).split(b"\n")
                rest = lines.pop()
                count = len(lines)
                if count and not lines[-1].startswith(b'{"text":"'):  # the in-band error
                    error = lines.pop().decode(errors="replace")
                    count -= 1
                items += count
                sink.items += count
                if keep:
                    for item in lines:
                        latencies.append(now - int(item[9 : item.index(b'"', 9)]))
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        if headers_seen is not None and not headers_seen.done():
            headers_seen.set_result(headers)
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    if error is not None:
        sink.errors[_short(error)] += 1
    return Read(headers, items, error, started, time.perf_counter())


def run_loop(main: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


# --- 1. latency ------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class LatencyRow:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    round_p50s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


def measure_latency(
    servers: list[Server], rounds: int, items: int, interval_ms: float
) -> list[LatencyRow]:
    rows = [LatencyRow(server.name) for server in servers]
    path = f"{ROUTE}?tokens={items}&interval_ms={interval_ms:g}"

    async def main() -> None:
        for server in servers:  # warm-up: imports, first connections to Redis
            await read_stream(server.port, f"{ROUTE}?tokens=20&interval_ms=1", Sink())
        for _ in range(rounds):
            for server, row in zip(servers, rows, strict=True):
                sink = Sink()
                read = await read_stream(server.port, path, sink)
                if read.error or read.items != items:
                    row.errors[read.error or f"{read.items} of {items} items"] += 1
                values = [ns / 1e6 for ns in sink.latencies]
                row.latencies_ms += values
                row.round_p50s.append(percentile(values, 50))

    run_loop(main())
    return rows


# --- 2. throughput ---------------------------------------------------------------------------


@dataclass
class ThroughputRow:
    name: str
    rates: list[float] = field(default_factory=list)
    server_us: list[float] = field(default_factory=list)  # server CPU per item
    redis_us: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


def measure_throughput(
    servers: list[Server], redis: Redis | None, on_redis: set[str], rounds: int, items: int
) -> list[ThroughputRow]:
    rows = [ThroughputRow(server.name) for server in servers]
    path = f"{ROUTE}?tokens={items}&interval_ms=0"

    async def main() -> None:
        for server in servers:
            await read_stream(server.port, f"{ROUTE}?tokens=2000&interval_ms=0", Sink(False))
        for _ in range(rounds):
            for server, row in zip(servers, rows, strict=True):
                cpu = server.cpu()
                redis_cpu = cpu_seconds([redis.pid()]) if redis is not None else 0.0
                read = await read_stream(server.port, path, Sink(False))
                if read.error or read.items != items:
                    row.errors[read.error or f"{read.items} of {items} items"] += 1
                row.rates.append(read.items / (read.finished - read.started))
                row.server_us.append((server.cpu() - cpu) / items * 1e6)
                if redis is not None and server.name in on_redis:
                    row.redis_us.append((cpu_seconds([redis.pid()]) - redis_cpu) / items * 1e6)

    run_loop(main())
    return rows


# --- 3. the fleet ----------------------------------------------------------------------------


@dataclass
class FleetResult:
    pool: str
    streams: int
    expected: int
    delivered: int = 0
    complete_readers: int = 0
    readers: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    rss_start_mib: float = 0.0
    rss_peak_mib: float = 0.0
    redis_start: str = ""
    redis_peak: str = ""
    redis_peak_bytes: int = 0
    clients_peak: int = 0
    blocked_peak: int = 0
    server_cpu: float = 0.0
    redis_cpu: float = 0.0
    client_cpu: float = 0.0
    server_log: str = ""


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def run_fleet(
    pool: str,
    tmp: Path,
    streams: int,
    tokens: int,
    interval_ms: float,
    ramp: float,
) -> FleetResult:
    size, _, pure = pool.partition("+")
    if pure not in ("", "pure"):
        raise SystemExit(f"--fleet-pools {pool}: the only suffix is +pure")
    redis = Redis(tmp / ("redis-fleet-" + pool.replace("+", "-"))).start()
    url = redis.url if size == "default" else f"{redis.url}?max_connections={int(size)}"
    server = start_server(f"fleet {pool}", url, tmp, site=no_hiredis_site(tmp) if pure else None)
    result = FleetResult(pool, streams, streams * 2 * tokens)
    try:
        result.rss_start_mib = server.rss_kib() / 1024
        cpu0, redis_cpu0, own0 = server.cpu(), cpu_seconds([redis.pid()]), _own_cpu()
        run_loop(_fleet(server, redis, result, tokens, interval_ms, ramp))
        result.server_cpu = server.cpu() - cpu0
        result.redis_cpu = cpu_seconds([redis.pid()]) - redis_cpu0
        result.client_cpu = _own_cpu() - own0
    finally:
        stop_process(server.process)
        redis.stop()
    lines = [line for line in server.log.read_text(errors="replace").splitlines() if line]
    warnings = Counter(_short(line) for line in lines if "listening on" not in line)
    result.server_log = "; ".join(f"{n}x {line}" for line, n in warnings.most_common(3))
    return result


async def _fleet(
    server: Server,
    redis: Redis,
    result: FleetResult,
    tokens: int,
    interval_ms: float,
    ramp: float,
) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis.url)
    sink = Sink()
    info = await client.info("memory")
    result.redis_start = str(info["used_memory_human"])
    done = asyncio.Event()

    async def monitor() -> None:
        while not done.is_set():
            result.rss_peak_mib = max(result.rss_peak_mib, server.rss_kib() / 1024)
            with contextlib.suppress(Exception):
                memory = await client.info("memory")
                if int(memory["used_memory"]) > result.redis_peak_bytes:
                    result.redis_peak_bytes = int(memory["used_memory"])
                    result.redis_peak = str(memory["used_memory_human"])
                clients = await client.info("clients")
                result.clients_peak = max(result.clients_peak, int(clients["connected_clients"]))
                result.blocked_peak = max(result.blocked_peak, int(clients["blocked_clients"]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.25)

    first_path = f"{ROUTE}?tokens={tokens}&interval_ms={interval_ms:g}"
    reads: list[Read] = []

    async def pair(index: int) -> None:
        await asyncio.sleep(ramp * index / max(1, result.streams))
        seen: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        first = asyncio.create_task(read_stream(server.port, first_path, sink, seen))
        headers = await seen
        stream = headers.get("rpckit-stream-id")
        if stream is None:
            reads.append(await first)
            reads.append(Read({}, 0, "no second reader: no stream id", 0.0, 0.0))
            sink.errors["no second reader: the first got no stream id"] += 1
            return
        second = read_stream(server.port, f"{ROUTE}?stream={stream}&offset=0", sink)
        reads.extend(await asyncio.gather(first, second))

    watcher = asyncio.create_task(monitor())
    started = time.perf_counter()
    await asyncio.gather(*(pair(i) for i in range(result.streams)))
    result.seconds = time.perf_counter() - started
    done.set()
    await watcher
    await client.aclose()
    result.readers = len(reads)
    result.delivered = sink.items
    result.complete_readers = sum(1 for r in reads if r.error is None and r.items == tokens)
    result.latencies_ms = [ns / 1e6 for ns in sink.latencies]
    result.errors = sink.errors


# --- the report ------------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


def _spread(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    return f"{format(min(values), fmt)}-{format(max(values), fmt)}"


def _errors(counter: Counter[str]) -> str:
    return "; ".join(f"{n}x {text}" for text, n in counter.most_common(3)) or "none"


@contextlib.contextmanager
def running(items: list[Any], stop: Callable[[Any], None]) -> Iterator[None]:
    try:
        yield
    finally:
        for item in reversed(items):
            with contextlib.suppress(Exception):
                stop(item)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="latency rounds (default 5)")
    parser.add_argument("--latency-items", type=int, default=200, help="per round (200)")
    parser.add_argument("--interval-ms", type=float, default=2.0, help="latency pace (2 ms)")
    parser.add_argument("--items", type=int, default=100_000, help="throughput (100,000)")
    parser.add_argument("--throughput-rounds", type=int, default=3, help="(default 3)")
    parser.add_argument("--fleet-streams", type=int, default=1000, help="(default 1000)")
    parser.add_argument("--fleet-tokens", type=int, default=100, help="per stream (100)")
    parser.add_argument("--fleet-interval-ms", type=float, default=50.0, help="(50 ms)")
    parser.add_argument("--fleet-ramp", type=float, default=2.0, help="seconds to start all (2)")
    parser.add_argument(
        "--fleet-pools",
        default="default,10000",
        help="redis-py pool per fleet run: default (as shipped) or a max_connections "
        "(default: default,10000)",
    )
    parser.add_argument(
        "--without-hiredis",
        action="store_true",
        help="adds the peer 'durable, redis, pure-Python parser' (hiredis hidden from it); "
        "fleet pools may then end with +pure",
    )
    parser.add_argument("--skip", default="", help="comma-separated: latency,throughput,fleet")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    goals: list[tuple[str, bool]] = []
    began = time.monotonic()
    print(
        f"# bench/durable.py, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {_commit()}; "
        f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"uvicorn {_version('uvicorn')}, uvloop {_version('uvloop')}, httptools "
        f"{_version('httptools')}, redis-py {_version('redis')}, hiredis "
        f"{_version('hiredis')}, redis-server "
        f"{redis_version()}; client: raw asyncio sockets on uvloop\n",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="rpckit-bench-durable-") as name:
        tmp = Path(name)
        if not {"latency", "throughput"} <= skip:
            redis = Redis(tmp / "redis").start()
            servers: list[Server] = []
            with running([redis], Redis.stop), running(servers, lambda s: stop_process(s.process)):
                servers.append(start_server("plain (no @durable)", None, tmp, plain=True))
                servers.append(start_server("durable, memory", "memory", tmp))
                servers.append(start_server("durable, redis", redis.url, tmp))
                memory, on_redis = servers[1].name, servers[2].name
                redis_peers = [on_redis]
                if args.without_hiredis:
                    name = "durable, redis, pure-Python parser"
                    servers.append(start_server(name, redis.url, tmp, site=no_hiredis_site(tmp)))
                    redis_peers.append(name)
                if "latency" not in skip:
                    rows = measure_latency(
                        servers, args.rounds, args.latency_items, args.interval_ms
                    )
                    print(
                        f"## 1. Append-to-reader latency: {args.latency_items} items "
                        f"{args.interval_ms:g} ms apart, {args.rounds} rounds, one HTTP reader\n"
                    )
                    print(
                        "| server | p50 | p99 | max | round p50s (spread) | vs plain p50 | errors |"
                    )
                    print("|---|---:|---:|---:|---:|---:|---|")
                    base = rows[0].p(50)
                    for row in rows:
                        print(
                            f"| {row.name} | {row.p(50):.3f} ms | {row.p(99):.3f} ms | "
                            f"{max(row.latencies_ms, default=float('nan')):.2f} ms | "
                            f"{_spread(row.round_p50s, '.3f')} ms | "
                            f"{row.p(50) - base:+.3f} ms | {_errors(row.errors)} |"
                        )
                    print(flush=True)
                    by_name = {row.name: row for row in rows}
                    added = by_name[on_redis].p(50) - base
                    goals.append(
                        (
                            f"latency: Redis adds {added:+.3f} ms at p50 over the plain stream "
                            f"(goal <= {LATENCY_GOAL_MS:g} ms)",
                            added <= LATENCY_GOAL_MS and not by_name[on_redis].errors,
                        )
                    )
                    for label in (memory, *redis_peers):
                        p99 = by_name[label].p(99)
                        goals.append(
                            (
                                f"latency: {label} p99 {p99:.2f} ms (Durable Streams target "
                                f"< {PROTOCOL_TARGET_MS:g} ms)",
                                p99 < PROTOCOL_TARGET_MS,
                            )
                        )
                if "throughput" not in skip:
                    trows = measure_throughput(
                        servers, redis, set(redis_peers), args.throughput_rounds, args.items
                    )
                    print(
                        f"## 2. One stream's throughput: {args.items:,} items yielded without "
                        f"awaiting, one HTTP reader, {args.throughput_rounds} rounds\n"
                    )
                    print(
                        "| server | items/s (median) | min-max | vs plain | server CPU/item "
                        "| redis CPU/item | errors |"
                    )
                    print("|---|---:|---:|---:|---:|---:|---|")
                    base_rate = statistics.median(trows[0].rates)
                    for trow in trows:
                        rate = statistics.median(trow.rates)
                        redis_cpu = (
                            f"{statistics.median(trow.redis_us):.1f} µs" if trow.redis_us else "-"
                        )
                        print(
                            f"| {trow.name} | {rate:,.0f} | {_spread(trow.rates, ',.0f')} | "
                            f"{rate / base_rate:.2f}x | "
                            f"{statistics.median(trow.server_us):.1f} µs | {redis_cpu} | "
                            f"{_errors(trow.errors)} |"
                        )
                    print(flush=True)
                    for trow in trows[2:]:
                        redis_rate = statistics.median(trow.rates)
                        goals.append(
                            (
                                f"throughput: one stream, {trow.name}: {redis_rate:,.0f} "
                                f"items/s (goal >= {THROUGHPUT_GOAL:,})",
                                redis_rate >= THROUGHPUT_GOAL and not trow.errors,
                            )
                        )
        if "fleet" not in skip:
            results = [
                run_fleet(
                    pool,
                    tmp,
                    args.fleet_streams,
                    args.fleet_tokens,
                    args.fleet_interval_ms,
                    args.fleet_ramp,
                )
                for pool in args.fleet_pools.split(",")
            ]
            offered = 2 * args.fleet_streams * 1000 / args.fleet_interval_ms
            print(
                f"## 3. {args.fleet_streams:,} durable streams on Redis, 2 HTTP readers each: "
                f"{args.fleet_tokens} items {args.fleet_interval_ms:g} ms apart per stream, "
                f"started over {args.fleet_ramp:g} s (offered: {offered:,.0f} items/s "
                f"delivered once all run)\n"
            )
            print(
                "| redis-py pool | delivered | items/s delivered | complete readers | "
                "latency p50 / p99 | server RSS start / peak | redis used_memory start / "
                "peak | redis clients (blocked) peak | CPU s: server / redis / client | "
                "wall |"
            )
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for r in results:
                size, _, pure = r.pool.partition("+")
                label = "default (as shipped)" if size == "default" else f"max_connections={size}"
                if pure:
                    label += ", pure-Python parser"
                print(
                    f"| {label} | {r.delivered:,} of {r.expected:,} | "
                    f"{r.delivered / r.seconds:,.0f} | {r.complete_readers:,} of "
                    f"{2 * r.streams:,} | {percentile(r.latencies_ms, 50):.1f} / "
                    f"{percentile(r.latencies_ms, 99):.1f} ms | {r.rss_start_mib:.0f} / "
                    f"{r.rss_peak_mib:.0f} MiB | {r.redis_start} / {r.redis_peak} | "
                    f"{r.clients_peak:,} ({r.blocked_peak:,}) | {r.server_cpu:.1f} / "
                    f"{r.redis_cpu:.1f} / {r.client_cpu:.1f} | {r.seconds:.1f} s |"
                )
            print()
            for r in results:
                print(f"- pool {r.pool}: reader errors: {_errors(r.errors)}")
                print(f"  server log: {r.server_log or 'nothing'}")
                goals.append(
                    (
                        f"fleet (pool {r.pool}): {r.complete_readers:,} of {2 * r.streams:,} "
                        f"readers got every item (goal: all)",
                        r.complete_readers == 2 * r.streams,
                    )
                )
            print(flush=True)
    print("```")
    for text, ok in goals:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    print("```")
    print(f"\n(whole run: {time.monotonic() - began:.0f} s)")
    return 0 if all(ok for _, ok in goals) else 1


if __name__ == "__main__":
    raise SystemExit(main())
