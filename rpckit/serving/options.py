"""The options of ``rpckit serve``: one frozen object made of the option objects the servers
take (``BridgeOptions``, ``TlsFiles``, ``HttpTimeouts``, ...), and ``SERVE_FLAGS``, the one
table saying which field each command-line flag sets.

The CLI builds ``ServeOptions`` from the table (``ServeOptions.from_flags``) rather than by
copying flags by hand, and a test checks the table against the parser: every flag sets
exactly one field, every field has a flag (or a reason in ``NOT_FLAGS``), defaults agree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from rpckit.http.options import BridgeOptions
from rpckit.limits import DEFAULT_GRPC_STREAM_WINDOW

__all__ = [
    "DEFAULT_BACKLOG",
    "FILE_RESERVE",
    "NOT_FLAGS",
    "SERVERS",
    "SERVE_FLAGS",
    "ConnectionLimits",
    "DrainOptions",
    "HealthPaths",
    "HttpTimeouts",
    "ServeOptions",
    "ServerKind",
    "TlsFiles",
    "parse_workers",
]

ServerKind = Literal["uvicorn", "granian"]
#: The HTTP servers ``rpckit serve --server`` can run.
SERVERS: tuple[ServerKind, ...] = ("uvicorn", "granian")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS on both transports; with ``client_ca`` every client must present a
    certificate it signed (mTLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True)
class HttpTimeouts:
    """Seconds an HTTP connection may hold a socket without progress (``rpckit.serving.guard``
    says what each one bounds). The defaults are ``rpckit serve``'s."""

    header: float = 10.0
    idle: float = 5.0
    body: float = 30.0
    #: Seconds a connection may take to finish its TLS handshake, on both transports (on
    #: gRPC also plaintext HTTP/2's preface and settings); None: ``header``.
    handshake: float | None = None

    @property
    def handshake_seconds(self) -> float:
        """The handshake timeout in force (``handshake``, else ``header``)."""
        return self.header if self.handshake is None else self.handshake


#: uvicorn's listen backlog, and so ``rpckit serve``'s on both servers.
DEFAULT_BACKLOG = 2048
#: Open files a serving process keeps for itself beyond its HTTP connections (gRPC, logs,
#: files being served, the event loop's own).
FILE_RESERVE = 256


@dataclass(frozen=True)
class ConnectionLimits:
    """How many HTTP connections a serving process takes."""

    #: Connections the kernel queues for accepting (the listen backlog), both servers.
    backlog: int = DEFAULT_BACKLOG
    #: granian: connections served at once per process (more wait in the backlog); None:
    #: the open-file limit less ``FILE_RESERVE``. uvicorn takes connections until the
    #: open-file limit.
    max_connections: int | None = None

    def granian_connections(self) -> int:
        """The connection limit granian gets (its ``backpressure``)."""
        if self.max_connections is not None:
            return self.max_connections
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 20
        return max(128, soft - FILE_RESERVE)


@dataclass(frozen=True)
class DrainOptions:
    """How a serving process stops on SIGINT/SIGTERM."""

    #: Seconds in-flight calls get to finish once the drain starts.
    grace: float = 5.0
    #: Seconds a draining server keeps accepting (readiness already false) so that load
    #: balancers stop sending before the listeners close.
    delay: float = 0.0


@dataclass(frozen=True)
class HealthPaths:
    """Where the HTTP side answers liveness and readiness probes (``rpckit.serving.health``)."""

    liveness: str = "/healthz"
    readiness: str = "/readyz"


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``rpckit serve`` does, explicit and immutable (workers get a copy)."""

    #: ``MODULE:ATTR``: a Service, a list of them, or a factory given ``target_args``.
    target: str
    #: The arguments after the known flags, handed to a factory target.
    target_args: tuple[str, ...] = ()
    #: The gRPC address (``rpckit.address`` forms); None: no gRPC.
    grpc: str | None = None
    #: The HTTP bridge's address; None: no HTTP.
    http: str | None = None
    #: Processes sharing both ports (``SO_REUSEPORT``).
    workers: int = 1
    #: With both transports, gRPC in processes of its own (one per worker) instead of sharing
    #: each worker's event loop with HTTP. Under a mixed load a busy HTTP loop starves
    #: grpc.aio (``bench/shared_loop.py``).
    separate_grpc: bool = False
    #: The HTTP server.
    server: ServerKind = "uvicorn"
    #: granian: HTTP/2 without TLS (prior knowledge) beside HTTP/1.1. Off by default: with
    #: both versions possible granian reads a connection's first bytes with no time limit.
    h2c: bool = False
    #: Bytes of a gRPC call's request stream the server takes ahead of its handler (its
    #: HTTP/2 stream window, BDP probing off); 0: grpc core's adaptive windows, unbounded.
    grpc_window: int = DEFAULT_GRPC_STREAM_WINDOW
    #: gRPC server reflection on both ports (over Connect and gRPC-Web on the HTTP side).
    reflection: bool = True
    #: The bridge's wire settings; ``max_message_size`` holds on gRPC too.
    bridge: BridgeOptions = field(default_factory=BridgeOptions)
    #: Certificate, key and client CA, both transports; None: plain TCP.
    tls: TlsFiles | None = None
    #: Header, idle and body-progress timeouts of HTTP connections.
    timeouts: HttpTimeouts = HttpTimeouts()
    #: Listen backlog and connection limit of the HTTP side.
    limits: ConnectionLimits = ConnectionLimits()
    #: Grace period and delay of the drain.
    drain: DrainOptions = DrainOptions()
    #: Liveness and readiness probe paths on the HTTP side.
    health: HealthPaths = HealthPaths()
    #: Directory served at ``/`` on the HTTP side.
    static: Path | None = None
    #: Origins (or ``*``) whose pages may call the bridge (CORS, WebSocket origin check).
    cors_origins: tuple[str, ...] = ()
    #: Server interceptors as ``MODULE:ATTR``, in this order.
    interceptors: tuple[str, ...] = ()
    #: One line per call on ``rpckit.access``.
    access_log: bool = True
    #: OpenTelemetry spans and metrics, exported over OTLP per ``OTEL_*``.
    otel: bool = False
    #: The docs page at ``/docs`` and the OpenAPI document at ``/docs/openapi.json``.
    docs: bool = False
    #: Where the Durable Streams protocol is served on the HTTP side (``/v1/stream``); None:
    #: not served.
    durable_path: str | None = None
    #: The stream log: ``memory`` (this process) or ``redis://HOST:PORT/DB``; None: memory
    #: when ``durable_path`` is set.
    streams: str | None = None
    #: How long a Durable Streams long-poll read waits for data before answering 204.
    durable_long_poll: float = 20.0
    #: Restart on a .py or .proto change under the current directory (regenerating code
    #: first for a .proto change).
    reload: bool = False
    #: The logging level.
    log_level: str = "info"

    @property
    def split_transports(self) -> bool:
        """Whether gRPC and HTTP run in separate processes (``--separate-grpc`` with both)."""
        return self.separate_grpc and bool(self.grpc) and bool(self.http)

    @classmethod
    def from_flags(
        cls, values: Mapping[str, Any], target_args: tuple[str, ...] = ()
    ) -> ServeOptions:
        """The options for parsed flag values by ``SERVE_FLAGS`` key (``{"--grace": 5.0}``);
        a flag left out keeps its field's default, lists become tuples, and a group whose
        flags are all unset (``tls``) stays None."""
        top: dict[str, Any] = {"target_args": tuple(target_args)}
        groups: dict[str, dict[str, Any]] = {}
        for flag, value in values.items():
            path = SERVE_FLAGS[flag]
            if isinstance(value, list):
                value = tuple(value)
            head, _, leaf = path.partition(".")
            if leaf:
                groups.setdefault(head, {})[leaf] = value
            else:
                top[head] = value
        for name, kwargs in groups.items():
            if name in _OPTIONAL_GROUPS:
                if all(v is None for v in kwargs.values()):
                    top[name] = None
                    continue
                top[name] = _OPTIONAL_GROUPS[name](**kwargs)
            else:
                top[name] = type(getattr(_DEFAULTS, name))(**kwargs)
        return cls(**top)


#: Every ``rpckit serve`` flag (``target`` is the positional argument) and the field of
#: ``ServeOptions`` it sets; a dotted name is a field of an option object.
SERVE_FLAGS: Mapping[str, str] = {
    "target": "target",
    "--grpc": "grpc",
    "--http": "http",
    "--workers": "workers",
    "--separate-grpc": "separate_grpc",
    "--server": "server",
    "--h2c": "h2c",
    "--grpc-window": "grpc_window",
    "--reflection": "reflection",
    "--max-message-size": "bridge.max_message_size",
    "--compress-min-bytes": "bridge.compress_min_bytes",
    "--require-connect-version": "bridge.require_protocol_version",
    "--sse-keep-alive": "bridge.sse_keep_alive",
    "--tls-cert": "tls.cert",
    "--tls-key": "tls.key",
    "--tls-client-ca": "tls.client_ca",
    "--header-timeout": "timeouts.header",
    "--idle-timeout": "timeouts.idle",
    "--body-timeout": "timeouts.body",
    "--handshake-timeout": "timeouts.handshake",
    "--backlog": "limits.backlog",
    "--max-connections": "limits.max_connections",
    "--grace": "drain.grace",
    "--drain-delay": "drain.delay",
    "--liveness-path": "health.liveness",
    "--readiness-path": "health.readiness",
    "--static": "static",
    "--cors-origin": "cors_origins",
    "--interceptor": "interceptors",
    "--access-log": "access_log",
    "--otel": "otel",
    "--docs": "docs",
    "--durable-path": "durable_path",
    "--streams": "streams",
    "--durable-long-poll": "durable_long_poll",
    "--reload": "reload",
    "--log-level": "log_level",
}

#: Fields no flag sets, and why.
NOT_FLAGS: Mapping[str, str] = {
    "target_args": "the arguments after the flags, handed to a factory target",
    "bridge.encodings": "encodings are registered in code (rpckit.encodings)",
    "bridge.compressions": "compressions are registered in code (rpckit.compression)",
}

#: Option objects a ServeOptions may lack (None) when none of their flags is given.
_OPTIONAL_GROUPS: Mapping[str, type[Any]] = {"tls": TlsFiles}
_DEFAULTS = ServeOptions(target="")


def field_paths(options: object = _DEFAULTS) -> dict[str, Any]:
    """Every field of ``ServeOptions`` by dotted name, with its value in ``options``
    (the fields of an absent optional group are None)."""
    paths: dict[str, Any] = {}
    for f in fields(ServeOptions):
        value = getattr(options, f.name)
        group = _OPTIONAL_GROUPS.get(f.name) or (
            type(value) if hasattr(type(value), "__dataclass_fields__") else None
        )
        if group is None:
            paths[f.name] = value
            continue
        for sub in fields(group):
            paths[f"{f.name}.{sub.name}"] = None if value is None else getattr(value, sub.name)
    return paths


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
