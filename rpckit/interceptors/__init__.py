"""Interceptors: code that runs around every call, the same on every transport.

This is the one home of both kinds: server interceptors (``Interceptor``, below) and client
interceptors (``ClientInterceptor``, ``ClientCall``, ``ClientOutcome``, and ``intercept``
that puts them around a client transport; defined in ``rpckit.interceptors.client``).

A server interceptor overrides any of four hooks; the call runner calls them for every
method shape in every dialect (gRPC, gRPC-Web, Connect, plain routes, WebSocket):

- ``on_start(ctx)`` before the handler; raise ``RpcError`` to reject the call, set
  ``ctx.response_headers``/``ctx.principal`` here;
- ``on_request(ctx, message)`` per request message (unary requests too); return the
  message (or a replacement), or raise ``RpcError``;
- ``on_response(ctx, message)`` per response message, likewise;
- ``on_end(ctx, outcome)`` once, with the final status, duration and counts, whatever the
  outcome: success, error, cancel, deadline or drain.

Interceptors run in the order given: ``on_start`` and the per-message hooks first to last,
``on_end`` last to first (like nested ``with`` blocks). Hooks an interceptor does not
override cost nothing: the chain only calls what was overridden.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from rpckit.errors import Code, RpcError
from rpckit.interceptors.client import (
    ClientCall,
    ClientInterceptor,
    ClientOutcome,
    InterceptedTransport,
    InterceptedTransportSync,
    intercept,
    intercept_sync,
)

if TYPE_CHECKING:
    from rpckit.context import Context

__all__ = [
    "ClientCall",
    "ClientInterceptor",
    "ClientOutcome",
    "InterceptedTransport",
    "InterceptedTransportSync",
    "Interceptor",
    "InterceptorChain",
    "Outcome",
    "intercept",
    "intercept_sync",
]

log = logging.getLogger("rpckit.interceptors")


class Outcome(NamedTuple):
    """How a call ended, as ``on_end`` sees it (a named tuple: made for every call, so
    it must be cheap to build; a frozen dataclass costs four times as much)."""

    code: Code
    message: str
    #: The error the client was sent (None on success and when the client had gone).
    error: RpcError | None
    #: Seconds from the request's arrival to the final status.
    duration: float
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int


class Interceptor:
    """Base class of server interceptors: every hook passes through until overridden."""

    #: Query parameters this interceptor reads for itself (credentials in the URL): the
    #: plain routes leave them out of the request message instead of refusing them.
    query_parameters: frozenset[str] = frozenset()

    async def on_start(self, ctx: Context) -> None:
        """Before the handler runs: raise ``RpcError`` to reject the call."""

    async def on_request(self, ctx: Context, message: Any) -> Any:
        """Each request message on its way to the handler."""
        return message

    async def on_response(self, ctx: Context, message: Any) -> Any:
        """Each response message on its way to the client."""
        return message

    def on_end(self, ctx: Context, outcome: Outcome) -> None:
        """Once the call's final status is known."""


def _overrides(interceptor: Interceptor, hook: str) -> bool:
    return getattr(type(interceptor), hook) is not getattr(Interceptor, hook)


class InterceptorChain:
    """An ordered list of interceptors, split by the hooks each overrides."""

    def __init__(self, interceptors: Sequence[Interceptor] = ()) -> None:
        for interceptor in interceptors:
            if not isinstance(interceptor, Interceptor):
                raise TypeError(f"{interceptor!r} is not an rpckit.interceptors.Interceptor")
        self.interceptors = tuple(interceptors)
        self.starts = tuple(i for i in interceptors if _overrides(i, "on_start"))
        self.requests = tuple(i for i in interceptors if _overrides(i, "on_request"))
        self.responses = tuple(i for i in interceptors if _overrides(i, "on_response"))
        self.ends = tuple(i for i in reversed(interceptors) if _overrides(i, "on_end"))
        #: Every interceptor's own query parameters (see ``Interceptor.query_parameters``).
        self.query_parameters = frozenset(p for i in interceptors for p in i.query_parameters)

    def __bool__(self) -> bool:
        return bool(self.interceptors)

    async def start(self, ctx: Context) -> None:
        for interceptor in self.starts:
            await interceptor.on_start(ctx)

    async def request(self, ctx: Context, message: Any) -> Any:
        for interceptor in self.requests:
            message = await interceptor.on_request(ctx, message)
        return message

    async def response(self, ctx: Context, message: Any) -> Any:
        for interceptor in self.responses:
            message = await interceptor.on_response(ctx, message)
        return message

    def end(self, ctx: Context, outcome: Outcome) -> None:
        for interceptor in self.ends:
            try:
                interceptor.on_end(ctx, outcome)
            except Exception:  # the call is over: a failing observer must not change it
                log.exception("%r.on_end failed", interceptor)
