"""The per-call context a handler receives, the same on every transport."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Final, Protocol

from rpckit.files import parse_content_disposition, sanitize_filename
from rpckit.metadata import Metadata
from rpckit.service import MethodSpec

__all__ = ["UNKNOWN_COMPRESSION", "CallStats", "Context", "Dialect", "HeaderSender", "Transport"]

#: ``set_response_compression`` has not been called: the transport negotiates as usual.
DEFAULT_COMPRESSION = "default"
#: ``Context.request_compression`` where the transport cannot tell (gRPC: grpcio takes
#: ``grpc-encoding`` out of the metadata it hands over and exposes no other way to read it).
UNKNOWN_COMPRESSION: Final = "unknown"
_DISPOSITION = "content-disposition"


class Transport(StrEnum):
    """The server a call came in on (``Context.transport``); compares equal to its value."""

    #: rpckit's gRPC server (grpcio, HTTP/2).
    GRPC = "grpc"
    #: The HTTP bridge, one HTTP request per call (Connect, gRPC-Web, plain routes).
    HTTP = "http"
    #: The HTTP bridge, one WebSocket per call (the ``rpckit.v1.<encoding>`` sub-protocol).
    WEBSOCKET = "websocket"


class Dialect(StrEnum):
    """The protocol the client spoke (``Context.dialect``); compares equal to its value."""

    #: gRPC over HTTP/2, on the gRPC server.
    GRPC = "grpc"
    #: gRPC-Web (``application/grpc-web[-text]...``) on the HTTP bridge.
    GRPC_WEB = "grpc-web"
    #: The Connect protocol (unary and streams) on the HTTP bridge.
    CONNECT = "connect"
    #: Plain HTTP routes: ``google.api.http`` rules or the default route, on the HTTP bridge.
    PLAIN = "plain"
    #: rpckit's WebSocket sub-protocol, on the HTTP bridge.
    WEBSOCKET = "websocket"


#: The dialect a transport implies when the caller does not name one.
_IMPLIED = {Transport.GRPC: Dialect.GRPC, Transport.WEBSOCKET: Dialect.WEBSOCKET}


class CallStats:
    """What went through one call: counted by the call runner and the transport adapter."""

    __slots__ = ("bytes_in", "bytes_out", "messages_in", "messages_out", "started")

    def __init__(self, started: float | None = None) -> None:
        #: When the request arrived, in ``time.monotonic()`` seconds.
        self.started = time.monotonic() if started is None else started
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0


class HeaderSender(Protocol):
    """What sends a call's response headers: the transport adapter's responder."""

    async def send_headers(self, ctx: Context) -> None: ...


class _NoHeaders:
    async def send_headers(self, ctx: Context) -> None:
        return None


_NO_HEADERS = _NoHeaders()


# By value, for the per-call conversion: a dict lookup, not the enum's own (slower) lookup.
# The members are strings, so a member finds itself here too.
_TRANSPORTS: dict[str, Transport] = {member.value: member for member in Transport}
_DIALECTS: dict[str, Dialect] = {member.value: member for member in Dialect}


def _dialect(transport: Transport, value: Dialect | str | None) -> Dialect:
    if value is None:
        implied = _IMPLIED.get(transport)
        if implied is None:
            raise ValueError(f"a call on transport {transport.value!r} needs a dialect")
        return implied
    found = _DIALECTS.get(value)
    return found if found is not None else Dialect(value)


class Context:
    """Request metadata, peer and deadline in; response headers, trailers and compression out.

    The call runner enforces the deadline; ``cancelled`` turns true once the client is gone
    or the deadline has passed, and ``wait_cancelled()`` returns once either is noticed.
    ``transport`` (a ``Transport``) says which server took the call: ``grpc``, ``http`` or
    ``websocket``; ``dialect`` (a ``Dialect``) which protocol the client spoke: ``grpc``,
    ``grpc-web``, ``connect``, ``plain`` or ``websocket``. Both are string enums, so
    ``ctx.dialect == "connect"`` holds as well as ``ctx.dialect is Dialect.CONNECT``.
    """

    __slots__ = (
        "_cancelled", "_finishing", "_header_sender", "_headers_sent", "_is_cancelled",
        "_peer", "_response_compression", "_state", "compress_next", "deadline", "dialect",
        "method", "principal", "query", "request_compression", "request_headers",
        "response_headers", "response_trailers", "stats", "transport",
    )  # fmt: skip

    def __init__(
        self,
        method: MethodSpec[Any, Any],
        *,
        transport: Transport | str,
        dialect: Dialect | str | None = None,
        request_headers: Metadata | None = None,
        peer: str | Callable[[], str] = "",
        deadline: float | None = None,
        request_compression: str | None = None,
        query: bytes = b"",
        started: float | None = None,
    ) -> None:
        self.method = method
        found = _TRANSPORTS.get(transport)
        self.transport: Transport = found if found is not None else Transport(transport)
        self.dialect: Dialect = _dialect(self.transport, dialect)
        self.request_headers = request_headers if request_headers is not None else Metadata()
        # A function (grpcio's ``peer``) is called once, when the peer is first asked for.
        self._peer = peer
        #: When the call times out, in ``time.monotonic()`` seconds; None without a deadline.
        self.deadline = deadline
        #: The compression the request arrived with (``gzip``...), None when uncompressed,
        #: ``UNKNOWN_COMPRESSION`` (``"unknown"``) where the transport cannot tell (gRPC).
        self.request_compression = request_compression
        #: The raw query string of an HTTP request (empty elsewhere): credentials an
        #: interceptor takes from the URL (``BearerAuth(query=...)``) are read from here.
        self.query = query
        self.response_headers = Metadata()
        self.response_trailers = Metadata()
        #: Set by an authentication interceptor: who is calling (any object it chooses).
        self.principal: Any = None
        self._state: dict[Any, Any] | None = None
        #: ``started``: when the request arrived (``time.monotonic()``); None: now.
        self.stats = CallStats(started)
        self._response_compression: str | None = DEFAULT_COMPRESSION
        #: For transports: False once ``disable_next_message_compression()`` asked that the
        #: message being sent now go uncompressed (``take_compress_next`` reads and resets it).
        self.compress_next = True
        self._headers_sent = False
        self._finishing = False
        # The responder, not a closure over this context: no reference cycle per call.
        self._header_sender: HeaderSender = _NO_HEADERS
        self._cancelled: asyncio.Event | None = None
        self._is_cancelled = False

    @property
    def peer(self) -> str:
        """The client's address as the transport gives it (``ipv4:127.0.0.1:50312`` on
        gRPC, ``127.0.0.1:50312`` over HTTP), or ``""`` where it is not known."""
        peer = self._peer
        if not isinstance(peer, str):
            peer = self._peer = peer()
        return peer

    @property
    def state(self) -> dict[Any, Any]:
        """Scratch space for interceptors, keyed by whatever each chooses."""
        if self._state is None:
            self._state = {}
        return self._state

    @property
    def last_event_id(self) -> str | None:
        """The ``Last-Event-ID`` a reconnecting SSE client sent: where to resume a stream."""
        return self.request_headers.get("last-event-id")

    @property
    def upload_filename(self) -> str | None:
        """The file name an upload's client gave in ``Content-Disposition`` (a header over
        HTTP, metadata on gRPC), sanitised to a bare name (``sanitize_filename``), or None.
        Still only a label: serve files with ``FileStream.from_root``, never by this name."""
        return sanitize_filename(parse_content_disposition(self.request_headers.get(_DISPOSITION)))

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without a deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    # --- response headers and compression ----------------------------------------------------

    @property
    def headers_sent(self) -> bool:
        """True once the response headers have gone out; later changes to them are ignored."""
        return self._headers_sent

    async def send_headers(self) -> None:
        """Send ``response_headers`` now, before the first message (a no-op once sent)."""
        if not self._headers_sent:
            await self._header_sender.send_headers(self)

    def set_response_compression(self, name: str | None) -> None:
        """Compress the response with ``name`` (``gzip``...), or not at all with None.

        Without a call the transport chooses from what the client accepts. A name the
        transport or client does not support leaves the response uncompressed.
        """
        self._response_compression = "identity" if name is None else name

    @property
    def response_compression(self) -> str | None:
        """The compression chosen by ``set_response_compression``; None if not chosen."""
        value = self._response_compression
        return None if value == DEFAULT_COMPRESSION else value

    def disable_next_message_compression(self) -> None:
        """Send the next response message uncompressed (streams; gRPC and Connect)."""
        self.compress_next = False

    def take_compress_next(self) -> bool:
        """For transports: whether to compress the message being sent now (resets the flag)."""
        compress, self.compress_next = self.compress_next, True
        return compress

    def bind_header_sender(self, sender: HeaderSender) -> None:
        """For transports: what ``send_headers()`` does on this call."""
        self._header_sender = sender

    @property
    def finishing(self) -> bool:
        """True once the final answer is being written: a disconnect noticed from now on
        no longer cancels the call (the server reports the end of a complete response as
        a disconnect too)."""
        return self._finishing

    def mark_finishing(self) -> None:
        """For the call runner: the handler is done and the final answer is going out."""
        self._finishing = True

    def mark_headers_sent(self) -> None:
        """For transports: the response headers are on the wire."""
        self._headers_sent = True

    # --- cancellation ------------------------------------------------------------------------

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
        """Mark the call cancelled; the runner calls this when the client goes away."""
        self._is_cancelled = True
        if self._cancelled is not None:
            self._cancelled.set()
