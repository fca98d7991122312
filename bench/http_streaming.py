"""HTTP server-streaming throughput: rpckit's Connect bridge against connectrpc and Starlette.

Every server streams ``--messages`` ``Dog(name=f"Dog {i}", age=i % 10)`` per call, built
one by one as fast as it can, from its own subprocess on uvicorn with the same settings:

* ``rpckit``: a ``StreamsService`` subclass whose ``json_stream`` is an ``async def``
  generator, served by ``rpckit.http.create_app`` at
  ``POST /examples.streams.v1.StreamsService/JsonStream`` (Connect protocol).
* ``connectrpc``: connectrpc's own ASGI application, generated at run time from the same
  proto by ``protoc-gen-connectrpc`` (``protobuf=google``), ``json_stream`` an async
  generator yielding the same dogs.
* ``starlette``: a bare Starlette route ``GET /dogs`` answering a ``StreamingResponse``
  (``application/x-ndjson``) with one ``json.dumps(...) + "\\n"`` chunk per dog.

The two Connect servers are measured with the ``proto`` and the ``json`` codec. The client
(this process) is the same for all of them: one ``httpx.AsyncClient`` streaming the body
with ``aiter_raw()``, splitting Connect envelopes incrementally (or counting NDJSON
newlines); every call must deliver exactly ``--messages`` messages and, for Connect, end
with the end-of-stream envelope ``{}``. Rounds alternate the five configurations to spread
machine drift evenly, after one full warm-up call each. Server CPU time per message (user +
system, from ``/proc``) is reported too: it is less sensitive to a noisy machine than rates.

``RPCKIT_BENCH_PROFILE=DIR`` runs every server under cProfile and writes ``DIR/<kind>.prof``
when it stops (profiling slows the servers, so do not quote those rates).

Run from the repo root: ``python bench/http_streaming.py [--messages N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from bench.common import RpckitDogs, bare_ndjson_app, serve_on_uvicorn  # noqa: E402
from examples.streams.v1.streams_pb2 import (  # noqa: E402
    Dog,
    JsonStreamRequest,
)

PROTO = "examples/streams/v1/streams.proto"
CONNECT_PATH = "/examples.streams.v1.StreamsService/JsonStream"
NDJSON_PATH = "/dogs"
GENERATED_MODULE = "examples.streams.v1.streams_connect"
KINDS = ("rpckit", "connectrpc", "starlette")
#: (server kind, codec) in the order rounds run them.
CONFIGS = (
    ("rpckit", "proto"),
    ("rpckit", "json"),
    ("connectrpc", "proto"),
    ("connectrpc", "json"),
    ("starlette", "ndjson"),
)
GOAL_VS_CONNECTRPC = 1.5
GOAL_VS_BARE = 0.8
END_STREAM = 0x02
_HEADER = struct.Struct(">BI")


# --- servers (run in subprocesses) ----------------------------------------------------------


def load_connect_module(gen_dir: Path) -> ModuleType:
    """The generated connectrpc code, imported as ``examples.streams.v1.streams_connect``."""
    path = gen_dir / "examples" / "streams" / "v1" / "streams_connect.py"
    spec = importlib.util.spec_from_file_location(GENERATED_MODULE, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[GENERATED_MODULE] = module
    spec.loader.exec_module(module)
    return module


def rpckit_app(count: int) -> Any:
    from rpckit.http import create_app

    return create_app([RpckitDogs(count)])


def connectrpc_app(count: int, gen_dir: Path) -> Any:
    generated = load_connect_module(gen_dir)

    async def json_stream(self: Any, request: Any, ctx: Any) -> AsyncIterator[Dog]:
        for i in range(count):
            yield Dog(name=f"Dog {i}", age=i % 10)

    # The generated Protocol's own methods answer unimplemented; only json_stream streams.
    service_type = type("ConnectDogs", (generated.StreamsService,), {"json_stream": json_stream})
    return generated.StreamsServiceASGIApplication(service_type())


async def serve(kind: str, count: int, gen_dir: Path | None, port: int) -> None:
    """Serve one kind on a free port; print "port loop http"; run until stdin closes."""

    if kind == "rpckit":
        app = rpckit_app(count)
    elif kind == "connectrpc":
        assert gen_dir is not None
        app = connectrpc_app(count, gen_dir)
    else:
        app = bare_ndjson_app(count, NDJSON_PATH)

    await serve_on_uvicorn(app, port)


def run_server(kind: str, count: int, gen_dir: Path | None, port: int) -> None:
    profile_dir = os.environ.get("RPCKIT_BENCH_PROFILE")
    if not profile_dir:
        asyncio.run(serve(kind, count, gen_dir, port))
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(serve(kind, count, gen_dir, port))
    finally:
        profiler.disable()
        profiler.dump_stats(str(Path(profile_dir) / f"{kind}.prof"))


# --- client (this process) ------------------------------------------------------------------


@dataclass
class Server:
    kind: str
    process: subprocess.Popen[str]
    port: int
    loop: str
    http: str


@dataclass
class Result:
    kind: str
    codec: str
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    client_cpu_us: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process, or None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def generate_connect(out: Path) -> None:
    """streams_connect.py from protoc-gen-connectrpc (protobuf=google) into ``out``."""
    import google.api
    import grpc_tools

    bin_dir = Path(sys.executable).parent
    plugin = shutil.which(
        "protoc-gen-connectrpc", path=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if plugin is None:
        raise RuntimeError("protoc-gen-connectrpc is not installed (pip install it)")
    googleapis = Path(next(iter(google.api.__path__))).parent.parent
    includes = [REPO / "protos", googleapis, Path(grpc_tools.__file__).parent / "_proto"]
    command = [
        sys.executable, "-m", "grpc_tools.protoc",
        *(f"-I{d}" for d in includes),
        f"--plugin=protoc-gen-connectrpc={plugin}",
        f"--connectrpc_out={out}", "--connectrpc_opt=protobuf=google",
        PROTO,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"protoc-gen-connectrpc failed:\n{done.stderr}")


def start_server(kind: str, count: int, gen_dir: Path) -> Server:
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--port", "0"]
    command += ["--messages", str(count), "--gen", str(gen_dir)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    words = process.stdout.readline().split()
    if len(words) != 3 or not words[0].isdigit():
        stop_server(process)
        raise RuntimeError(f"{kind} server did not start (got {words!r})")
    return Server(kind, process, int(words[0]), words[1], words[2])


def stop_server(process: subprocess.Popen[str]) -> None:
    """Close stdin (a graceful stop: profiles get written), then terminate, then kill."""
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.close()
    try:
        process.wait(timeout=5)
        return
    except subprocess.TimeoutExpired:
        pass
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class BenchError(Exception):
    """A server answered something other than exactly the expected stream."""


def _connect_request(codec: str) -> tuple[dict[str, str], bytes]:
    body = b"{}" if codec == "json" else JsonStreamRequest().SerializeToString()
    headers = {
        "content-type": f"application/connect+{codec}",
        "connect-protocol-version": "1",
        "connect-accept-encoding": "identity",
    }
    return headers, _HEADER.pack(0, len(body)) + body


async def read_connect(response: httpx.Response) -> int:
    """Counts the messages of a Connect stream; the end-of-stream must be ``{}`` and last."""
    buffer = bytearray()
    count = 0
    end: bytes | None = None
    unpack = _HEADER.unpack_from
    async for chunk in response.aiter_raw():
        if end is not None:
            raise BenchError(f"{len(chunk)} bytes after the end-of-stream envelope")
        buffer += chunk
        pos = 0
        size = len(buffer)
        while size - pos >= 5:
            flags, length = unpack(buffer, pos)
            stop = pos + 5 + length
            if stop > size:
                break
            if flags & END_STREAM:
                end = bytes(buffer[pos + 5 : stop])
                if stop != size:
                    raise BenchError(f"{size - stop} bytes after the end-of-stream envelope")
            elif flags:
                raise BenchError(f"unexpected envelope flags {flags:#04x}")
            else:
                count += 1
            pos = stop
        del buffer[:pos]
    if end is None:
        raise BenchError(f"no end-of-stream envelope ({len(buffer)} bytes left over)")
    if json.loads(end) != {}:
        raise BenchError(f"the stream did not end cleanly: {end!r}")
    return count


async def read_ndjson(response: httpx.Response) -> int:
    count = 0
    last = b"\n"
    async for chunk in response.aiter_raw():
        if chunk:
            count += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":
        raise BenchError("the NDJSON stream does not end with a newline")
    return count


async def stream_once(client: httpx.AsyncClient, server: Server, codec: str, count: int) -> float:
    """One call; returns messages per second (request sent to the last byte read)."""
    base = f"http://127.0.0.1:{server.port}"
    if codec == "ndjson":
        request = client.build_request("GET", base + NDJSON_PATH)
    else:
        headers, body = _connect_request(codec)
        request = client.build_request("POST", base + CONNECT_PATH, headers=headers, content=body)
    start = time.perf_counter()
    response = await client.send(request, stream=True)
    try:
        if response.status_code != 200:
            await response.aread()
            raise BenchError(f"HTTP {response.status_code}: {response.content[:300]!r}")
        got = await (read_ndjson(response) if codec == "ndjson" else read_connect(response))
    finally:
        await response.aclose()
    elapsed = time.perf_counter() - start
    if got != count:
        raise BenchError(f"{server.kind}/{codec}: got {got} messages, expected {count}")
    return count / elapsed


async def measure(servers: dict[str, Server], count: int, rounds: int) -> list[Result]:
    results = [Result(kind, codec) for kind, codec in CONFIGS]
    timeout = httpx.Timeout(120.0)
    async with httpx.AsyncClient(timeout=timeout) as client:
        for result in results:
            await stream_once(client, servers[result.kind], result.codec, count)
        for r in range(rounds):
            for result in results:
                server = servers[result.kind]
                cpu_before = cpu_seconds(server.process.pid)
                client_before = time.process_time()
                rate = await stream_once(client, server, result.codec, count)
                client_cpu = time.process_time() - client_before
                cpu_after = cpu_seconds(server.process.pid)
                result.rates.append(rate)
                result.client_cpu_us.append(client_cpu * 1e6 / count)
                if cpu_before is not None and cpu_after is not None:
                    result.cpu_us.append((cpu_after - cpu_before) * 1e6 / count)
                name = f"{result.kind}/{result.codec}"
                print(f"  round {r + 1}: {name:<18} {rate:>10,.0f} msgs/s", flush=True)
    return results


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _ratio(value: float, base: float | None) -> str:
    return "—" if base is None else f"{value / base:.2f}x"


def report(results: list[Result], servers: dict[str, Server], count: int, rounds: int) -> str:
    by_key = {(r.kind, r.codec): r for r in results}
    bare = by_key[("starlette", "ndjson")].median
    lines = [
        f"{count:,} messages per call, {rounds} rounds, median of the rounds; ratios use medians.",
        "",
        "| server | codec | median msgs/s | min | max | vs connectrpc (same codec) "
        "| vs bare Starlette NDJSON | server CPU µs/msg | client CPU µs/msg |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        connect = by_key.get(("connectrpc", r.codec))
        vs_connect = None if r.kind == "starlette" or connect is None else connect.median
        cpu = f"{statistics.median(r.cpu_us):.1f}" if r.cpu_us else "?"
        lines.append(
            f"| {r.kind} | {r.codec} | {r.median:,.0f} | {min(r.rates):,.0f} "
            f"| {max(r.rates):,.0f} | {_ratio(r.median, vs_connect)} "
            f"| {_ratio(r.median, bare)} | {cpu} | {statistics.median(r.client_cpu_us):.1f} |"
        )
    lines += [
        "",
        "CPU columns: medians per message, user + system (server: whole process, from /proc;",
        "client: this process). A client near 1e6 / (msgs/s) µs/msg was the bottleneck, and",
        "rates above it say little about the server: compare the server CPU column instead.",
        "",
        "Goals (msgs/s medians):",
    ]
    for codec in ("proto", "json"):
        rpckit = by_key[("rpckit", codec)].median
        ratio = rpckit / by_key[("connectrpc", codec)].median
        verdict = "PASS" if ratio >= GOAL_VS_CONNECTRPC else "FAIL"
        lines.append(
            f"- rpckit/connectrpc ({codec}) >= {GOAL_VS_CONNECTRPC}x: {ratio:.2f}x {verdict}"
        )
    for codec in ("proto", "json"):
        ratio = by_key[("rpckit", codec)].median / bare
        verdict = "PASS" if ratio >= GOAL_VS_BARE else "FAIL"
        lines.append(f"- rpckit ({codec})/bare NDJSON >= {GOAL_VS_BARE}x: {ratio:.2f}x {verdict}")
    from google.protobuf import __version__ as protobuf_version

    first = next(iter(servers.values()))
    lines += [
        "",
        f"python {platform.python_version()}, uvicorn {_version('uvicorn')} "
        f"(loop: {first.loop}, http: {first.http}), starlette {_version('starlette')}, "
        f"connectrpc {_version('connectrpc')}, protobuf {protobuf_version}, "
        f"httpx {_version('httpx')} (client); {os.cpu_count()} cores, {platform.machine()} "
        f"{platform.system()}",
    ]
    impls = {(s.loop, s.http) for s in servers.values()}
    if len(impls) > 1:
        lines.append(f"WARNING: servers ran different loop/http implementations: {impls}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000, help="messages per call")
    parser.add_argument("--rounds", type=int, default=5, help="measured calls per server")
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--gen", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        run_server(args.serve, args.messages, args.gen, args.port)
        return

    servers: dict[str, Server] = {}
    with tempfile.TemporaryDirectory(prefix="rpckit-http-bench-") as tmp:
        gen_dir = Path(tmp)
        generate_connect(gen_dir)
        try:
            for kind in KINDS:
                servers[kind] = start_server(kind, args.messages, gen_dir)
            started = time.perf_counter()
            results = asyncio.run(measure(servers, args.messages, args.rounds))
            print(f"(measured in {time.perf_counter() - started:.0f} s)\n")
            print(report(results, servers, args.messages, args.rounds))
        finally:
            for server in servers.values():
                stop_server(server.process)


if __name__ == "__main__":
    main()
