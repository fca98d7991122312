"""The options of ``rpckit serve``, one field per command-line flag."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # kept light: the CLI imports this module for every command
    from rpckit.serving.http_server import HttpTls, ServerKind

__all__ = ["ServeOptions", "parse_workers"]


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``rpckit serve`` does, explicit and immutable (workers get a copy)."""

    #: ``MODULE:ATTR``: a Service, a list of them, or a factory given ``target_args``.
    target: str
    #: The arguments after the known flags, handed to a factory target.
    target_args: tuple[str, ...] = ()
    #: ``--grpc HOST:PORT``.
    grpc: str | None = None
    #: ``--http HOST:PORT``.
    http: str | None = None
    #: ``--workers N|auto``: processes sharing both ports (``SO_REUSEPORT``).
    workers: int = 1
    #: ``--separate-grpc``: with both transports, gRPC in processes of its own (one per
    #: worker) instead of sharing each worker's event loop with HTTP. Under a mixed load a
    #: busy HTTP loop starves grpc.aio (``bench/shared_loop.py``).
    separate_grpc: bool = False
    #: ``--server uvicorn|granian``: the HTTP server.
    server: ServerKind = "uvicorn"
    #: ``--grace``: seconds in-flight calls get to finish once a drain starts.
    grace: float = 5.0
    #: ``--drain-delay``: seconds a draining server keeps accepting (readiness already false)
    #: so that load balancers stop sending before the listeners close.
    drain_delay: float = 0.0
    #: ``--static DIR``.
    static: Path | None = None
    #: ``--cors-origin`` (repeatable).
    cors_origins: tuple[str, ...] = ()
    #: ``--tls-cert`` / ``--tls-key`` (PEM), both transports.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: ``--tls-client-ca``: require client certificates signed by this CA (mTLS).
    tls_client_ca: Path | None = None
    #: ``--liveness-path`` / ``--readiness-path`` on the HTTP side.
    liveness_path: str = "/healthz"
    readiness_path: str = "/readyz"
    #: ``--log-level``.
    log_level: str = "info"
    #: ``--interceptor MODULE:ATTR`` (repeatable): server interceptors, in this order.
    interceptors: tuple[str, ...] = ()
    #: ``--access-log`` / ``--no-access-log``: one line per call on ``rpckit.access``.
    access_log: bool = True
    #: ``--otel``: OpenTelemetry spans and metrics, exported over OTLP per ``OTEL_*``.
    otel: bool = False
    #: ``--header-timeout``: seconds a connection has to deliver a complete request head.
    header_timeout: float = 10.0
    #: ``--idle-timeout``: seconds an idle keep-alive connection stays open.
    idle_timeout: float = 5.0
    #: ``--body-timeout``: seconds the server waits for each next piece of a request body.
    body_timeout: float = 30.0
    #: ``--docs``: the docs page at ``/docs`` and the OpenAPI document at ``/docs/openapi.json``.
    docs: bool = False
    #: ``--reload``: restart on a .py or .proto change under the current directory
    #: (regenerating code first for a .proto change).
    reload: bool = False

    @property
    def split_transports(self) -> bool:
        """Whether gRPC and HTTP run in separate processes (``--separate-grpc`` with both)."""
        return self.separate_grpc and bool(self.grpc) and bool(self.http)

    @property
    def tls(self) -> HttpTls | None:
        """The TLS files, when ``--tls-cert`` and ``--tls-key`` are given."""
        from rpckit.serving.http_server import HttpTls

        if self.tls_cert is None or self.tls_key is None:
            return None
        return HttpTls(self.tls_cert, self.tls_key, self.tls_client_ca)


def parse_workers(value: str) -> int:
    """``--workers``: a positive count, or ``auto`` for the cores this process may use."""
    if value == "auto":
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"--workers must be a number or 'auto', not {value!r}") from None
    if count < 1:
        raise ValueError(f"--workers must be at least 1, not {count}")
    return count
