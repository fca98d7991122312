"""Serves rpckit services with grpc.aio: one generic handler per service.

Each RPC gets a ``Context``; ``RpcError`` becomes its gRPC status (details in
``grpc-status-details-bin``); any other exception becomes ``internal`` with no traceback on
the wire. grpcio cancels the handler task when the client leaves or the deadline passes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from rpckit.context import Context
from rpckit.errors import Code, RpcError
from rpckit.grpc.status import (
    STATUS_DETAILS_KEY,
    from_grpc_metadata,
    grpc_code,
    status_details,
    to_grpc_metadata,
)
from rpckit.metadata import Metadata
from rpckit.service import MethodKind, MethodSpec, Service, resolve_stream
from rpckit.streams import Event, aclose
from rpckit.wellknown import adapt_requests, encode_stream, file_headers

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "GrpcServer", "generic_handler"]

log = logging.getLogger("rpckit.grpc")

DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024
_NO_DEADLINE = 1e8  # grpcio reports a huge time_remaining() when there is no deadline
_END: Any = object()

Handler = Callable[..., Any]
ServicerContext = Any  # grpc.aio.ServicerContext; grpcio ships no types


def _context(method: MethodSpec[Any, Any], context: ServicerContext) -> Context:
    now = time.monotonic()  # read first, so the deadline is never later than grpcio's
    remaining = context.time_remaining()
    ctx = Context(
        method,
        transport="grpc",
        request_headers=from_grpc_metadata(context.invocation_metadata()),
        peer=context.peer(),
        deadline=now + remaining if remaining is not None and remaining < _NO_DEADLINE else None,
    )
    context.add_done_callback(lambda done: ctx.cancel() if done.cancelled() else None)
    return ctx


async def _send_headers(context: ServicerContext, ctx: Context) -> None:
    if ctx.response_headers:
        await context.send_initial_metadata(to_grpc_metadata(ctx.response_headers))


def _set_trailers(context: ServicerContext, ctx: Context) -> None:
    if ctx.response_trailers:
        context.set_trailing_metadata(to_grpc_metadata(ctx.response_trailers))


async def _fail(context: ServicerContext, ctx: Context, exc: Exception) -> NoReturn:
    """End the call with the status an exception stands for."""
    if isinstance(exc, RpcError):
        error = exc
    else:
        log.exception("%s failed", ctx.method.path)
        error = RpcError(Code.INTERNAL, "internal error")
    trailers = Metadata(ctx.response_trailers)
    trailers.extend(error.metadata)
    details = status_details(error)
    if details is not None:
        trailers.add(STATUS_DETAILS_KEY, details)
    await context.abort(grpc_code(error.code), error.message, to_grpc_metadata(trailers))
    raise AssertionError("abort() returned")  # pragma: no cover


def _unary(method: MethodSpec[Any, Any], fn: Handler) -> Handler:
    async def unary(request: Any, context: ServicerContext) -> Any:
        ctx = _context(method, context)
        try:
            response = await fn(request, ctx)
        except asyncio.CancelledError:
            ctx.cancel()
            raise
        except Exception as exc:
            await _fail(context, ctx, exc)
        await _send_headers(context, ctx)
        _set_trailers(context, ctx)
        return response

    return unary


def _client_stream(method: MethodSpec[Any, Any], fn: Handler) -> Handler:
    async def client_stream(requests: AsyncIterable[Any], context: ServicerContext) -> Any:
        ctx = _context(method, context)
        adapted: object = None
        try:
            adapted = await adapt_requests(method, requests, ctx.request_headers)
            response = await fn(adapted, ctx)
        except asyncio.CancelledError:
            ctx.cancel()
            raise
        except Exception as exc:
            await _fail(context, ctx, exc)
        finally:
            await aclose(adapted)
        await _send_headers(context, ctx)
        _set_trailers(context, ctx)
        return response

    return client_stream


def _server_stream(method: MethodSpec[Any, Any], fn: Handler) -> Handler:
    async def server_stream(request: Any, context: ServicerContext) -> None:
        ctx = _context(method, context)
        adapted: object = None
        stream: AsyncIterator[Any] | None = None
        messages: AsyncIterator[Any] | None = None
        try:
            if method.kind is MethodKind.BIDI_STREAM:
                adapted = await adapt_requests(method, request, ctx.request_headers)
                request = adapted
            stream = await resolve_stream(fn(request, ctx))
            ctx.response_headers.extend(file_headers(stream))
            messages = encode_stream(method, stream)
            first = await anext(messages, _END)
            await _send_headers(context, ctx)
            if first is not _END:
                await context.write(first.data if type(first) is Event else first)
                async for message in messages:
                    await context.write(message.data if type(message) is Event else message)
        except asyncio.CancelledError:
            ctx.cancel()
            raise
        except Exception as exc:
            await _fail(context, ctx, exc)
        finally:
            await aclose(messages)
            await aclose(stream)
            await aclose(adapted)
        _set_trailers(context, ctx)

    return server_stream


def _method_handler(method: MethodSpec[Any, Any], fn: Handler) -> Any:
    serialize: Callable[[Any], bytes] = method.output.SerializeToString
    deserialize: Callable[[bytes], Any] = method.input.FromString
    if method.kind is MethodKind.UNARY:
        return grpc.unary_unary_rpc_method_handler(
            _unary(method, fn), request_deserializer=deserialize, response_serializer=serialize
        )
    if method.kind is MethodKind.CLIENT_STREAM:
        return grpc.stream_unary_rpc_method_handler(
            _client_stream(method, fn),
            request_deserializer=deserialize,
            response_serializer=serialize,
        )
    make = grpc.unary_stream_rpc_method_handler
    if method.kind is MethodKind.BIDI_STREAM:
        make = grpc.stream_stream_rpc_method_handler
    return make(
        _server_stream(method, fn), request_deserializer=deserialize, response_serializer=serialize
    )


def generic_handler(service: Service) -> Any:
    """A grpcio handler that serves every method of ``service``."""
    spec = service.spec()
    handlers = {method.name: _method_handler(method, fn) for method, fn in service.bind()}
    return grpc.method_handlers_generic_handler(spec.name, handlers)


class GrpcServer:
    """A grpc.aio server for rpckit services, with reflection and health checking.

    ``await start(address)`` binds (port 0 picks a free port, returned), ``stop(grace)`` lets
    in-flight calls finish for ``grace`` seconds and then cancels them.
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
    ) -> None:
        self.services = list(services)
        self.max_message_size = max_message_size
        self.reflection = reflection
        self.health = health
        self.options = list(options)
        #: Let other worker processes bind the same port (``SO_REUSEPORT``).
        self.reuse_port = reuse_port
        #: ``grpc.ssl_server_credentials(...)`` for TLS (see ``rpckit.serving.tls``); None: plain.
        self.credentials = credentials
        self._server: grpc.aio.Server | None = None
        #: The ``grpc_health`` aio servicer; pass one to share it (the HTTP probes read it).
        self._health: Any = health_servicer

    @property
    def server(self) -> grpc.aio.Server:
        """The underlying grpc.aio server (created by ``start``)."""
        if self._server is None:
            raise RuntimeError("the server has not been started")
        return self._server

    async def start(self, address: str) -> int:
        """Bind ``address`` (``host:port``) and start serving; returns the bound port."""
        options = [
            ("grpc.max_send_message_length", self.max_message_size),
            ("grpc.max_receive_message_length", self.max_message_size),
            ("grpc.so_reuseport", 1 if self.reuse_port else 0),
            *self.options,
        ]
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers([generic_handler(s) for s in self.services])
        names = [s.spec().name for s in self.services]
        if self.health:
            if self._health is None:
                self._health = health_aio.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
            for name in ["", *names]:
                await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
            names.append(health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
        if self.reflection:
            names.append(reflection.SERVICE_NAME)
            reflection.enable_server_reflection(names, server)
        try:
            if self.credentials is not None:
                port = server.add_secure_port(address, self.credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError:  # grpcio raises (or, in older releases, returns 0) on failure
            port = 0
        if port == 0:
            raise OSError(f"could not bind gRPC server to {address}")
        await server.start()
        self._server = server
        return int(port)

    async def stop(self, grace: float | None = 5.0) -> None:
        """Stop accepting calls; in-flight calls get ``grace`` seconds before cancellation."""
        if self._server is None:
            return
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)

    async def wait_for_termination(self) -> None:
        """Return once the server has stopped."""
        await self.server.wait_for_termination()
