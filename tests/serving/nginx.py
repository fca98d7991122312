"""Debian's nginx in front of two rpckit instances, with the repo's own config
(``examples/deploy/nginx.conf``) filled in: started as one process, waited for, and stopped
by PID. Shared by the reverse-proxy tests and the durable-streams cluster."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.support import ROOT, free_port

__all__ = ["CONFIG", "nginx_path", "run_nginx"]

CONFIG = ROOT / "examples" / "deploy" / "nginx.conf"
#: Added after a tagged directive, for the tests only: which instance answered.
_UPSTREAM_HEADER = "\n add_header X-Upstream $upstream_addr always;"


def nginx_path() -> str | None:
    """Debian's nginx, on PATH or in /usr/sbin; None when it is not installed."""
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text() if log.exists() else "nginx exited"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.02)
    pytest.fail(f"nginx did not listen on {port}")


@contextlib.contextmanager
def run_nginx(
    nginx: str,
    directory: Path,
    upstreams: Mapping[str, str],
    tagged: Sequence[str],
    start_seconds: float,
) -> Iterator[tuple[int, int]]:
    """nginx on two free loopback ports, its config and logs in ``directory``.

    ``upstreams`` fills the config's ``http_1``, ``http_2``, ``grpc_1`` and ``grpc_2``; each
    directive in ``tagged`` (it must be in the config) answers with ``X-Upstream``. One
    process (``master_process off``), so its round robin alternates predictably. Yields the
    HTTP and gRPC ports; stops nginx gracefully (SIGQUIT), killing it if it lingers.
    """
    http_port, grpc_port = free_port(), free_port()
    values = {
        **upstreams,
        "listen_http": f"127.0.0.1:{http_port}",
        "listen_grpc": f"127.0.0.1:{grpc_port}",
    }
    config = CONFIG.read_text()
    for key, value in values.items():
        config = config.replace("{{" + key + "}}", value)
    assert not re.search(r"\{\{\w+\}\}", config), "a placeholder was left unfilled"
    for directive in tagged:
        assert directive in config, directive
        config = config.replace(directive, directive + _UPSTREAM_HEADER)
    (directory / "nginx.conf").write_text(config)
    log = directory / "error.log"
    process = subprocess.Popen(
        [nginx, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-e", str(log),
         "-g", "daemon off; master_process off;"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_port(http_port, process, log, start_seconds)
        _wait_port(grpc_port, process, log, start_seconds)
        yield http_port, grpc_port
    finally:
        process.send_signal(signal.SIGQUIT)  # nginx's graceful stop
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
