"""rpckit as shipped (``rpckit serve``) against the peers users compare it with, in one run.

Every contender is a server process on loopback; rounds go through them in turn (all are
up at once, so drift on a shared machine hits them alike) and the table gives medians with
min-max. Server CPU comes from ``/proc/<pid>/stat`` (utime + stime of the server's process
tree) around the measured load only. The load generators are C programs (``wrk``, ``h2load``,
``curl``), so the client's CPU is small and not Python's.

Scenarios and contenders:

- **GET** ``/api/dogs/3`` (a JSON answer): ``rpckit serve`` (GetDog's plain route), bare
  Starlette, FastAPI; on uvicorn and granian. wrk: p50 at one connection, req/s and server
  CPU per call at 64.
- **JSON POST** ``/examples.streams.v1.StreamsService/GetDog`` ``{"index": 3}``: rpckit's
  Connect endpoint, connectrpc's own ASGI app (code generated at run time), bare Starlette
  and FastAPI parsing the same body; on uvicorn and granian.
- **gRPC unary** GetDog: rpckit serve ``--grpc`` (grpc.aio), bare grpc.aio generic
  handlers, grpclib; h2load mean at one stream, req/s and CPU per call at 64 streams.
- **upload** of one file (``--size-mib``, 512 MiB by default) with ``curl -T``: the streams
  example's ``POST /api/upload_as_file_stream`` (sha256 + every chunk written to disk)
  against bare Starlette and FastAPI routes doing the same with ``request.stream()``.
- **download** of the same file: rpckit's ``FileStream`` (``GET /api/files/<name>``) on
  uvicorn and on granian (ASGI pathsend), Starlette's ``FileResponse``, nginx ``sendfile``.
- **SSE**: ``--messages`` Dog events: rpckit's ``GET /api/json_stream`` with
  ``Accept: text/event-stream`` against sse-starlette's ``EventSourceResponse``.

Noise: "starlette #2" is a second, identical bare Starlette process on uvicorn, measured
like the others; its difference from "starlette" is the run's noise. Goals print PASS or
FAIL at the end. ``--only get,post,grpc,upload,download,sse`` limits the scenarios.

    python bench/peers.py [--rounds 3] [--seconds 3] [--size-mib 512] [--messages 20000]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MIB = 1024 * 1024
CONNECT_PATH = "/examples.streams.v1.StreamsService/GetDog"
FILE_NAME = "payload.bin"
KIND_ENV = "RPCKIT_PEERS_KIND"
FILES_ENV = "RPCKIT_PEERS_FILES"
COUNT_ENV = "RPCKIT_PEERS_COUNT"
GEN_ENV = "RPCKIT_PEERS_GEN"
_TICK = os.sysconf("SC_CLK_TCK")


# --- what rpckit serve serves ---------------------------------------------------------------


def create_service(argv: list[str]) -> Any:
    """``rpckit serve bench.peers:create_service``: the streams example as shipped (GetDog,
    the file upload and download handlers), with JsonStream yielding the bench's count of
    dogs without pausing (the example's own pauses 500 ms between dogs)."""
    from examples.streams.server import StreamsExample
    from examples.streams.v1.streams_pb2 import Dog

    count = int(os.environ.get(COUNT_ENV, "20000"))

    class PeersExample(StreamsExample):
        async def json_stream(  # type: ignore[override]  # a plain generator, no pauses
            self, request: Any, ctx: Any
        ) -> AsyncIterator[Dog]:
            for i in range(count):
                yield Dog(name=f"Dog {i}", age=i % 10)

    return PeersExample(Path(os.environ[FILES_ENV]))


# --- the peers' apps (uvicorn/granian --factory bench.peers:peer_app) -----------------------


def _starlette_app(directory: Path, count: int) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Route

    uploads = 0

    async def dog(request: Request) -> JSONResponse:
        index = int(request.path_params["index"])
        return JSONResponse({"name": f"Dog {index}", "age": index % 10})

    async def post_dog(request: Request) -> JSONResponse:
        index = int((await request.json()).get("index", 0))
        return JSONResponse({"name": f"Dog {index}", "age": index % 10})

    async def upload(request: Request) -> JSONResponse:
        nonlocal uploads
        uploads += 1
        digest = hashlib.sha256()
        size = 0
        with open(directory / f"upload-{os.getpid()}-{uploads}.bin", "xb") as f:
            async for chunk in request.stream():
                digest.update(chunk)
                f.write(chunk)
                size += len(chunk)
        return JSONResponse({"size": size, "sha256": digest.hexdigest()})

    async def download(request: Request) -> Response:
        name = request.path_params["name"]
        path = directory / name
        if "/" in name or not path.is_file():
            return Response(status_code=404)
        return FileResponse(path)

    return Starlette(
        routes=[
            Route("/api/dogs/{index}", dog, methods=["GET"]),
            Route(CONNECT_PATH, post_dog, methods=["POST"]),
            Route("/upload", upload, methods=["POST"]),
            Route("/files/{name}", download, methods=["GET"]),
        ]
    )


try:  # FastAPI's models: module-level, so that FastAPI resolves the string annotations
    from fastapi import FastAPI, Request
    from pydantic import BaseModel

    class DogOut(BaseModel):
        name: str
        age: int

    class GetDogIn(BaseModel):
        index: int = 0

except ImportError:  # pragma: no cover - pydantic comes with FastAPI
    pass


def _fastapi_app(directory: Path) -> Any:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    uploads = 0

    @app.get("/api/dogs/{index}")
    async def dog(index: int) -> DogOut:
        return DogOut(name=f"Dog {index}", age=index % 10)

    @app.post(CONNECT_PATH)
    async def post_dog(body: GetDogIn) -> DogOut:
        return DogOut(name=f"Dog {body.index}", age=body.index % 10)

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, Any]:
        nonlocal uploads
        uploads += 1
        digest = hashlib.sha256()
        size = 0
        with open(directory / f"upload-{os.getpid()}-{uploads}.bin", "xb") as f:
            async for chunk in request.stream():
                digest.update(chunk)
                f.write(chunk)
                size += len(chunk)
        return {"size": size, "sha256": digest.hexdigest()}

    return app


def _sse_app(count: int) -> Any:
    from sse_starlette.sse import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.routing import Route

    async def events(request: Request) -> EventSourceResponse:
        async def gen() -> AsyncIterator[dict[str, str]]:
            for i in range(count):
                data = json.dumps({"name": f"Dog {i}", "age": i % 10}, separators=(",", ":"))
                yield {"data": data}

        return EventSourceResponse(gen(), ping=3600)

    return Starlette(routes=[Route("/api/json_stream", events, methods=["GET"])])


def _connectrpc_app(gen_dir: Path) -> Any:
    from bench.http_streaming import load_connect_module
    from examples.streams.v1.streams_pb2 import Dog

    generated = load_connect_module(gen_dir)

    async def get_dog(self: Any, request: Any, ctx: Any) -> Dog:
        return Dog(name=f"Dog {request.index}", age=request.index % 10)

    service_type = type("ConnectDogs", (generated.StreamsService,), {"get_dog": get_dog})
    return generated.StreamsServiceASGIApplication(service_type())


def peer_app() -> Any:
    """The ASGI app of the peer ``$RPCKIT_PEERS_KIND`` (an app factory for uvicorn/granian)."""
    kind = os.environ[KIND_ENV]
    directory = Path(os.environ.get(FILES_ENV, "."))
    count = int(os.environ.get(COUNT_ENV, "20000"))
    if kind == "starlette":
        return _starlette_app(directory, count)
    if kind == "fastapi":
        return _fastapi_app(directory)
    if kind == "sse-starlette":
        return _sse_app(count)
    if kind == "connectrpc":
        return _connectrpc_app(Path(os.environ[GEN_ENV]))
    raise SystemExit(f"unknown peer {kind}")


def serve_grpc_aio(port: int) -> None:
    """Bare grpc.aio with a generic handler for GetDog, on uvloop."""

    import grpc
    import uvloop

    from examples.streams.v1.streams_pb2 import Dog, GetDogRequest

    async def get_dog(request: GetDogRequest, context: Any) -> Dog:
        return Dog(name=f"Dog {request.index}", age=request.index % 10)

    async def main() -> None:
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(
            get_dog,
            request_deserializer=GetDogRequest.FromString,
            response_serializer=Dog.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("examples.streams.v1.StreamsService",
                                                  {"GetDog": handler})]
        )  # fmt: skip
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(main())


def serve_grpclib(port: int) -> None:
    """grpclib (pure-Python HTTP/2 on h2) with the same GetDog, on uvloop."""
    import asyncio

    import uvloop
    from grpclib.const import Cardinality, Handler
    from grpclib.server import Server

    from examples.streams.v1.streams_pb2 import Dog, GetDogRequest

    class Dogs:
        async def get_dog(self, stream: Any) -> None:
            request = await stream.recv_message()
            await stream.send_message(Dog(name=f"Dog {request.index}", age=request.index % 10))

        def __mapping__(self) -> dict[str, Handler]:
            return {
                CONNECT_PATH: Handler(self.get_dog, Cardinality.UNARY_UNARY, GetDogRequest, Dog)
            }

    async def main() -> None:
        server = Server([Dogs()])
        await server.start("127.0.0.1", port)
        await server.wait_closed()

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(main())


# --- processes ------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    http: str  # "uvicorn", "granian", "nginx", "grpc"
    pids: list[int] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_tree(pid: int) -> list[int]:
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


def cpu_seconds(server: Server) -> float:
    total = 0
    for pid in server.pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def _await_port(server: Server, log: Path) -> None:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"{server.name} exited:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), 1):
                time.sleep(0.3)  # granian/uvicorn workers finish starting
                server.pids = process_tree(server.process.pid)
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{server.name} did not listen on {server.port}")


def start(name: str, command: list[str], http: str, port: int, tmp: Path,
          env: dict[str, str]) -> Server:  # fmt: skip
    log = tmp / (re.sub(r"\W+", "-", name) + ".log")
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
        )  # fmt: skip
    server = Server(name, process, port, http)
    _await_port(server, log)
    return server


def start_rpckit(server_kind: str, env: dict[str, str], tmp: Path, grpc: bool = False) -> Server:
    port = free_port()
    command = [
        sys.executable, "-m", "rpckit", "serve", "bench.peers:create_service",
        "--http", f"127.0.0.1:{port}", "--server", server_kind, "--log-level", "warning",
    ]  # fmt: skip
    name = f"rpckit serve, {server_kind}"
    if grpc:
        grpc_port = free_port()
        command += ["--grpc", f"127.0.0.1:{grpc_port}"]
    server = start(name, command, server_kind, port, tmp, env)
    if grpc:
        server.grpc_port = grpc_port  # type: ignore[attr-defined]
    return server


def start_peer(kind: str, server_kind: str, env: dict[str, str], tmp: Path,
               label: str = "") -> Server:  # fmt: skip
    port = free_port()
    if server_kind == "uvicorn":
        command = [
            sys.executable, "-m", "uvicorn", "bench.peers:peer_app", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop",
            "--http", "httptools", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    else:
        command = [
            sys.executable, "-m", "granian", "bench.peers:peer_app", "--factory",
            "--interface", "asginl", "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--workers", "1", "--log-level", "warning", "--no-ws",
        ]  # fmt: skip
    name = f"{label or kind}, {server_kind}"
    return start(name, command, server_kind, port, tmp, {**env, KIND_ENV: kind})


def start_grpc_peer(kind: str, tmp: Path) -> Server:
    port = free_port()
    command = [sys.executable, str(Path(__file__)), f"--serve-{kind}", str(port)]
    return start(kind, command, "grpc", port, tmp, {})


NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


def start_nginx(directory: Path, tmp: Path) -> Server | None:
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        return None
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, root=directory))
    command = [nginx, "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "nginx-error.log")]
    return start("nginx", command, "nginx", port, tmp, {})


def stop(server: Server) -> None:
    process = server.process
    pids = process_tree(process.pid)
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(2 if server.http != "nginx" else 15)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    for pid in pids[1:]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


# --- load -----------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


@dataclass
class Sample:
    """One measurement of one contender in one scenario and round."""

    figures: dict[str, float]


def wrk(
    url: str, connections: int, seconds: float, script: Path | None
) -> tuple[float, float, int]:
    """(p50 ms, requests/s, requests) of one wrk run; exits on errors."""
    command = ["wrk", "--latency", f"-t{1 if connections == 1 else 2}", f"-c{connections}",
               f"-d{max(1, round(seconds))}s", url]  # fmt: skip
    if script is not None:
        command[1:1] = ["-s", str(script)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not (p50 and rate and total) or "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk {url}: unexpected output:\n{out}")
    return _ms(p50.group(1)), float(rate.group(1)), int(total.group(1))


def h2load(port: int, data: Path, clients: int, streams: int, n: int) -> tuple[float, float, int]:
    """(mean µs, requests/s, requests) of GetDog over gRPC; exits unless all succeeded."""
    command = [
        "h2load", f"-n{n}", f"-c{clients}", f"-m{streams}", "-d", str(data),
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        f"http://127.0.0.1:{port}{CONNECT_PATH}",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if not (rate and mean and done) or done.group(1) != done.group(2):
        raise SystemExit(f"h2load: unexpected output:\n{out}")
    return _ms(mean.group(1)) * 1000, float(rate.group(1)), int(done.group(2))


def curl(args: list[str]) -> str:
    return subprocess.run(["curl", "-sS", "--fail", *args], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


@dataclass
class Payload:
    path: Path
    size: int
    sha256: str


def make_payload(directory: Path, size_mib: int) -> Payload:
    path = directory / FILE_NAME
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size_mib):
            block = os.urandom(MIB)
            digest.update(block)
            f.write(block)
    return Payload(path, size_mib * MIB, digest.hexdigest())


def clean_uploads(directory: Path) -> None:
    for path in directory.iterdir():
        if path.name != FILE_NAME:
            path.unlink(missing_ok=True)


# --- scenarios ------------------------------------------------------------------------------


@dataclass
class Contender:
    scenario: str
    server: Server
    path: str
    label: str = ""
    figures: dict[str, list[float]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.label or self.server.name

    def add(self, key: str, value: float) -> None:
        self.figures.setdefault(key, []).append(value)


def measure_http_unary(c: Contender, seconds: float, script: Path | None) -> None:
    url = c.server.base + c.path
    wrk(url, 8, 1, script)  # warm-up
    p50, _, _ = wrk(url, 1, seconds, script)
    c.add("p50", p50 * 1000)
    used = cpu_seconds(c.server)
    _, rate, requests = wrk(url, 64, seconds, script)
    c.add("rate", rate)
    c.add("cpu", (cpu_seconds(c.server) - used) / requests * 1e6)


def measure_grpc(c: Contender, data: Path, requests: int) -> None:
    port = getattr(c.server, "grpc_port", c.server.port)
    h2load(port, data, 1, 1, 500)  # warm-up
    mean, _, _ = h2load(port, data, 1, 1, max(1000, requests // 10))
    c.add("p50", mean)  # h2load reports the mean, not the median
    used = cpu_seconds(c.server)
    _, rate, done = h2load(port, data, 4, 16, requests)
    c.add("rate", rate)
    c.add("cpu", (cpu_seconds(c.server) - used) / done * 1e6)


def measure_upload(c: Contender, payload: Payload, directory: Path) -> None:
    headers = [
        "-H", "content-type: application/octet-stream", "-H", "Expect:",
        "-H", f"x-content-size: {payload.size}",
        "-H", 'content-disposition: attachment; filename="upload.bin"',
    ]  # fmt: skip
    used = cpu_seconds(c.server)
    began = time.perf_counter()
    out = curl(["-X", "POST", "-T", str(payload.path), *headers, c.server.base + c.path])
    wall = time.perf_counter() - began
    cpu = cpu_seconds(c.server) - used
    clean_uploads(directory)
    summary = json.loads(out)
    if int(summary.get("size", -1)) != payload.size or summary.get("sha256") != payload.sha256:
        raise SystemExit(f"{c.name}: upload summary {summary} is wrong")
    c.add("rate", payload.size / wall / 1e6)
    c.add("cpu", cpu / (payload.size / 1e9))


def measure_download(c: Contender, payload: Payload, repeat: int) -> None:
    """``repeat`` downloads one after the other (nginx spends so little CPU that one 512 MiB
    download is a handful of clock ticks)."""
    used = cpu_seconds(c.server)
    began = time.perf_counter()
    for _ in range(repeat):
        out = curl(["-o", "/dev/null", "-w", "%{size_download}", c.server.base + c.path])
        if int(out) != payload.size:
            raise SystemExit(f"{c.name}: downloaded {out} bytes, expected {payload.size}")
    wall = time.perf_counter() - began
    cpu = max(cpu_seconds(c.server) - used, 1 / _TICK)  # at least one tick: never zero
    c.add("rate", payload.size * repeat / wall / 1e6)
    c.add("cpu", cpu / (payload.size * repeat / 1e9))


def measure_sse(c: Contender, count: int) -> None:
    used = cpu_seconds(c.server)
    began = time.perf_counter()
    out = subprocess.run(
        ["curl", "-sS", "--fail", "-N", "-H", "accept: text/event-stream", c.server.base + c.path],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    wall = time.perf_counter() - began
    cpu = cpu_seconds(c.server) - used
    events = out.count(b'"Dog ')
    if events != count:
        raise SystemExit(f"{c.name}: {events} SSE events, expected {count}")
    c.add("rate", count / wall)
    c.add("cpu", cpu / count * 1e6)


# --- report ---------------------------------------------------------------------------------

SCENARIOS = {
    "get": ("GET /api/dogs/3", "p50 c=1", "µs", "req/s c=64", "CPU/call", "µs"),
    "post": ("JSON POST " + CONNECT_PATH, "p50 c=1", "µs", "req/s c=64", "CPU/call", "µs"),
    "grpc": ("gRPC unary GetDog", "mean c=1", "µs", "req/s c=64", "CPU/call", "µs"),
    "upload": ("upload (sha256 + write)", "", "", "MB/s", "CPU", "s/GB"),
    "download": ("download", "", "", "MB/s", "CPU", "s/GB"),
    "sse": ("SSE Dog events", "", "", "events/s", "CPU/event", "µs"),
}


def _spread(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def _fmt(value: float) -> str:
    return "{:,.0f}" if value >= 100 else "{:.2f}" if value < 10 else "{:.1f}"


def median(c: Contender, key: str) -> float:
    return statistics.median(c.figures[key])


def report(contenders: list[Contender], args: Any) -> tuple[str, list[str]]:
    lines: list[str] = []
    for scenario, (title, lat, lat_unit, rate, cpu, cpu_unit) in SCENARIOS.items():
        rows = [c for c in contenders if c.scenario == scenario and c.figures]
        if not rows:
            continue
        lines.append(f"\n#### {title}\n")
        head = ["server"]
        if lat:
            head.append(f"{lat} ({lat_unit})")
        head += [rate, f"server {cpu} ({cpu_unit})"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|---" + "|---:" * (len(head) - 1) + "|")
        for c in rows:
            cells = [c.name]
            if lat:
                cells.append(_spread(c.figures["p50"], "{:,.0f}"))
            cells.append(_spread(c.figures["rate"], "{:,.0f}"))
            cells.append(_spread(c.figures["cpu"], _fmt(median(c, "cpu"))))
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Medians (min-max) of {args.rounds} interleaved rounds; {args.seconds:g} s wrk runs; "
        f"{args.size_mib} MiB file; {args.messages:,} SSE events. {versions()}."
    )
    return "\n".join(lines), goals(contenders)


def _find(contenders: list[Contender], scenario: str, name: str) -> Contender | None:
    for c in contenders:
        if c.scenario == scenario and c.name == name and c.figures:
            return c
    return None


def goals(contenders: list[Contender]) -> list[str]:
    out: list[str] = []

    def check(ok: bool, text: str) -> None:
        out.append(f"{'PASS' if ok else 'FAIL'}: {text}")

    for server in ("uvicorn", "granian"):
        for scenario, peer in (("get", "starlette"), ("post", "starlette")):
            mine = _find(contenders, scenario, f"rpckit serve, {server}")
            bare = _find(contenders, scenario, f"{peer}, {server}")
            if mine is None or bare is None:
                continue
            what = "plain GET" if scenario == "get" else "Connect JSON POST"
            cpu = median(mine, "cpu") / median(bare, "cpu")
            figures = f"{median(mine, 'cpu'):.1f} vs {median(bare, 'cpu'):.1f} µs"
            check(
                cpu <= 1.0,
                f"{server}: rpckit {what} server CPU/call {cpu:.2f}x bare "
                f"Starlette ({figures}; goal <= 1.0x)",
            )
            p50 = median(mine, "p50") / median(bare, "p50")
            figures = f"{median(mine, 'p50'):.0f} vs {median(bare, 'p50'):.0f} µs"
            check(p50 <= 1.0, f"{server}: rpckit {what} p50 c=1 {p50:.2f}x bare Starlette "
                              f"({figures}; goal <= 1.0x)")  # fmt: skip
    for server in ("uvicorn", "granian"):
        mine = _find(contenders, "upload", f"rpckit serve, {server}")
        bare = _find(contenders, "upload", f"starlette, {server}")
        if mine is not None and bare is not None:
            ratio = median(mine, "rate") / median(bare, "rate")
            figures = f"{median(mine, 'rate'):,.0f} vs {median(bare, 'rate'):,.0f}"
            check(ratio >= 1.0, f"{server}: upload {ratio:.2f}x bare Starlette MB/s "
                                f"({figures}; goal >= 1.0x)")  # fmt: skip
    nginx = _find(contenders, "download", "nginx")
    for server, goal in (("uvicorn", 3.0), ("granian", 2.0)):
        mine = _find(contenders, "download", f"rpckit serve, {server}")
        if mine is not None and nginx is not None:
            ratio = median(mine, "cpu") / median(nginx, "cpu")
            figures = f"{median(mine, 'cpu'):.2f} vs {median(nginx, 'cpu'):.2f} s/GB"
            check(ratio <= goal, f"{server}: download server CPU {ratio:.1f}x nginx sendfile "
                                 f"({figures}; goal <= {goal:g}x)")  # fmt: skip
    noise = []
    for scenario in ("get", "post", "upload"):
        a = _find(contenders, scenario, "starlette, uvicorn")
        b = _find(contenders, scenario, "starlette #2, uvicorn")
        if a is None or b is None:
            continue
        for key in ("p50", "rate", "cpu"):
            if key in a.figures and key in b.figures:
                noise.append(
                    f"{scenario} {key} {abs(median(b, key) / median(a, key) - 1) * 100:.0f}%"
                )
    if noise:
        out.append("noise (starlette #2 vs starlette, identical): " + ", ".join(noise))
    return out


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def versions() -> str:
    names = ["uvicorn", "granian", "starlette", "fastapi", "connectrpc", "grpcio", "grpclib",
             "sse-starlette", "uvloop", "httptools"]  # fmt: skip
    nginx = ""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        done = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
        nginx = ", " + done.stderr.strip().split(": ")[-1]
    return (
        f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        + ", ".join(f"{n} {_version(n)}" for n in names)
        + nginx
    )


# --- main -----------------------------------------------------------------------------------


def run(args: Any) -> int:
    only = set(args.only.split(",")) if args.only else set(SCENARIOS)
    for tool in ("wrk", "h2load", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(
                f"bench/peers.py needs {tool} (apt-get install wrk nghttp2-client curl)"
            )
    servers: list[Server] = []
    contenders: list[Contender] = []
    with tempfile.TemporaryDirectory(prefix="rpckit-peers-") as tmp_name:
        tmp = Path(tmp_name)
        files = tmp / "files"
        files.mkdir()
        payload = make_payload(files, args.size_mib) if only & {"upload", "download"} else None
        gen = tmp / "gen"
        gen.mkdir()
        env = {FILES_ENV: str(files), COUNT_ENV: str(args.messages), GEN_ENV: str(gen)}
        try:
            http_kinds = ("uvicorn", "granian")
            rpckit = {k: start_rpckit(k, env, tmp, grpc=(k == "uvicorn")) for k in http_kinds}
            servers += rpckit.values()
            if only & {"get", "post", "upload", "download"}:
                star = {k: start_peer("starlette", k, env, tmp) for k in http_kinds}
                twin = start_peer("starlette", "uvicorn", env, tmp, label="starlette #2")
                fast = {k: start_peer("fastapi", k, env, tmp) for k in http_kinds}
                servers += [*star.values(), twin, *fast.values()]
                for scenario, path in (("get", "/api/dogs/3"), ("post", CONNECT_PATH)):
                    if scenario not in only:
                        continue
                    for k in http_kinds:
                        contenders.append(Contender(scenario, rpckit[k], path))
                        contenders.append(Contender(scenario, star[k], path))
                        if k == "uvicorn":
                            contenders.append(Contender(scenario, twin, path))
                        contenders.append(Contender(scenario, fast[k], path))
                if "post" in only:
                    from bench.http_streaming import generate_connect

                    generate_connect(gen)
                    for k in http_kinds:
                        server = start_peer("connectrpc", k, env, tmp)
                        servers.append(server)
                        contenders.append(Contender("post", server, CONNECT_PATH))
                if "upload" in only:
                    for k in http_kinds:
                        contenders.append(
                            Contender("upload", rpckit[k], "/api/upload_as_file_stream")
                        )
                        contenders.append(Contender("upload", star[k], "/upload"))
                        if k == "uvicorn":
                            contenders.append(Contender("upload", twin, "/upload"))
                        contenders.append(Contender("upload", fast[k], "/upload"))
                if "download" in only:
                    for k in http_kinds:
                        contenders.append(
                            Contender("download", rpckit[k], f"/api/files/{FILE_NAME}")
                        )
                        contenders.append(Contender("download", star[k], f"/files/{FILE_NAME}"))
                    nginx = start_nginx(files, tmp)
                    if nginx is None:
                        print("nginx is not installed: no download reference", file=sys.stderr)
                    else:
                        servers.append(nginx)
                        contenders.append(Contender("download", nginx, f"/{FILE_NAME}"))
            if "grpc" in only:
                contenders.append(Contender("grpc", rpckit["uvicorn"], CONNECT_PATH,
                                            label="rpckit serve --grpc (grpc.aio)"))  # fmt: skip
                for kind in ("grpc.aio", "grpclib"):
                    server = start_grpc_peer(kind, tmp)
                    servers.append(server)
                    contenders.append(Contender("grpc", server, CONNECT_PATH, label=f"bare {kind}"))
            if "sse" in only:
                for k in http_kinds:
                    contenders.append(Contender("sse", rpckit[k], "/api/json_stream"))
                    server = start_peer("sse-starlette", k, env, tmp)
                    servers.append(server)
                    contenders.append(Contender("sse", server, "/api/json_stream"))
            script = tmp / "post.lua"
            script.write_text(
                'wrk.method = "POST"\nwrk.body = \'{"index": 3}\'\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
            )
            from examples.streams.v1.streams_pb2 import GetDogRequest

            message = GetDogRequest(index=3).SerializeToString()
            grpc_data = tmp / "getdog.bin"
            grpc_data.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
            began = time.monotonic()
            for round_ in range(args.rounds):
                # Alternate the order each round, so no contender always runs first.
                ordered = contenders if round_ % 2 == 0 else contenders[::-1]
                for c in ordered:
                    if c.scenario == "get":
                        measure_http_unary(c, args.seconds, None)
                    elif c.scenario == "post":
                        measure_http_unary(c, args.seconds, script)
                    elif c.scenario == "grpc":
                        measure_grpc(c, grpc_data, args.grpc_requests)
                    elif c.scenario == "upload":
                        assert payload is not None
                        measure_upload(c, payload, files)
                    elif c.scenario == "download":
                        assert payload is not None
                        measure_download(c, payload, args.download_repeat)
                    elif c.scenario == "sse":
                        measure_sse(c, args.messages)
                print(f"round {round_ + 1}/{args.rounds} done ({time.monotonic() - began:.0f} s)",
                      file=sys.stderr)  # fmt: skip
        finally:
            for server in servers:
                stop(server)
    table, verdicts = report(contenders, args)
    print(table)
    print("\n```\n" + "\n".join(verdicts) + "\n```")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="each wrk run")
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--download-repeat", type=int, default=4, help="downloads per sample")
    parser.add_argument("--messages", type=int, default=20000, help="SSE events per call")
    parser.add_argument("--grpc-requests", type=int, default=20000, help="h2load at c=64")
    parser.add_argument("--only", default="", help="get,post,grpc,upload,download,sse")
    parser.add_argument("--serve-grpc.aio", dest="serve_grpc_aio", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-grpclib", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_grpc_aio:
        serve_grpc_aio(args.serve_grpc_aio)
        return 0
    if args.serve_grpclib:
        serve_grpclib(args.serve_grpclib)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
