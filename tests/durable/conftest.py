"""Fixtures for the stream logs: a real redis-server (Debian's) on a free loopback port with
its own directory and no persistence, and the logs under test."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rpckit.durable.log import StreamLog
from rpckit.durable.memory import MemoryLog
from rpckit.durable.redis import RedisLog
from tests.support import require_tool

READY_SECONDS = 10.0


def redis_server_path() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class RedisServer:
    """One redis-server process: started, waited for (its "Ready to accept connections" log
    line, read from its stdout), killed by PID."""

    directory: Path
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def options(self) -> list[str]:
        """Loopback only, its own directory, no persistence, the log on stdout."""
        pairs = {
            "--port": str(self.port),
            "--bind": "127.0.0.1",
            "--dir": str(self.directory),
            "--save": "",
            "--appendonly": "no",
            "--logfile": "",
            "--daemonize": "no",
        }
        return [part for pair in pairs.items() for part in pair]

    def start(self) -> None:
        executable = redis_server_path()
        assert executable is not None
        self.log = []
        ready = threading.Event()
        self.process = subprocess.Popen(
            [executable, *self.options()],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        stdout = self.process.stdout
        assert stdout is not None

        def drain() -> None:  # reads the log to its end, so the pipe never fills
            for line in stdout:
                text = line.decode(errors="replace")
                self.log.append(text)
                if "Ready to accept connections" in text:
                    ready.set()
            ready.set()  # exited: the wait below ends and the check fails

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(READY_SECONDS) or self.process.poll() is not None:
            self.kill()
            raise RuntimeError("redis-server did not start:\n" + "".join(self.log[-20:]))

    def kill(self) -> None:
        """kill -9, and reap."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(READY_SECONDS)
        self.process = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server shared by the tests that do not kill it (each uses its own prefix)."""
    require_tool(redis_server_path() is not None, "redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, which it may kill and restart."""
    require_tool(redis_server_path() is not None, "redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


MakeRedisLog = Callable[[], RedisLog]


@pytest.fixture
async def make_redis_log(redis_server: RedisServer) -> AsyncIterator[MakeRedisLog]:
    """Makes RedisLogs ("instances", each with its own client) on the shared server, all with
    one prefix unique to the test; closes them after it."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    made: list[RedisLog] = []

    def make() -> RedisLog:
        log = RedisLog.from_url(redis_server.url, prefix=prefix)
        made.append(log)
        return log

    try:
        yield make
    finally:
        for log in made:
            await log.close()


@pytest.fixture(
    params=[
        pytest.param("memory"),
        pytest.param("redis", marks=pytest.mark.process),
    ]
)
async def stream_log(request: pytest.FixtureRequest) -> AsyncIterator[StreamLog]:
    """The contract's subject: a MemoryLog, or a RedisLog on a real redis-server."""
    log: StreamLog
    if request.param == "memory":
        log = MemoryLog(sweep_interval=0.05)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        log = RedisLog.from_url(server.url, prefix=f"t{uuid.uuid4().hex[:12]}")
    try:
        yield log
    finally:
        await log.close()
