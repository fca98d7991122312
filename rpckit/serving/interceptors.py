"""The interceptors ``rpckit serve`` runs: built-ins from its flags, then ``--interceptor``s.

``--interceptor MODULE:ATTR`` names an ``Interceptor`` instance, an ``Interceptor``
subclass (called without arguments) or a zero-argument factory returning an instance or a
list of them. Each worker process loads them itself, as it loads the services.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rpckit.interceptors import Interceptor
from rpckit.serving.target import import_target

__all__ = ["load_interceptors", "serve_interceptors"]


def _load(target: str) -> list[Interceptor]:
    obj: Any = import_target(target, "--interceptor")
    if isinstance(obj, type) or (callable(obj) and not isinstance(obj, Interceptor)):
        obj = obj()
    found = list(obj) if isinstance(obj, list | tuple) else [obj]
    for interceptor in found:
        if not isinstance(interceptor, Interceptor):
            raise SystemExit(
                f"rpckit: --interceptor {target} gave {type(interceptor).__name__}, "
                "not an rpckit.interceptors.Interceptor"
            )
    return found


def load_interceptors(targets: Sequence[str]) -> list[Interceptor]:
    """The interceptors ``targets`` (``MODULE:ATTR`` each) name, in order.

    Raises ``SystemExit`` with a one-line reason for a target that is not one.
    """
    return [interceptor for target in targets for interceptor in _load(target)]


def serve_interceptors(
    targets: Sequence[str], *, otel: bool = False, access_log: bool = True
) -> list[Interceptor]:
    """What ``rpckit serve`` runs around every call: OpenTelemetry first (its span covers
    the rest), then the access log, then the ``--interceptor`` targets in their order."""
    chain: list[Interceptor] = []
    if otel:
        from rpckit.interceptors.otel import OpenTelemetry

        chain.append(OpenTelemetry())
    if access_log:
        from rpckit.interceptors.access_log import AccessLog

        log = AccessLog()
        # Decided once, at start: below INFO (--log-level warning) the access log would only
        # ever return early, so it stays out of the chain and costs nothing per call.
        if log.logger.isEnabledFor(log.level):
            chain.append(log)
    return chain + load_interceptors(targets)
