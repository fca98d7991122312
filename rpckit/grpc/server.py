"""Serves rpckit services with grpc.aio: one generic handler per service.

Each RPC is an adapter on the call runner (``rpckit.call``): grpcio decodes, the runner
owns the lifecycle, and ``_GrpcResponder`` writes headers, messages and the final status
(``RpcError`` details in ``grpc-status-details-bin``). grpcio cancels the handler task
when the client leaves or the deadline passes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from functools import partial
from typing import Any, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from rpckit.address import Address, AddressError, parse_address
from rpckit.call import CallRunner, ClientGone
from rpckit.context import UNKNOWN_COMPRESSION, Context, Transport
from rpckit.encodings import ProtoEncoding
from rpckit.errors import Code, RpcError, message_too_large
from rpckit.grpc.status import grpc_code, to_grpc_metadata
from rpckit.interceptors import Interceptor
from rpckit.limits import DEFAULT_GRPC_STREAM_WINDOW, DEFAULT_MAX_MESSAGE_SIZE
from rpckit.metadata import Metadata
from rpckit.service import MethodKind, MethodSpec, Service
from rpckit.status import STATUS_DETAILS_KEY, status_details
from rpckit.streams import Event

__all__ = ["DEFAULT_HANDSHAKE_TIMEOUT", "GrpcServer", "generic_handler"]

log = logging.getLogger("rpckit.grpc")

_NO_DEADLINE = 1e8  # grpcio reports a huge time_remaining() when there is no deadline
#: Seconds a client stream's end waits for a cancellation grpcio may still deliver.
END_SETTLE = 0.002
#: Seconds grpcio waits after rpckit's own drain before it cancels what is left.
DRAIN_MARGIN = 1.0
#: Seconds a gRPC connection may take to finish its TLS (or plaintext HTTP/2) handshake.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
_COMPRESSIONS = {
    "identity": grpc.Compression.NoCompression,
    "gzip": grpc.Compression.Gzip,
    "deflate": grpc.Compression.Deflate,
}

_PROTO = ProtoEncoding()


class _Sent:
    """Awaits to nothing at once: the answer of a unary call is sent when the handler returns."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return cast(Generator[None, None, None], _NOTHING)  # an empty iterator: done at once


_NOTHING = iter(())


_SENT = _Sent()

Handler = Callable[..., Any]
ServicerContext = Any  # grpc.aio.ServicerContext; grpcio ships no types


def _context(method: MethodSpec[Any, Any], context: ServicerContext) -> Context:
    now = time.monotonic()  # read first, so the deadline is never later than grpcio's
    remaining = context.time_remaining()
    # The metadata and the peer are read from grpcio only if someone asks (an interceptor,
    # the access log, the handler): each read builds them anew in grpcio.
    # ``ctx.request_compression`` on gRPC is ``unknown``, never None (which would say
    # "uncompressed"): grpcio's core takes ``grpc-encoding`` out of the invocation metadata
    # and its servicer context has no other way to read it (grpcio 1.85).
    return Context(
        method,
        transport=Transport.GRPC,
        request_headers=Metadata.deferred(context.invocation_metadata),
        peer=context.peer,
        deadline=now + remaining if remaining is not None and remaining < _NO_DEADLINE else None,
        request_compression=UNKNOWN_COMPRESSION,
        started=now,
    )


class _GrpcResponder:
    """Writes one call's answer through grpcio's servicer context."""

    __slots__ = ("context", "counted", "response", "started", "streaming")

    def __init__(self, context: ServicerContext, streaming: bool, counted: bool) -> None:
        self.context = context
        self.streaming = streaming
        #: Whether anyone reads the call's stats (an interceptor's ``on_end``): else a
        #: streamed message's bytes are not counted.
        self.counted = counted
        self.response: Any = None
        #: A streamed message has gone out (so have the headers).
        self.started = False

    async def send_headers(self, ctx: Context) -> None:
        if ctx.headers_sent:
            return
        ctx.mark_headers_sent()
        chosen = ctx.response_compression
        compressing = False
        if chosen is not None:
            algorithm = _COMPRESSIONS.get(chosen)
            if algorithm is None:
                log.warning("%s: gRPC cannot compress with %r", ctx.method.path, chosen)
            else:
                self.context.set_compression(algorithm)
                compressing = True
        # grpcio applies a chosen compression only to initial metadata sent explicitly.
        if ctx.response_headers or compressing:
            await self.context.send_initial_metadata(to_grpc_metadata(ctx.response_headers))

    async def send_stream(self, ctx: Context, stream: AsyncIterator[Any]) -> bool:
        return False

    def send_message(self, ctx: Context, message: Any, event: Event[Any] | None) -> Awaitable[None]:
        # Serialized here, once (grpcio's serializer is None): its size counts as sent.
        data = message.SerializeToString()
        if self.started and ctx.compress_next:
            if self.counted:
                ctx.stats.bytes_out += len(data) + 5  # as framed on the wire, uncompressed
            # grpcio's own coroutine, handed back as is: no frame of ours per message.
            write: Awaitable[None] = self.context.write(data)
            return write
        ctx.stats.bytes_out += len(data) + 5
        if not self.streaming:
            self.response = data
            return _SENT
        return self._write(ctx, data)

    async def _write(self, ctx: Context, data: bytes) -> None:
        """A streamed message that is the first, or asked to go uncompressed."""
        if not ctx.headers_sent:
            await self.send_headers(ctx)
        self.started = True
        if not ctx.take_compress_next():
            self.context.disable_next_message_compression()
        await self.context.write(data)

    async def finish(self, ctx: Context, error: RpcError | None) -> None:
        # Headers a handler set before failing still go out (grpc's echo_metadata_with_status).
        if not ctx.headers_sent and (ctx.response_headers or ctx.response_compression):
            await self.send_headers(ctx)
        if error is None:
            if ctx.response_trailers:
                self.context.set_trailing_metadata(to_grpc_metadata(ctx.response_trailers))
            return
        trailers = Metadata(ctx.response_trailers)
        trailers.extend(error.metadata)
        details = status_details(error)
        if details is not None:
            trailers.add(STATUS_DETAILS_KEY, details)
        self.response = None
        self.context.set_trailing_metadata(to_grpc_metadata(trailers))
        self.context.set_code(grpc_code(error.code))
        self.context.set_details(error.message)


async def _requests(
    requests: AsyncIterator[bytes],
    context: ServicerContext,
    ctx: Context,
    decode: Callable[[bytes], Any],
) -> AsyncIterator[Any]:
    """The request stream, decoded; it raises (never just ends) when the call was cut short.

    grpcio ends its request iterator the same way for a half-close and for a cancel (or a
    deadline, or its own shutdown), and injects the cancellation into the handler's task a
    moment later. So an end is confirmed before it is reported: a deadline already past
    fails at once, and ``END_SETTLE`` seconds let a pending cancellation land first (in
    tests it follows the end within 0.1 ms); a truncated upload never looks complete.
    """
    stats = ctx.stats
    async for data in requests:
        stats.messages_in += 1
        stats.bytes_in += len(data)
        yield decode(data)
    if ctx.deadline is not None and time.monotonic() >= ctx.deadline:
        raise RpcError(Code.DEADLINE_EXCEEDED, "deadline exceeded")
    await asyncio.sleep(END_SETTLE)  # a cancellation arriving now raises CancelledError here
    if context.cancelled() or context.done():
        raise ClientGone


def _decoder(method: MethodSpec[Any, Any], max_size: int) -> Callable[[bytes], Any]:
    """Decodes request bytes in the call (not in grpcio), so that a malformed or oversized
    message gets the same status and text as on every other transport."""
    message_type = method.input

    def decode(data: bytes) -> Any:
        if len(data) > max_size:
            raise message_too_large(max_size)
        return _PROTO.decode(data, message_type)

    return decode


def _raise(error: RpcError) -> Any:
    raise error


def _method_handler(
    method: MethodSpec[Any, Any], fn: Handler, runner: CallRunner, max_size: int
) -> Any:
    decode = _decoder(method, max_size)
    streaming = method.kind.server_streams
    client_streams = method.kind.client_streams

    async def call(request: Any, context: ServicerContext) -> Any:
        if runner.loop is None:  # served by a grpc.aio server of the user's own, not GrpcServer:
            runner.loop = asyncio.get_running_loop()  # no getpid() per call (rpckit.loops)
        ctx = _context(method, context)
        if client_streams:
            request = _requests(request, context, ctx, decode)
        else:
            ctx.stats.bytes_in = len(request)
            try:
                request = decode(request)
            except RpcError as error:  # the call still runs, to end with it as its status
                request = partial(_raise, error)

        responder = _GrpcResponder(context, streaming, bool(runner.chain.ends))
        await runner.run(ctx, fn, request, responder, owns_task=False)
        return responder.response

    if method.kind is MethodKind.UNARY:
        make = grpc.unary_unary_rpc_method_handler
    elif method.kind is MethodKind.CLIENT_STREAM:
        make = grpc.stream_unary_rpc_method_handler
    elif method.kind is MethodKind.SERVER_STREAM:
        make = grpc.unary_stream_rpc_method_handler
    else:
        make = grpc.stream_stream_rpc_method_handler
    # Raw bytes both ways: the call decodes requests and serializes responses itself.
    return make(call, request_deserializer=None, response_serializer=None)


def generic_handler(
    service: Service,
    runner: CallRunner | None = None,
    *,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> Any:
    """A grpcio handler that serves every method of ``service`` through ``runner``."""
    runner = runner if runner is not None else CallRunner()
    handlers = {
        method.name: _method_handler(method, fn, runner, max_message_size)
        for method, fn in service.bind()
    }
    return grpc.method_handlers_generic_handler(service.spec().name, handlers)


def _bind_error(address: Address, *, reuse_port: bool) -> str:
    """Why grpcio could not bind ``address``, which it does not say: the error of a plain
    socket bound there the same way (grpcio sets ``SO_REUSEADDR``)."""
    try:
        found = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return f"cannot resolve {address.host!r} ({exc.strerror})"
    reason = "grpcio gave no reason"
    for family, kind, proto, _, where in found:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                probe.bind(where)
            except OSError as exc:
                reason = exc.strerror or str(exc)
    return reason


class GrpcServer:
    """A grpc.aio server for rpckit services, with reflection and health checking.

    ``await start(address)`` binds (port 0 picks a free port, returned), ``stop(grace)`` lets
    in-flight calls finish for ``grace`` seconds and then cancels them.

    ``stream_window`` bounds the bytes of a request stream the server accepts ahead of its
    handler: grpc core's HTTP/2 window per stream, with its BDP probing off. With the
    probing on (None: grpc core's own behaviour) the windows grow with the measured
    bandwidth-delay product, on loopback to ~8 MiB per call within seconds, and a handler
    that reads slowly has it all buffered in the server: 20 uploads grew it by 166 MiB.
    A call moves about half its window per round trip (grpc core acknowledges at half: 1 MiB
    at 50 ms, ~10 MiB/s per call). ``handshake_timeout`` bounds a connection's handshake
    (TLS, then HTTP/2's preface and settings); grpc core's own is 120 s.
    """

    def __init__(
        self,
        services: Sequence[Service],
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        reflection: bool = True,
        health: bool = True,
        options: Sequence[tuple[str, Any]] = (),
        reuse_port: bool = False,
        credentials: Any = None,
        health_servicer: Any = None,
        interceptors: Sequence[Interceptor] = (),
        stream_window: int | None = DEFAULT_GRPC_STREAM_WINDOW,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        self.services = list(services)
        #: Runs every call: the interceptors, and the drain at shutdown.
        self.runner = CallRunner(tuple(interceptors))
        self.max_message_size = max_message_size
        self.reflection = reflection
        self.health = health
        self.options = list(options)
        #: Let other worker processes bind the same port (``SO_REUSEPORT``).
        self.reuse_port = reuse_port
        #: ``grpc.ssl_server_credentials(...)`` for TLS (see ``rpckit.serving.tls``); None: plain.
        self.credentials = credentials
        #: The HTTP/2 window of each call's request stream; None: grpc core's (BDP probing).
        self.stream_window = stream_window
        #: Seconds a connection's handshake may take; None: grpc core's (120 s).
        self.handshake_timeout = handshake_timeout
        self._server: grpc.aio.Server | None = None
        #: The ``grpc_health`` aio servicer; pass one to share it (the HTTP probes read it).
        self._health: Any = health_servicer

    def _bounds(self) -> list[tuple[str, Any]]:
        """grpc core's channel arguments for ``stream_window`` and ``handshake_timeout``."""
        bounds: list[tuple[str, Any]] = []
        if self.stream_window is not None:
            # Without BDP probing the stream window stays at the lookahead grpc core grants.
            bounds += [
                ("grpc.http2.bdp_probe", 0),
                ("grpc.http2.lookahead_bytes", self.stream_window),
            ]
        if self.handshake_timeout is not None:
            timeout_ms = max(1, round(self.handshake_timeout * 1000))
            bounds.append(("grpc.server_handshake_timeout_ms", timeout_ms))
        return bounds

    @property
    def server(self) -> grpc.aio.Server:
        """The underlying grpc.aio server (created by ``start``)."""
        if self._server is None:
            raise RuntimeError("the server has not been started")
        return self._server

    async def start(self, address: str) -> int:
        """Bind ``address`` and start serving; returns the bound port.

        ``address`` takes the forms of ``rpckit.address`` (``:PORT`` is loopback,
        as on the HTTP side). A failure to bind is an OSError with its reason.
        """
        try:
            bound = parse_address(address)
        except AddressError as exc:
            raise OSError(str(exc)) from None
        options = [
            ("grpc.max_send_message_length", self.max_message_size),
            # rpckit checks the limit itself (one error text on every transport); grpcio's own
            # check, with its own text, is only a backstop against far larger messages.
            ("grpc.max_receive_message_length", 2 * self.max_message_size),
            ("grpc.so_reuseport", 1 if self.reuse_port else 0),
            *self._bounds(),
            *self.options,
        ]
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers(
            [
                generic_handler(s, self.runner, max_message_size=self.max_message_size)
                for s in self.services
            ]
        )
        names = [s.spec().name for s in self.services]
        if self.health:
            if self._health is None:
                self._health = health_aio.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
            for name in ["", *names]:
                await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
            names.append(health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
        if self.reflection:
            # rpckit's own reflection services, run by the call runner like any method, so
            # that the interceptors guard reflection here exactly as on the HTTP bridge.
            from rpckit.reflection import reflection_services

            server.add_generic_rpc_handlers(
                [
                    generic_handler(s, self.runner, max_message_size=self.max_message_size)
                    for s in reflection_services(names)
                ]
            )
        try:
            if self.credentials is not None:
                port = server.add_secure_port(str(bound), self.credentials)
            else:
                port = server.add_insecure_port(str(bound))
        except RuntimeError:  # grpcio raises (or, in older releases, returns 0) on failure
            port = 0
        if port == 0:
            reason = _bind_error(bound, reuse_port=self.reuse_port)
            raise OSError(f"could not bind gRPC server to {bound}: {reason}")
        await server.start()
        self._server = server
        if self.runner.loop is None:  # the current task by a dict lookup, per call
            self.runner.loop = asyncio.get_running_loop()
        return int(port)

    async def stop(self, grace: float | None = 5.0) -> None:
        """Stop accepting calls; in-flight calls get ``grace`` seconds before cancellation."""
        if self._server is None:
            return
        try:
            await self._stop(grace)
        finally:
            for interceptor in self.runner.chain.interceptors:
                flush = getattr(interceptor, "flush", None)
                if callable(flush):  # the access log's last lines
                    flush()

    async def _stop(self, grace: float | None) -> None:
        assert self._server is not None
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if grace is None:
            await self._server.stop(None)
            return
        # At the end of the grace period rpckit ends open calls with ``unavailable``; grpcio's
        # own hard stop only comes after that, as a backstop.
        timer = asyncio.get_running_loop().call_later(grace, self.runner.drain.set)
        try:
            await self._server.stop(grace + DRAIN_MARGIN if grace > 0 else 0)
        finally:
            timer.cancel()

    async def wait_for_termination(self) -> None:
        """Return once the server has stopped."""
        await self.server.wait_for_termination()
