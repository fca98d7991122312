"""``rpckit serve`` as a library: options, one serving process, and the worker supervisor."""

from rpckit.serving.options import (
    SERVE_FLAGS,
    DrainOptions,
    HealthPaths,
    HttpTimeouts,
    ServeOptions,
    TlsFiles,
    parse_workers,
)

__all__ = [
    "SERVE_FLAGS",
    "DrainOptions",
    "HealthPaths",
    "HttpTimeouts",
    "ServeOptions",
    "TlsFiles",
    "parse_workers",
]
