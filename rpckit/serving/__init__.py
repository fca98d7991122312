"""``rpckit serve`` as a library: options, one serving process, and the worker supervisor."""

from rpckit.serving.options import ServeOptions, parse_workers

__all__ = ["ServeOptions", "parse_workers"]
