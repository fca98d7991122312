"""Server-streaming throughput: rpckit's gRPC path against a bare grpc.aio servicer.

Every server serves ``examples.streams.v1.StreamsService/JsonStream`` from its own
subprocess and streams ``--messages`` ``Dog`` messages per call as fast as it can. The
client (this process) is the same for all of them: a plain ``grpc.aio`` channel and a raw
``unary_stream`` call, so only the server differs. Rounds alternate the servers (A, B, C,
A, B, C, ...) to spread machine drift evenly; each server is warmed up first with a tenth of
a call (then cancelled).

Servers (``--servers``, comma-separated; ``grpc`` is always measured, as the baseline):

* ``rpckit``: a ``StreamsService`` subclass whose ``json_stream`` is an async generator,
  served by ``rpckit.grpc.GrpcServer`` (health and reflection on, as by default).
* ``rpckit-spawn``: the same, but ``json_stream`` returns ``Streaming.spawn(producer)``,
  the bounded sender path (the producer task ``await send()``s each message).
* ``grpc``: a bare ``grpc.aio`` servicer built from grpcio's own ``*_pb2_grpc.py`` stubs,
  ``async def JsonStream`` yielding the messages.
* ``grpc-write`` (experimental): the bare servicer, but writing each message with
  ``await context.write()`` the way rpckit's ``_server_stream`` does.
* ``rpckit-yield`` (experimental): the rpckit service behind a bench-local handler that
  yields each message to grpcio instead of ``await context.write()`` (headers, trailers and
  error mapping left out; they cost nothing per message).

The handlers cycle through ten prebuilt ``Dog`` messages, so message construction (equal
for all servers) does not dilute the framework overhead being compared. Besides the
throughput, CPU time per message (user + system) is reported for the whole server process,
for its main thread alone (the asyncio loop that runs the handlers and grpcio's Python
layer; the rest is grpc-core's threads), both from ``/proc``, and for this client process.
CPU time is less sensitive to a noisy machine than wall-clock rates, and it shows which
side was the bottleneck: with the client at a higher CPU cost per message than a server,
the throughput ratios are capped near 1.0 and the server CPU columns tell servers apart.

Run from anywhere: ``python bench/grpc_streaming.py [--messages N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from examples.streams.v1.streams_pb2 import (  # noqa: E402
    ChatMessage,
    Dog,
    DownloadFileRequest,
    DownloadRequest,
    GetDogRequest,
    JsonStreamRequest,
    TextStreamRequest,
    UploadSummary,
)
from examples.streams.v1.streams_rpckit import StreamsService  # noqa: E402
from rpckit import ByteStream, Code, Context, FileStream, RpcError, Sender, Streaming  # noqa: E402
from rpckit.v1.stream_pb2 import Text  # noqa: E402

PROTO = "examples/streams/v1/streams.proto"
PATH = "/examples.streams.v1.StreamsService/JsonStream"
BASELINE = "grpc"
DEFAULT_SERVERS = ("rpckit", "rpckit-spawn", "grpc")
ALL_SERVERS = (*DEFAULT_SERVERS, "grpc-write", "rpckit-yield")
DOGS = [Dog(name=f"Dog {i}", age=i) for i in range(10)]


# --- servers (run in subprocesses) ----------------------------------------------------------


class _Unimplemented(StreamsService):
    """Every method but json_stream answers unimplemented."""

    def text_stream(self, request: TextStreamRequest, ctx: Context) -> AsyncIterator[Text]:
        raise RpcError(Code.UNIMPLEMENTED, "not in this benchmark")

    async def upload_as_byte_stream(self, requests: ByteStream, ctx: Context) -> UploadSummary:
        raise RpcError(Code.UNIMPLEMENTED, "not in this benchmark")

    def download_as_file_stream(
        self, request: DownloadRequest, ctx: Context
    ) -> AsyncIterator[bytes]:
        raise RpcError(Code.UNIMPLEMENTED, "not in this benchmark")

    def download_file(self, request: DownloadFileRequest, ctx: Context) -> AsyncIterator[bytes]:
        raise RpcError(Code.UNIMPLEMENTED, "not in this benchmark")

    async def upload_file_as_file_stream(self, requests: FileStream, ctx: Context) -> UploadSummary:
        raise RpcError(Code.UNIMPLEMENTED, "not in this benchmark")

    async def get_dog(self, request: GetDogRequest, ctx: Context) -> Dog:
        raise RpcError(Code.UNIMPLEMENTED, "not in this benchmark")

    def chat(
        self, requests: AsyncIterator[ChatMessage], ctx: Context
    ) -> AsyncIterator[ChatMessage]:
        raise RpcError(Code.UNIMPLEMENTED, "not in this benchmark")


class GeneratorService(_Unimplemented):
    """json_stream is an async generator."""

    def __init__(self, count: int) -> None:
        self.count = count

    async def json_stream(self, request: JsonStreamRequest, ctx: Context) -> AsyncIterator[Dog]:
        for i in range(self.count):
            yield DOGS[i % 10]


class SpawnService(_Unimplemented):
    """json_stream returns Streaming.spawn(producer): the bounded sender path."""

    def __init__(self, count: int) -> None:
        self.count = count

    def json_stream(self, request: JsonStreamRequest, ctx: Context) -> Streaming[Dog]:
        count = self.count

        async def produce(sender: Sender[Dog]) -> None:
            for i in range(count):
                if not await sender.send(DOGS[i % 10]):
                    return

        return Streaming.spawn(produce)


def _load_grpc_stubs(stubs: Path) -> ModuleType:
    """grpcio's own ``streams_pb2_grpc.py``, generated by ``run_protoc`` into ``stubs``."""
    path = stubs / "examples" / "streams" / "v1" / "streams_pb2_grpc.py"
    spec = importlib.util.spec_from_file_location("streams_pb2_grpc", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bare_server(stubs: Path, count: int, write: bool) -> Any:
    module = _load_grpc_stubs(stubs)
    base: Any = module.StreamsServiceServicer

    class YieldServicer(base):  # type: ignore[misc]
        async def JsonStream(self, request: Any, context: Any) -> AsyncIterator[Any]:
            for i in range(count):
                yield DOGS[i % 10]

    class WriteServicer(base):  # type: ignore[misc]
        async def JsonStream(self, request: Any, context: Any) -> None:
            for i in range(count):
                await context.write(DOGS[i % 10])

    server: Any = grpc.aio.server()
    servicer = WriteServicer() if write else YieldServicer()
    module.add_StreamsServiceServicer_to_server(servicer, server)
    return server


def _yielding_server(count: int) -> Any:
    """The rpckit service with json_stream served by a handler that yields to grpcio."""
    from rpckit.grpc.server import _context, _method_handler
    from rpckit.service import resolve_stream
    from rpckit.streams import aclose
    from rpckit.wellknown import encode_stream

    service = GeneratorService(count)
    spec = service.spec()
    handlers: dict[str, Any] = {}
    for method, fn in service.bind():
        if method.name != "JsonStream":
            handlers[method.name] = _method_handler(method, fn)
            continue

        def bind(method: Any = method, fn: Callable[..., Any] = fn) -> Any:
            async def server_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                ctx = _context(method, context)
                stream = await resolve_stream(fn(request, ctx))
                messages = encode_stream(method, stream)
                try:
                    async for message in messages:
                        yield message
                finally:
                    await aclose(messages)
                    await aclose(stream)

            return grpc.unary_stream_rpc_method_handler(
                server_stream,
                request_deserializer=method.input.FromString,
                response_serializer=method.output.SerializeToString,
            )

        handlers[method.name] = bind()
    server: Any = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(spec.name, handlers)])
    return server


async def serve(kind: str, count: int, stubs: Path) -> None:
    """Serve one kind of server on a free port; print the port; run until stdin closes."""
    stop: Callable[[], Any]
    if kind in ("rpckit", "rpckit-spawn"):
        from rpckit.grpc.server import GrpcServer

        service = GeneratorService(count) if kind == "rpckit" else SpawnService(count)
        rpckit_server = GrpcServer([service])
        port = await rpckit_server.start("127.0.0.1:0")
        stop = lambda: rpckit_server.stop(None)  # noqa: E731
    else:
        if kind == "rpckit-yield":
            server = _yielding_server(count)
        else:
            server = _bare_server(stubs, count, write=kind == "grpc-write")
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        stop = lambda: server.stop(None)  # noqa: E731
    print(port, flush=True)
    # The parent closes our stdin (or dies) to stop us.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await stop()


# --- client (this process) ------------------------------------------------------------------


@dataclass
class Server:
    kind: str
    process: subprocess.Popen[str]
    port: int
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    loop_cpu_us: list[float] = field(default_factory=list)
    client_cpu_us: list[float] = field(default_factory=list)


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int, *, loop_thread: bool = False) -> float | None:
    """User + system CPU seconds of a process (or of its main thread), or None off Linux."""
    stat = f"/proc/{pid}/task/{pid}/stat" if loop_thread else f"/proc/{pid}/stat"
    try:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def start_server(kind: str, count: int, stubs: Path) -> Server:
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", kind]
    command += ["--messages", str(count), "--stubs", str(stubs)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.strip().isdigit():
        process.kill()
        raise RuntimeError(f"{kind} server did not start (got {line!r})")
    return Server(kind, process, int(line))


def stop_server(server: Server) -> None:
    process = server.process
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def stream_once(server: Server, count: int) -> tuple[float, list[float], float]:
    """One call: msgs/s, server (whole, loop thread) and client CPU microseconds per message."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        await channel.channel_ready()
        call = channel.unary_stream(
            PATH,
            request_serializer=JsonStreamRequest.SerializeToString,
            response_deserializer=Dog.FromString,
        )
        pid = server.process.pid
        cpu_before = [cpu_seconds(pid), cpu_seconds(pid, loop_thread=True)]
        client_before = time.process_time()
        start = time.perf_counter()
        received = 0
        async for _ in call(JsonStreamRequest()):
            received += 1
        elapsed = time.perf_counter() - start
        client_cpu = (time.process_time() - client_before) / count * 1e6
        cpu_after = [cpu_seconds(pid), cpu_seconds(pid, loop_thread=True)]
    if received != count:
        raise RuntimeError(f"{server.kind}: got {received} messages, expected {count}")
    cpu = [
        (after - before) / count * 1e6
        for before, after in zip(cpu_before, cpu_after, strict=True)
        if before is not None and after is not None
    ]
    return count / elapsed, cpu, client_cpu


async def warm_up(server: Server, count: int) -> None:
    """Read the first ``count`` messages of one call, then cancel it."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.unary_stream(
            PATH,
            request_serializer=JsonStreamRequest.SerializeToString,
            response_deserializer=Dog.FromString,
        )(JsonStreamRequest())
        for _ in range(count):
            await call.read()
        call.cancel()


def _fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}"


def report(servers: list[Server], count: int, rounds: int) -> str:
    baseline = next(s for s in servers if s.kind == BASELINE)
    lines = [
        f"Server-streaming `JsonStream`, {count:,} `Dog` messages per call, {rounds} rounds "
        "(median / min / max msgs/s; ratio = median of per-round ratios to bare grpc.aio).",
        "",
        "| server | median msgs/s | min | max | vs grpc.aio | server CPU µs/msg "
        "| loop-thread CPU µs/msg | client CPU µs/msg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in servers:
        ratio = statistics.median(a / b for a, b in zip(s.rates, baseline.rates, strict=True))
        cpu = f"{statistics.median(s.cpu_us):.1f}" if s.cpu_us else "n/a"
        loop = f"{statistics.median(s.loop_cpu_us):.1f}" if s.loop_cpu_us else "n/a"
        lines.append(
            f"| {s.kind} | {_fmt_rate(statistics.median(s.rates))} | {_fmt_rate(min(s.rates))} "
            f"| {_fmt_rate(max(s.rates))} | {ratio:.2f}x | {cpu} | {loop} "
            f"| {statistics.median(s.client_cpu_us):.1f} |"
        )
    lines += [
        "",
        f"Python {platform.python_version()}, grpcio {grpc.__version__}, "
        f"protobuf {_protobuf_version()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.machine()}.",
    ]
    return "\n".join(lines)


def _protobuf_version() -> str:
    from google.protobuf import __version__

    return str(__version__)


async def measure(servers: list[Server], count: int, rounds: int) -> None:
    for server in servers:
        await warm_up(server, max(1, count // 10))
    for r in range(rounds):
        for server in servers:
            rate, cpu, client_cpu = await stream_once(server, count)
            server.rates.append(rate)
            server.client_cpu_us.append(client_cpu)
            if len(cpu) == 2:
                server.cpu_us.append(cpu[0])
                server.loop_cpu_us.append(cpu[1])
            print(f"  round {r + 1}: {server.kind:<13} {_fmt_rate(rate):>9} msgs/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000, help="messages per call")
    parser.add_argument("--rounds", type=int, default=5, help="measured calls per server")
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma-separated, from {', '.join(ALL_SERVERS)} ({BASELINE} is always added)",
    )
    parser.add_argument("--serve", choices=ALL_SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--stubs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        asyncio.run(serve(args.serve, args.messages, args.stubs))
        return

    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(ALL_SERVERS))
    if unknown:
        parser.error(f"unknown servers: {', '.join(unknown)}")
    if BASELINE not in kinds:
        kinds.append(BASELINE)
    kinds = list(dict.fromkeys(kinds))

    from rpckit.codegen.protoc import run_protoc

    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="rpckit-bench-") as tmp:
        stubs = Path(tmp)
        run_protoc([PROTO], proto_paths=[REPO / "protos"], out=stubs, grpc_python=True)
        try:
            for kind in kinds:
                servers.append(start_server(kind, args.messages, stubs))
            asyncio.run(measure(servers, args.messages, args.rounds))
        finally:
            for server in servers:
                stop_server(server)
    print()
    print(report(servers, args.messages, args.rounds))


if __name__ == "__main__":
    main()
