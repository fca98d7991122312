"""A durable-streams cluster of real processes for integration tests: one redis-server (no
persistence), two ``rpckit serve`` instances sharing it (``--streams redis://...``), and
Debian's nginx in front of them with examples/deploy/nginx.conf (plus, for the tests only, an
``X-Upstream`` response header naming the instance that answered, on HTTP and gRPC).

    with start_cluster(tmp_path) as cluster:
        a, b = cluster.members()
        response = httpx.get(f"{cluster.http}/api/complete?tokens=3")
        cluster.served_by(response)          # the Instance nginx routed it to
        cluster.kill(a)                       # kill -9 by PID (reaped)
        cluster.replace(a)                    # a new process on the same ports

The ``cluster`` fixture gives one per test (tests that use it start processes: mark them
``@pytest.mark.process``); ``cluster_factory`` makes them with another target or options.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest

from tests.durable.conftest import RedisServer, redis_server_path
from tests.serving.nginx import nginx_path, run_nginx
from tests.serving.process import Served
from tests.support import require_tool

__all__ = [
    "EXAMPLE",
    "Cluster",
    "Instance",
    "cluster",
    "cluster_factory",
    "start_cluster",
]

#: The streams example (its ``Complete`` is ``@durable(lease_seconds=3)``).
EXAMPLE = "examples.streams.server:create_service"
#: How long a process may take to come up (two cores, other tests running).
START_SECONDS = 30.0


def require_cluster_tools() -> None:
    """Skip (outside CI) unless redis-server and nginx are installed."""
    require_tool(redis_server_path() is not None, "redis-server is not installed")
    require_tool(nginx_path() is not None, "nginx is not installed (apt-get install nginx)")


class Headers(Protocol):
    """Response headers: httpx's ``Headers``, rpckit's ``Metadata``, a dict."""

    def get(self, key: str, /) -> str | None: ...


@dataclass
class Instance:
    """One ``rpckit serve`` process of the cluster, on fixed loopback ports."""

    name: str  # "a", "b"
    http_port: int
    grpc_port: int
    served: Served

    @property
    def http_address(self) -> str:
        """``127.0.0.1:<port>``: the upstream address nginx names in X-Upstream."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def url(self) -> str:
        """The instance's own HTTP base URL (not through nginx)."""
        return f"http://{self.http_address}"

    @property
    def pid(self) -> int:
        return self.served.process.pid

    @property
    def alive(self) -> bool:
        return self.served.process.poll() is None

    @property
    def output(self) -> list[str]:
        """The lines it has printed so far that ``expect`` has consumed (see ``wait_line``)."""
        return self.served.lines

    def expect(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """The next line of its output matching ``pattern`` (fails on timeout or exit)."""
        return self.served.expect(pattern, timeout)

    def __repr__(self) -> str:
        return (
            f"Instance({self.name}, http={self.http_port}, grpc={self.grpc_port}, pid={self.pid})"
        )


@dataclass
class Cluster:
    """Redis, two instances and nginx. ``http``: nginx's HTTP base URL; ``grpc``: its gRPC
    address (host:port, cleartext HTTP/2)."""

    redis: RedisServer
    instances: dict[str, Instance]  # by name
    http: str
    grpc: str
    directory: Path
    target: str
    args: tuple[str, ...]
    env: dict[str, str] | None = None
    _started: list[Served] = field(default_factory=list)

    def members(self) -> tuple[Instance, Instance]:
        a, b = self.instances["a"], self.instances["b"]
        return a, b

    def by_address(self, address: str) -> Instance:
        """The instance at ``127.0.0.1:<http or grpc port>``."""
        for instance in self.instances.values():
            if address in (instance.http_address, instance.grpc_address):
                return instance
        raise KeyError(f"no instance at {address!r}: {list(self.instances.values())}")

    def upstream(self, headers: Headers) -> Instance:
        """The instance that answered, from nginx's ``X-Upstream`` header (the last address
        when nginx tried more than one: ``"127.0.0.1:1, 127.0.0.1:2"``)."""
        value = headers.get("x-upstream")
        assert value, f"no X-Upstream header in {headers!r}"
        return self.by_address(value.split(",")[-1].strip())

    def served_by(self, response: object) -> Instance:
        """The instance that served an httpx response (or anything with ``.headers``)."""
        return self.upstream(response.headers)  # type: ignore[attr-defined]

    def other(self, instance: Instance) -> Instance:
        a, b = self.members()
        return b if instance.name == a.name else a

    def kill(self, instance: Instance) -> None:
        """kill -9 the instance's process by PID, and reap it."""
        process = instance.served.process
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=15)

    def replace(self, instance: Instance) -> Instance:
        """Start a new process on a killed instance's ports (nginx's upstream addresses);
        returns the new Instance (also in ``instances``). nginx may still skip it for its
        ``fail_timeout`` (10 s) after it failed."""
        assert not instance.alive, "replace a dead instance only"
        replacement = _start_instance(
            instance.name, self.target, self.args, self.env, instance.http_port, instance.grpc_port
        )
        self._started.append(replacement.served)
        self.instances[instance.name] = replacement
        return replacement

    def kill_redis(self) -> None:
        """kill -9 the redis-server (its data is gone: no persistence)."""
        self.redis.kill()

    def restart_redis(self) -> None:
        """Start redis-server again on the same port (empty)."""
        deadline = time.monotonic() + START_SECONDS
        while True:  # the port may linger for a moment after the kill
            try:
                self.redis.start()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def _start_instance(
    name: str,
    target: str,
    args: tuple[str, ...],
    env: dict[str, str] | None,
    http_port: int = 0,
    grpc_port: int = 0,
) -> Instance:
    served = Served(
        target,
        "--http", f"127.0.0.1:{http_port}",
        "--grpc", f"127.0.0.1:{grpc_port}",
        *args,
        env=env,
    )  # fmt: skip
    try:
        ports = served.ports(["gRPC", "HTTP"])
    except BaseException:
        served.stop()
        raise
    return Instance(name, ports["HTTP"], ports["gRPC"], served)


@contextlib.contextmanager
def start_cluster(
    directory: Path,
    *,
    target: str = EXAMPLE,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    """Start redis-server, two instances of ``target`` (``rpckit serve TARGET --streams
    redis://... --grace 1 *args``) and nginx; stop them all (by PID) afterwards."""
    require_cluster_tools()
    nginx = nginx_path()
    assert nginx is not None
    directory.mkdir(parents=True, exist_ok=True)
    redis_dir = directory / "redis"
    redis_dir.mkdir(exist_ok=True)
    redis = RedisServer(redis_dir)
    redis.start()
    started: list[Served] = []
    try:
        options = ("--streams", redis.url, "--grace", "1", *args)
        instances: dict[str, Instance] = {}
        for name in ("a", "b"):
            instance = _start_instance(name, target, options, env)
            started.append(instance.served)
            instances[name] = instance
        a, b = instances["a"], instances["b"]
        upstreams = {
            "http_1": a.http_address,
            "http_2": b.http_address,
            "grpc_1": a.grpc_address,
            "grpc_2": b.grpc_address,
        }
        nginx_dir = directory / "nginx"
        nginx_dir.mkdir(exist_ok=True)
        tagged = ("proxy_pass http://rpckit_http;", "grpc_pass grpc://rpckit_grpc;")
        with run_nginx(nginx, nginx_dir, upstreams, tagged, START_SECONDS) as ports:
            http_port, grpc_port = ports
            yield Cluster(
                redis,
                instances,
                f"http://127.0.0.1:{http_port}",
                f"127.0.0.1:{grpc_port}",
                directory,
                target,
                options,
                env,
                started,
            )
    finally:
        for served in started:
            served.stop()
        redis.kill()


MakeCluster = Callable[..., contextlib.AbstractContextManager[Cluster]]


@pytest.fixture
def cluster_factory(tmp_path: Path) -> MakeCluster:
    """``with cluster_factory(target=..., args=...) as cluster:`` (each in its own
    directory under the test's tmp_path)."""
    count = 0

    def make(**options: object) -> contextlib.AbstractContextManager[Cluster]:
        nonlocal count
        count += 1
        return start_cluster(tmp_path / f"cluster{count}", **options)  # type: ignore[arg-type]

    return make


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A fresh cluster of the streams example for the test (which may kill its parts)."""
    with start_cluster(tmp_path / "cluster") as made:
        yield made
