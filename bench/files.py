"""File and stream throughput of the plain-HTTP bridge against nginx and bare Starlette.

One run measures three scenarios, each server in its own subprocess on loopback:

* **download**: ``GET`` of one ``--size-mib`` file of random bytes.

  - ``rpckit/granian``: the example bridge (``examples.streams.asgi:app``, ``RPCKIT_FILES``
    set to the file's directory) at ``GET /api/files/<name>`` on granian (one worker,
    ``--interface asgi``). granian offers the ASGI ``http.response.pathsend`` extension, so
    ``send_file`` hands granian the path and Python never touches the bytes.
  - ``rpckit/granian, pathsend hidden`` (only with ``--granian-chunks``): the same, with
    ``http.response.pathsend`` taken out of the scope's extensions, so ``send_file`` falls
    back to 256 KiB reads in a thread: the control that shows what pathsend is worth. Off
    by default because on granian 2.8 these downloads are cut short now and then: rpckit
    then has two tasks waiting in ``receive()`` at once (``run_until_disconnect`` and
    ``send_file``'s own watcher) and granian answers one of them ``http.disconnect`` while
    the client is still reading; such a run stops with an error naming the server.
  - ``rpckit/uvicorn``: the same app on uvicorn (no pathsend: 256 KiB reads in a thread).
  - ``nginx``: Debian's nginx, started by this script with a config of its own
    (``sendfile on; tcp_nopush on;``, one process, ``master_process off``). The reference.
  - ``starlette FileResponse/uvicorn``: a bare Starlette route answering
    ``FileResponse(path)`` (64 KiB reads in a thread).

  The rpckit servers run the example app behind a thin probe (``probed_example``) that
  counts the ASGI message types sent and answers them at ``GET /__bench/sends``: the report
  says from that whether granian really sent the file with pathsend.

* **upload**: ``POST`` of the same file in 1 MiB chunks (with ``Content-Length``).

  - ``rpckit/uvicorn``: the example's ``POST /api/upload_as_file_stream``
    (``UploadFileAsFileStream``): rpckit checks the declared size, the handler updates a
    sha256 and writes every chunk to a new file with ``asyncio.to_thread(out.write, ...)``,
    and answers an ``UploadSummary`` (JSON).
  - ``starlette/uvicorn`` (reference): a bare route doing
    ``async for chunk in request.stream(): digest.update(chunk); f.write(chunk)`` on the
    event loop, answering ``{"size", "sha256"}`` (JSON). Same work: sha256 and the bytes on
    disk; each server writes into its own directory, emptied after every upload.

* **ndjson**: ``--messages`` ``Dog(name=f"Dog {i}", age=i % 10)`` as NDJSON.

  - ``rpckit/uvicorn``: a ``StreamsService`` whose ``json_stream`` is an ``async def``
    generator, served by ``rpckit.http.create_app`` at its plain route
    ``GET /api/json_stream`` (NDJSON is the default framing).
  - ``starlette/uvicorn`` (reference): ``StreamingResponse`` yielding
    ``json.dumps(...) + "\\n"`` per dog.

The client (this process) is one ``httpx.AsyncClient`` for everything, reading bodies with
``aiter_raw()`` and only counting bytes or newlines. Every server gets one warm-up call
(for downloads it also checks the sha256); then each round runs every configuration once,
in turn, so machine drift spreads evenly. Every call is checked: downloads deliver exactly
the file's size, uploads are answered with the right size and sha256, NDJSON streams end in
a newline after exactly ``--messages`` lines. Server CPU (user + system of the server's
whole process tree, from ``/proc``) per GB or per message is reported next to this
client's: it is steadier than rates on a noisy machine, and a client CPU cost close to the
wall time shows that the client, not the server, set the pace. Peak RSS is ``VmHWM`` of
the server's largest process when the run ends.

``RPCKIT_BENCH_PROFILE=DIR`` runs the uvicorn servers under cProfile and writes
``DIR/<kind>.prof`` when they stop (the rates of such a run mean nothing).

Run from anywhere: ``python bench/files.py [--size-mib N] [--rounds R] [--messages M]``.
Needs granian (``pip install granian``) and nginx (``apt-get install nginx``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from starlette.types import ASGIApp, Message, Receive, Scope, Send  # noqa: E402

from bench.common import RpckitDogs, bare_ndjson_app, serve_on_uvicorn  # noqa: E402

MIB = 1024 * 1024
FILE_NAME = "payload.bin"
UPLOAD_NAME = "upload.bin"
PROBE_PATH = "/__bench/sends"
PATHSEND = "http.response.pathsend"
#: Set to "1" in a probed server's environment to hide pathsend from rpckit.
NO_PATHSEND_ENV = "RPCKIT_BENCH_NO_PATHSEND"
FILES_ENV = "RPCKIT_FILES"
STARTUP_TIMEOUT = 30.0
#: The uvicorn servers ``--serve`` runs (granian and nginx are started as they are).
SERVE_KINDS = ("rpckit", "rpckit-ndjson", "starlette-file", "starlette-upload", "starlette-ndjson")


# --- servers (run in subprocesses) ----------------------------------------------------------


def probed_example() -> ASGIApp:
    """The example bridge, counting the ASGI message types it sends (see ``PROBE_PATH``).

    A factory (granian and ``--serve rpckit`` call it): ``examples.streams.asgi`` reads
    ``RPCKIT_FILES`` when it is imported. With ``RPCKIT_BENCH_NO_PATHSEND=1`` the scope's
    extensions lose ``http.response.pathsend``, so rpckit sends the file in chunks.
    """
    from examples.streams.asgi import app as inner

    hide_pathsend = os.environ.get(NO_PATHSEND_ENV) == "1"
    sent: Counter[str] = Counter()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        if scope["path"] == PROBE_PATH:
            body = json.dumps(dict(sent)).encode()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        extensions = scope.get("extensions") or {}
        if hide_pathsend and PATHSEND in extensions:
            kept = {k: v for k, v in extensions.items() if k != PATHSEND}
            scope = {**scope, "extensions": kept}

        async def counting_send(message: Message) -> None:
            sent[message["type"]] += 1
            await send(message)

        async def counting_receive() -> Message:
            message = await receive()
            sent["received " + message["type"]] += 1
            return message

        await inner(scope, counting_receive, counting_send)

    return app


def starlette_file_app(directory: Path) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, Response
    from starlette.routing import Route

    async def download(request: Request) -> Response:
        path = directory / request.path_params["name"]
        if "/" in request.path_params["name"] or not path.is_file():
            return Response(status_code=404)
        return FileResponse(path)

    return Starlette(routes=[Route("/files/{name}", download, methods=["GET"])])


def starlette_upload_app(directory: Path) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    count = 0

    async def upload(request: Request) -> JSONResponse:
        nonlocal count
        count += 1
        digest = hashlib.sha256()
        size = 0
        with open(directory / f"upload-{count}.bin", "xb") as f:
            async for chunk in request.stream():
                digest.update(chunk)
                f.write(chunk)
                size += len(chunk)
        return JSONResponse({"size": size, "sha256": digest.hexdigest()})

    return Starlette(routes=[Route("/upload", upload, methods=["POST"])])


def make_app(kind: str, directory: Path, count: int) -> Any:
    if kind == "rpckit":
        os.environ[FILES_ENV] = str(directory)
        return probed_example()
    if kind == "rpckit-ndjson":
        from rpckit.http import create_app

        return create_app([RpckitDogs(count)])
    if kind == "starlette-file":
        return starlette_file_app(directory)
    if kind == "starlette-upload":
        return starlette_upload_app(directory)
    return bare_ndjson_app(count, "/dogs")


async def serve(kind: str, directory: Path, count: int) -> None:
    """Serve one kind on uvicorn on a free port; print "port loop http"; run until stdin closes."""

    app = make_app(kind, directory, count)
    await serve_on_uvicorn(app)


def run_server(kind: str, directory: Path, count: int) -> None:
    profile_dir = os.environ.get("RPCKIT_BENCH_PROFILE")
    if not profile_dir:
        asyncio.run(serve(kind, directory, count))
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(serve(kind, directory, count))
    finally:
        profiler.disable()
        profiler.dump_stats(str(Path(profile_dir) / f"{kind}-{directory.name}.prof"))


# --- processes ------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (granian serves from a worker child process)."""
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
            continue  # exited meanwhile
    return found


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds of these processes (all their threads), or None off Linux."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def peak_rss_mib(pids: list[int]) -> float | None:
    """The largest VmHWM (peak resident set) among these processes, in MiB."""
    peaks = []
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
    return max(peaks) if peaks else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """One running server process; ``pids`` is its tree once it is up."""

    name: str
    process: subprocess.Popen[str]
    port: int
    log: Path | None
    stdin_stop: bool
    pids: list[int] = field(default_factory=list)
    impl: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-2000:]


def start_uvicorn(name: str, kind: str, directory: Path, count: int) -> Server:
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", kind]
    command += ["--dir", str(directory), "--messages", str(count)]
    process = subprocess.Popen(
        command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    return Server(name, process, 0, None, stdin_stop=True)


def await_uvicorn(server: Server) -> None:
    assert server.process.stdout is not None
    words = server.process.stdout.readline().split()
    if len(words) != 3 or not words[0].isdigit():
        raise RuntimeError(f"{server.name} did not start (got {words!r})")
    server.port = int(words[0])
    server.impl = f"uvicorn, loop {words[1]}, http {words[2]}"


def start_granian(name: str, directory: Path, tmp: Path, *, pathsend: bool) -> Server:
    port = free_port()
    log = tmp / f"granian-{port}.log"
    env = {**os.environ, FILES_ENV: str(directory), "PYTHONPATH": str(REPO)}
    env[NO_PATHSEND_ENV] = "0" if pathsend else "1"
    command = [
        sys.executable, "-m", "granian", "bench.files:probed_example", "--factory",
        "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--no-ws", "--log-level", "warning", "--working-dir", str(REPO),
    ]  # fmt: skip
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, text=True
        )
    return Server(name, process, port, log, stdin_stop=False, impl="granian, 1 worker")


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


def start_nginx(directory: Path, tmp: Path) -> Server:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, root=directory))
    log = tmp / "nginx-error.log"
    command = [nginx, "-c", str(conf), "-p", str(tmp), "-e", str(log)]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Server("nginx", process, port, log, stdin_stop=False, impl="sendfile on")


def await_port(server: Server, deadline: float, path: str = "/") -> None:
    """Wait until the server answers HTTP at ``path`` (any status) or its process exits."""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited at start-up:\n{server.log_tail()}")
        try:
            httpx.get(server.base + path, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.05)  # between polls only
    raise RuntimeError(f"{server.name} did not answer on port {server.port}")


def stop_server(server: Server) -> None:
    """Close stdin (uvicorn) or SIGTERM (granian, nginx); kill whatever is left."""
    process = server.process
    pids = server.pids or process_tree(process.pid)
    if server.stdin_stop:
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
    elif process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for pid in pids[1:]:  # a worker its parent failed to stop
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if process.stdout is not None:
        process.stdout.close()


# --- client (this process) ------------------------------------------------------------------


class BenchError(Exception):
    """A server answered something other than exactly what was expected."""


@dataclass
class Config:
    scenario: str  # download | upload | ndjson
    server: Server
    path: str
    reference: bool = False
    #: Directory the server stores uploads in (emptied after every upload).
    upload_dir: Path | None = None
    rates: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


@dataclass
class Payload:
    path: Path
    size: int
    sha256: str


def make_payload(directory: Path, size_mib: int) -> Payload:
    """``size_mib`` MiB of random bytes (fresh for every MiB), and their sha256."""
    path = directory / FILE_NAME
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size_mib):
            block = os.urandom(MIB)
            digest.update(block)
            f.write(block)
    return Payload(path, size_mib * MIB, digest.hexdigest())


async def download(
    client: httpx.AsyncClient, config: Config, payload: Payload, *, check_digest: bool
) -> int:
    """Downloads the file; returns how many chunks the client read."""
    digest = hashlib.sha256() if check_digest else None
    got = 0
    reads = 0
    async with client.stream("GET", config.server.base + config.path) as response:
        if response.status_code != 200:
            await response.aread()
            raise BenchError(f"HTTP {response.status_code}: {response.content[:300]!r}")
        async for chunk in response.aiter_raw():
            got += len(chunk)
            reads += 1
            if digest is not None:
                digest.update(chunk)
    if got != payload.size:
        raise BenchError(f"{config.server.name}: {got} bytes, expected {payload.size}")
    if digest is not None and digest.hexdigest() != payload.sha256:
        raise BenchError(f"{config.server.name}: the downloaded bytes differ from the file")
    return reads


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    """The file in 1 MiB chunks (from the page cache: it was just written and read)."""
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            yield chunk


async def upload(client: httpx.AsyncClient, config: Config, payload: Payload) -> None:
    headers = {
        "content-type": "application/octet-stream",
        "content-length": str(payload.size),
        "x-content-size": str(payload.size),
        "content-disposition": f'attachment; filename="{UPLOAD_NAME}"',
    }
    url = config.server.base + config.path
    response = await client.post(url, headers=headers, content=file_chunks(payload.path))
    if response.status_code != 200:
        raise BenchError(f"HTTP {response.status_code}: {response.content[:300]!r}")
    summary = response.json()
    if int(summary.get("size", -1)) != payload.size or summary.get("sha256") != payload.sha256:
        raise BenchError(f"{config.server.name}: upload summary {summary} is wrong")


async def ndjson(client: httpx.AsyncClient, config: Config, count: int) -> None:
    lines = 0
    last = b"\n"
    async with client.stream("GET", config.server.base + config.path) as response:
        if response.status_code != 200:
            await response.aread()
            raise BenchError(f"HTTP {response.status_code}: {response.content[:300]!r}")
        async for chunk in response.aiter_raw():
            if chunk:
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    if lines != count or last != b"\n":
        raise BenchError(f"{config.server.name}: {lines} NDJSON lines, expected {count}")


def empty(directory: Path | None) -> None:
    if directory is not None:
        for path in directory.iterdir():
            path.unlink()


async def call(
    client: httpx.AsyncClient, config: Config, payload: Payload, count: int, *, warm_up: bool
) -> tuple[float, int]:
    """One call: its wall time in seconds (request sent to the last byte read) and, for a
    download, how many chunks the client read."""
    start = time.perf_counter()
    reads = 0
    try:
        if config.scenario == "download":
            reads = await download(client, config, payload, check_digest=warm_up)
        elif config.scenario == "upload":
            await upload(client, config, payload)
        else:
            await ndjson(client, config, count)
    except httpx.HTTPError as exc:
        tail = config.server.log_tail()
        log = f"\nits log ends:\n{tail}" if tail else ""
        raise BenchError(f"{config.scenario} from {config.server.name}: {exc!r}{log}") from exc
    elapsed = time.perf_counter() - start
    empty(config.upload_dir)
    return elapsed, reads


async def measure(configs: list[Config], payload: Payload, count: int, rounds: int) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0)) as client:
        for config in configs:
            await call(client, config, payload, count, warm_up=True)
        for r in range(rounds):
            for config in configs:
                pids = config.server.pids
                cpu_before = cpu_seconds(pids)
                client_before = time.process_time()
                elapsed, reads = await call(client, config, payload, count, warm_up=False)
                client_cpu = time.process_time() - client_before
                cpu_after = cpu_seconds(pids)
                unit = count if config.scenario == "ndjson" else payload.size / 1e9
                config.rates.append(
                    count / elapsed if config.scenario == "ndjson" else payload.size / 1e6 / elapsed
                )
                config.client_cpu.append(client_cpu / unit)
                if cpu_before is not None and cpu_after is not None:
                    config.cpu.append((cpu_after - cpu_before) / unit)
                rate = f"{config.rates[-1]:>10,.0f} {_unit(config)}"
                name = f"{config.scenario} {config.server.name}"
                size = f" ({payload.size / reads / 1024:.0f} KiB per client read)" if reads else ""
                print(f"  round {r + 1}: {name:<50} {rate}{size}", flush=True)


# --- report ---------------------------------------------------------------------------------


def _unit(config: Config) -> str:
    return "msgs/s" if config.scenario == "ndjson" else "MB/s"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def nginx_version() -> str:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    try:
        done = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "nginx ?"
    return (done.stderr or done.stdout).strip().removeprefix("nginx version: ")


def _cpu(config: Config, values: list[float]) -> str:
    if not values:
        return "?"
    value = statistics.median(values)
    return f"{value * 1e6:.1f} µs/msg" if config.scenario == "ndjson" else f"{value:.2f} s/GB"


def report(
    configs: list[Config], probes: dict[str, dict[str, int]], payload: Payload, args: Any
) -> str:
    references = {c.scenario: c for c in configs if c.reference}
    lines = [
        f"{payload.size // MIB} MiB file, {args.messages:,} NDJSON messages, {args.rounds} "
        "rounds after one warm-up call each; median of the rounds, ratios use medians. "
        "MB = 10^6 bytes, GB = 10^9 bytes.",
        "",
        "| scenario | server | median | min | max | vs reference | server CPU "
        "| client CPU | peak server RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in configs:
        reference = references[c.scenario]
        ratio = "reference" if c is reference else f"{c.median / reference.median:.2f}x"
        rss = peak_rss_mib(c.server.pids)
        unit = _unit(c)
        lines.append(
            f"| {c.scenario} | {c.server.name} | {c.median:,.0f} {unit} | {min(c.rates):,.0f} "
            f"| {max(c.rates):,.0f} | {ratio} | {_cpu(c, c.cpu)} | {_cpu(c, c.client_cpu)} "
            f"| {'?' if rss is None else f'{rss:.0f}'} |"
        )
    lines += [
        "",
        "References: nginx for downloads, bare Starlette for uploads and NDJSON. CPU columns: "
        "medians, user + system, per GB moved or per message; server = the whole process "
        "tree (from /proc), client = this process. A client CPU close to 1 / rate means the "
        "client set the pace: compare the server CPU column then.",
        "",
        "ASGI messages the rpckit download servers sent (every call, warm-up included):",
    ]
    for name, sent in probes.items():
        summary = ", ".join(f"{k} {v}" for k, v in sorted(sent.items())) or "none"
        lines.append(f"- {name}: {summary}")
    impls = sorted({c.server.impl for c in configs if c.server.impl.startswith("uvicorn")})
    lines += [
        "",
        f"python {platform.python_version()}, uvicorn {_version('uvicorn')} "
        f"({'; '.join(impls)}), granian {_version('granian')}, "
        f"starlette {_version('starlette')}, httpx {_version('httpx')} (client), "
        f"{nginx_version()}; {os.cpu_count()} cores, {platform.machine()} "
        f"{platform.system()} {platform.release()}",
    ]
    if len(impls) > 1:
        lines.append(f"WARNING: the uvicorn servers ran different implementations: {impls}")
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def probe(client: httpx.Client, server: Server) -> dict[str, int]:
    sent: dict[str, int] = client.get(server.base + PROBE_PATH).json()
    return sent


def run(args: Any) -> None:
    servers: list[Server] = []
    with temp_dir("rpckit-files-bench-") as tmp:
        files = tmp / "files"
        files.mkdir()
        started = time.perf_counter()
        payload = make_payload(files, args.size_mib)
        print(f"(wrote {payload.size // MIB} MiB in {time.perf_counter() - started:.1f} s)")
        up_rpckit = tmp / "upload-rpckit"
        up_bare = tmp / "upload-starlette"
        up_rpckit.mkdir()
        up_bare.mkdir()
        try:

            def keep(server: Server) -> Server:
                servers.append(server)  # stopped in the finally below, whatever happens next
                return server

            nginx = keep(start_nginx(files, tmp))
            granian = keep(start_granian("rpckit FileStream, granian", files, tmp, pathsend=True))
            granian_chunks = (
                keep(
                    start_granian(
                        "rpckit FileStream, granian, pathsend hidden", files, tmp, pathsend=False
                    )
                )
                if args.granian_chunks
                else None
            )
            uvicorn_rpckit = keep(start_uvicorn("rpckit FileStream, uvicorn", "rpckit", files, 0))
            file_response = keep(
                start_uvicorn("starlette FileResponse, uvicorn", "starlette-file", files, 0)
            )
            rpckit_upload = keep(
                start_uvicorn("rpckit FileStream, uvicorn", "rpckit", up_rpckit, 0)
            )
            bare_upload = keep(
                start_uvicorn("starlette request.stream(), uvicorn", "starlette-upload", up_bare, 0)
            )
            rpckit_ndjson = keep(
                start_uvicorn("rpckit plain route, uvicorn", "rpckit-ndjson", files, args.messages)
            )
            bare_ndjson = keep(
                start_uvicorn(
                    "starlette StreamingResponse, uvicorn", "starlette-ndjson", files, args.messages
                )
            )
            deadline = time.monotonic() + STARTUP_TIMEOUT
            for server in servers:
                if server.stdin_stop:
                    await_uvicorn(server)
                # The probe's own path is not counted, so the counts are the benchmark's.
                is_probed = server in (granian, granian_chunks, uvicorn_rpckit, rpckit_upload)
                await_port(server, deadline, PROBE_PATH if is_probed else "/")
                server.pids = process_tree(server.process.pid)
            download_path = f"/api/files/{FILE_NAME}"
            configs = [
                Config("download", granian, download_path),
                *([Config("download", granian_chunks, download_path)] if granian_chunks else []),
                Config("download", uvicorn_rpckit, download_path),
                Config("download", file_response, f"/files/{FILE_NAME}"),
                Config("download", nginx, f"/{FILE_NAME}", reference=True),
                Config("upload", rpckit_upload, "/api/upload_as_file_stream", upload_dir=up_rpckit),
                Config("upload", bare_upload, "/upload", reference=True, upload_dir=up_bare),
                Config("ndjson", rpckit_ndjson, "/api/json_stream"),
                Config("ndjson", bare_ndjson, "/dogs", reference=True),
            ]
            started = time.perf_counter()
            asyncio.run(measure(configs, payload, args.messages, args.rounds))
            print(f"(measured in {time.perf_counter() - started:.0f} s)\n")
            with httpx.Client(timeout=10) as client:
                probed = [s for s in (granian, granian_chunks, uvicorn_rpckit) if s is not None]
                probes = {s.name: probe(client, s) for s in probed}
            print(report(configs, probes, payload, args))
        finally:
            for server in servers:
                stop_server(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512, help="size of the file (MiB)")
    parser.add_argument("--rounds", type=int, default=3, help="measured calls per server")
    parser.add_argument("--messages", type=int, default=50_000, help="NDJSON messages per call")
    parser.add_argument(
        "--granian-chunks",
        action="store_true",
        help="also download from granian with pathsend hidden (rpckit's chunked path)",
    )
    parser.add_argument("--serve", choices=SERVE_KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_server(args.serve, args.dir, args.messages)
        return
    if args.size_mib < 1 or args.rounds < 1 or args.messages < 1:
        parser.error("--size-mib, --rounds and --messages must be at least 1")
    run(args)


if __name__ == "__main__":
    main()
