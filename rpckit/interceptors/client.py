"""Client interceptors: code around every outgoing call of a typed client, on any transport.

The same four hooks as server interceptors (``rpckit.interceptors.Interceptor``), seen
through a ``ClientCall``; ``intercept(transport, [...])`` puts them around a transport.
Import them from ``rpckit.interceptors``, their public home.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from google.protobuf.message import Message

from rpckit.client import (
    AsyncClosing,
    CallOptions,
    Closing,
    StreamCall,
    StreamCallSync,
    Transport,
    TransportSync,
    as_async_iterable,
    as_iterable,
)
from rpckit.errors import Code, RpcError
from rpckit.metadata import Metadata
from rpckit.service import MethodSpec
from rpckit.streams import aclose

__all__ = [
    "ClientCall",
    "ClientInterceptor",
    "ClientOutcome",
    "InterceptedTransport",
    "InterceptedTransportSync",
    "intercept",
    "intercept_sync",
]

I = TypeVar("I", bound=Message)  # noqa: E741 - request type
O = TypeVar("O", bound=Message)  # noqa: E741 - response type
T = TypeVar("T")


@dataclass(slots=True)
class ClientCall:
    """One outgoing call as client interceptors see it: change ``metadata`` or ``timeout``
    in ``on_start`` (to add a token or a ``traceparent``); ``state`` is scratch space."""

    method: MethodSpec[Any, Any]
    metadata: Metadata
    timeout: float | None
    started: float = field(default_factory=time.monotonic)
    state: dict[Any, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClientOutcome:
    """How an outgoing call ended: ``code`` is ``OK`` or the error's code."""

    code: Code
    error: RpcError | None
    duration: float
    messages_out: int
    messages_in: int


class ClientInterceptor:
    """Base class of client interceptors: every hook passes through until overridden.

    The same four hooks as server interceptors (``rpckit.interceptors``), for every call
    shape over any transport; ``on_start`` may raise ``RpcError`` to fail the call unsent.
    """

    async def on_start(self, call: ClientCall) -> None:
        """Before the call is sent."""

    async def on_request(self, call: ClientCall, message: Any) -> Any:
        """Each request message on its way to the server."""
        return message

    async def on_response(self, call: ClientCall, message: Any) -> Any:
        """Each response message on its way to the caller."""
        return message

    def on_end(self, call: ClientCall, outcome: ClientOutcome) -> None:
        """Once the call has ended, whatever its end."""


def intercept(transport: Transport, interceptors: Sequence[ClientInterceptor]) -> Transport:
    """``transport`` with ``interceptors`` around every call (first given = outermost).

    ``StreamsServiceClient(intercept(GrpcTransport(addr), [auth, tracing]))``.
    """
    if not interceptors:
        return transport
    return InterceptedTransport(transport, interceptors)


class InterceptedTransport(AsyncClosing):
    """A Transport that runs client interceptors around another transport's calls."""

    def __init__(self, transport: Transport, interceptors: Sequence[ClientInterceptor]) -> None:
        self.transport = transport
        self.interceptors = tuple(interceptors)

    async def aclose(self) -> None:
        close = getattr(self.transport, "aclose", None)
        if close is not None:
            await close()

    async def _start(self, method: MethodSpec[Any, Any], options: CallOptions) -> ClientCall:
        call = ClientCall(method, Metadata(options.metadata), options.timeout)
        for interceptor in self.interceptors:
            await interceptor.on_start(call)
        return call

    @staticmethod
    def _options(call: ClientCall, options: CallOptions) -> CallOptions:
        return CallOptions(call.timeout, call.metadata.items(), options.response)

    async def _request(self, call: ClientCall, message: Any) -> Any:
        for interceptor in self.interceptors:
            message = await interceptor.on_request(call, message)
        return message

    async def _response(self, call: ClientCall, message: Any) -> Any:
        for interceptor in self.interceptors:
            message = await interceptor.on_response(call, message)
        return message

    def _end(self, call: ClientCall, error: BaseException | None, sent: int, got: int) -> None:
        if error is None:
            code, rpc_error = Code.OK, None
        elif isinstance(error, RpcError):
            code, rpc_error = error.code, error
        elif isinstance(error, asyncio.CancelledError | GeneratorExit):
            code, rpc_error = Code.CANCELLED, None
        else:
            code, rpc_error = Code.UNKNOWN, None
        outcome = ClientOutcome(code, rpc_error, time.monotonic() - call.started, sent, got)
        for interceptor in reversed(self.interceptors):
            interceptor.on_end(call, outcome)

    async def _requests(
        self, call: ClientCall, requests: AsyncIterable[Any] | Iterable[Any], counts: list[int]
    ) -> AsyncIterator[Any]:
        async for message in as_async_iterable(requests):
            counts[0] += 1
            yield await self._request(call, message)

    async def _responses(
        self, call: ClientCall, start: Callable[[], StreamCall[Any]], counts: list[int]
    ) -> AsyncIterator[Any]:
        error: BaseException | None = None
        responses: StreamCall[Any] | None = None
        try:
            responses = start()
            async for message in responses:
                counts[1] += 1
                yield await self._response(call, message)
        except BaseException as exc:
            error = exc
            raise
        finally:
            await aclose(responses)
            self._end(call, error, counts[0], counts[1])

    async def unary(self, method: MethodSpec[I, O], request: I, options: CallOptions) -> O:
        call = await self._start(method, options)
        error: BaseException | None = None
        try:
            request = await self._request(call, request)
            response = await self.transport.unary(method, request, self._options(call, options))
            result: O = await self._response(call, response)
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._end(call, error, 1, 0 if error is not None else 1)

    async def client_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        options: CallOptions,
    ) -> O:
        call = await self._start(method, options)
        counts = [0, 0]
        error: BaseException | None = None
        try:
            response = await self.transport.client_stream(
                method, self._requests(call, requests, counts), self._options(call, options)
            )
            result: O = await self._response(call, response)
            counts[1] = 1
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._end(call, error, counts[0], counts[1])

    def server_stream(
        self, method: MethodSpec[I, O], request: I, options: CallOptions
    ) -> StreamCall[O]:
        return StreamCall(self._stream(method, options, request=request))

    def bidi_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        options: CallOptions,
    ) -> StreamCall[O]:
        return StreamCall(self._stream(method, options, requests=requests))

    async def _stream(
        self,
        method: MethodSpec[Any, Any],
        options: CallOptions,
        *,
        request: Any = None,
        requests: AsyncIterable[Any] | Iterable[Any] | None = None,
    ) -> AsyncIterator[Any]:
        call = await self._start(method, options)
        counts = [0, 0]
        if requests is None:
            request = await self._request(call, request)
            counts[0] = 1

            def start() -> StreamCall[Any]:
                return self.transport.server_stream(method, request, self._options(call, options))

        else:
            outgoing = self._requests(call, requests, counts)

            def start() -> StreamCall[Any]:
                return self.transport.bidi_stream(method, outgoing, self._options(call, options))

        async for message in self._responses(call, start, counts):
            yield message


# --- blocking clients ----------------------------------------------------------------------

_runners = threading.local()


def _run(hook: Coroutine[Any, Any, T]) -> T:
    """Run one async hook for a blocking call: the hooks are the same objects async clients
    use, run to completion on an event loop of this thread's own (made once per thread)."""
    runner: asyncio.Runner | None = getattr(_runners, "runner", None)
    if runner is None:
        runner = _runners.runner = asyncio.Runner()
    return runner.run(hook)


def intercept_sync(
    transport: TransportSync, interceptors: Sequence[ClientInterceptor]
) -> TransportSync:
    """``intercept`` for blocking clients: the same interceptors around a ``TransportSync``
    (``StreamsServiceClientSync(intercept_sync(GrpcTransportSync(addr), [auth]))``). Their
    async hooks run on a private event loop per thread, so call it outside async code."""
    if not interceptors:
        return transport
    return InterceptedTransportSync(transport, interceptors)


class InterceptedTransportSync(Closing):
    """A TransportSync that runs client interceptors around another one's calls."""

    def __init__(self, transport: TransportSync, interceptors: Sequence[ClientInterceptor]) -> None:
        self.transport = transport
        self.interceptors = tuple(interceptors)
        # the async chain lends its hooks' order and bookkeeping; its transport is never called
        self._chain = InterceptedTransport(cast(Transport, None), interceptors)

    def close(self) -> None:
        close = getattr(self.transport, "close", None)
        if close is not None:
            close()

    def _start(self, method: MethodSpec[Any, Any], options: CallOptions) -> ClientCall:
        return _run(self._chain._start(method, options))

    def _requests(self, call: ClientCall, requests: Iterable[Any], counts: list[int]) -> Any:
        for message in as_iterable(requests):
            counts[0] += 1
            yield _run(self._chain._request(call, message))

    def unary(self, method: MethodSpec[I, O], request: I, options: CallOptions) -> O:
        call = self._start(method, options)
        error: BaseException | None = None
        try:
            request = _run(self._chain._request(call, request))
            response = self.transport.unary(method, request, self._chain._options(call, options))
            result: O = _run(self._chain._response(call, response))
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._chain._end(call, error, 1, 0 if error is not None else 1)

    def client_stream(
        self, method: MethodSpec[I, O], requests: Iterable[I], options: CallOptions
    ) -> O:
        call = self._start(method, options)
        counts = [0, 0]
        error: BaseException | None = None
        try:
            response = self.transport.client_stream(
                method, self._requests(call, requests, counts), self._chain._options(call, options)
            )
            result: O = _run(self._chain._response(call, response))
            counts[1] = 1
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._chain._end(call, error, counts[0], counts[1])

    def server_stream(
        self, method: MethodSpec[I, O], request: I, options: CallOptions
    ) -> StreamCallSync[O]:
        return StreamCallSync(self._stream(method, options, request=request))

    def bidi_stream(
        self, method: MethodSpec[I, O], requests: Iterable[I], options: CallOptions
    ) -> StreamCallSync[O]:
        return StreamCallSync(self._stream(method, options, requests=requests))

    def _stream(
        self,
        method: MethodSpec[Any, Any],
        options: CallOptions,
        *,
        request: Any = None,
        requests: Iterable[Any] | None = None,
    ) -> Iterator[Any]:
        call = self._start(method, options)
        counts = [0, 0]
        error: BaseException | None = None
        responses: StreamCallSync[Any] | None = None
        try:
            forwarded = self._chain._options(call, options)
            if requests is None:
                request = _run(self._chain._request(call, request))
                counts[0] = 1
                responses = self.transport.server_stream(method, request, forwarded)
            else:
                outgoing = self._requests(call, requests, counts)
                responses = self.transport.bidi_stream(method, outgoing, forwarded)
            for message in responses:
                counts[1] += 1
                yield _run(self._chain._response(call, message))
        except BaseException as exc:
            error = exc
            raise
        finally:
            if responses is not None:
                responses.close()
            self._chain._end(call, error, counts[0], counts[1])
