"""The per-call context a handler receives, the same on every transport."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rpckit.metadata import Metadata
from rpckit.service import MethodSpec

__all__ = ["Context"]


class Context:
    """Request metadata, peer and deadline in; response headers and trailers out.

    Transports create it and enforce the deadline; ``cancelled`` turns true once the client
    is gone or the deadline has passed, and ``wait_cancelled()`` returns once the transport
    has noticed either.
    """

    def __init__(
        self,
        method: MethodSpec[Any, Any],
        *,
        transport: str,
        request_headers: Metadata | None = None,
        peer: str = "",
        deadline: float | None = None,
    ) -> None:
        self.method = method
        self.transport = transport
        self.request_headers = request_headers if request_headers is not None else Metadata()
        self.peer = peer
        #: When the call times out, in ``time.monotonic()`` seconds; None without a deadline.
        self.deadline = deadline
        self.response_headers = Metadata()
        self.response_trailers = Metadata()
        self._cancelled: asyncio.Event | None = None
        self._is_cancelled = False

    @property
    def last_event_id(self) -> str | None:
        """The ``Last-Event-ID`` a reconnecting SSE client sent: where to resume a stream."""
        return self.request_headers.get("last-event-id")

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without a deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    @property
    def cancelled(self) -> bool:
        """True once the client has gone away or the deadline has passed."""
        if not self._is_cancelled and self.deadline is not None:
            self._is_cancelled = time.monotonic() >= self.deadline
        return self._is_cancelled

    async def wait_cancelled(self) -> None:
        """Return once the call is cancelled."""
        if self._is_cancelled:
            return
        if self._cancelled is None:
            self._cancelled = asyncio.Event()
        await self._cancelled.wait()

    def cancel(self) -> None:
        """Mark the call cancelled; transports call this when the client goes away."""
        self._is_cancelled = True
        if self._cancelled is not None:
            self._cancelled.set()
