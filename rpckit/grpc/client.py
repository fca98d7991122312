"""A typed-client transport over grpc.aio channels."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from rpckit.client import (
    AsyncClosing,
    CallOptions,
    Closing,
    StreamCall,
    StreamCallSync,
    as_async_iterable,
    as_iterable,
)
from rpckit.errors import Code, RpcError
from rpckit.grpc.status import from_grpc_metadata
from rpckit.limits import DEFAULT_MAX_MESSAGE_SIZE
from rpckit.metadata import Metadata
from rpckit.service import MethodSpec
from rpckit.status import STATUS_DETAILS_KEY, details_from_status

__all__ = ["GrpcTransport", "GrpcTransportSync"]

I = TypeVar("I", bound=Message)  # noqa: E741 - request type
O = TypeVar("O", bound=Message)  # noqa: E741 - response type


def grpc_request_metadata(options: CallOptions) -> tuple[tuple[str, str | bytes], ...]:
    """A call's request metadata as grpcio wants it: ``-bin`` values as raw bytes.

    A ``-bin`` value may be given as bytes or as base64 text (padded or not, standard or
    URL-safe alphabet), which is how rpckit's ``Metadata`` holds it; anything else is a
    ValueError naming the key, raised before the call starts.
    """
    if not options.metadata:
        return ()
    pairs: list[tuple[str, str | bytes]] = []
    for key, value in Metadata(options.metadata):
        pairs.append((key, _binary(key, value) if key.endswith("-bin") else value))
    return tuple(pairs)


def _binary(key: str, text: str) -> bytes:
    standard = text.strip().rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"metadata {key!r}: a -bin value must be bytes or base64 text") from None


def _error(exc: grpc.aio.AioRpcError) -> RpcError:
    trailers = exc.trailing_metadata() or ()
    details: list[Message] = []
    rest: list[tuple[str, str]] = []
    for key, value in trailers:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            details = details_from_status(value)
        else:
            rest += from_grpc_metadata([(key, value)]).items()
    return RpcError(Code(exc.code().value[0]), exc.details() or "", details, metadata=rest)


class GrpcTransport(AsyncClosing):
    """Calls rpckit (or any gRPC) services over a grpc.aio channel.

    ``GrpcTransport("127.0.0.1:50051")`` opens an insecure channel it owns; pass a channel to
    share one. Use ``async with`` or ``close()`` to release an owned channel.
    """

    def __init__(
        self,
        target: str | grpc.aio.Channel,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        if isinstance(target, str):
            options = [
                ("grpc.max_send_message_length", max_message_size),
                ("grpc.max_receive_message_length", max_message_size),
            ]
            self.channel = grpc.aio.insecure_channel(target, options=options)
            self._owned = True
        else:
            self.channel = target
            self._owned = False

    async def close(self) -> None:
        """Close the channel if this transport opened it."""
        if self._owned:
            await self.channel.close()

    aclose = close

    async def unary(self, method: MethodSpec[I, O], request: I, options: CallOptions) -> O:
        """Call a unary method."""
        stub = self.channel.unary_unary(
            method.path,
            request_serializer=_serialize,
            response_deserializer=method.output.FromString,
        )
        call = stub(request, timeout=options.timeout, metadata=grpc_request_metadata(options))
        response: O = await _finish_unary(call, options)
        return response

    async def client_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        options: CallOptions,
    ) -> O:
        """Call a client-streaming method with the given requests."""
        stub = self.channel.stream_unary(
            method.path,
            request_serializer=_serialize,
            response_deserializer=method.output.FromString,
        )
        source = _Requests(requests)
        call = stub(source, timeout=options.timeout, metadata=grpc_request_metadata(options))
        try:
            response: O = await _finish_unary(call, options)
        except asyncio.CancelledError:
            source.raise_failure()
            raise
        return response

    def server_stream(
        self, method: MethodSpec[I, O], request: I, options: CallOptions
    ) -> StreamCall[O]:
        """Call a server-streaming method; iterate the result for the responses."""
        stub = self.channel.unary_stream(
            method.path,
            request_serializer=_serialize,
            response_deserializer=method.output.FromString,
        )
        call = stub(request, timeout=options.timeout, metadata=grpc_request_metadata(options))
        return StreamCall(_responses(call, options))

    def bidi_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        options: CallOptions,
    ) -> StreamCall[O]:
        """Call a bidi method; requests are sent as they come while responses are read."""
        stub = self.channel.stream_stream(
            method.path,
            request_serializer=_serialize,
            response_deserializer=method.output.FromString,
        )
        source = _Requests(requests)
        call = stub(source, timeout=options.timeout, metadata=grpc_request_metadata(options))
        return StreamCall(_responses(call, options, source))


class _Requests:
    """The requests of a streaming call as grpcio reads them, keeping what made them fail:
    grpcio cancels the call when its request iterator raises, and the caller would see a
    bare CancelledError instead of the error (the same one the Connect transport raises)."""

    def __init__(self, requests: AsyncIterable[Any] | Iterable[Any]) -> None:
        self._requests = aiter(as_async_iterable(requests))
        self._failure: Exception | None = None

    def __aiter__(self) -> _Requests:
        return self

    async def __anext__(self) -> Any:
        try:
            return await anext(self._requests)
        except StopAsyncIteration:
            raise
        except Exception as exc:
            self._failure = exc
            raise

    def raise_failure(self) -> None:
        """Raise the requests' own error, if they failed (the task was not cancelled)."""
        task = asyncio.current_task()
        if self._failure is not None and not (task is not None and task.cancelling()):
            raise self._failure from None


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


async def _record(call: Any, options: CallOptions, *, trailers: bool) -> None:
    if options.response is None:
        return
    if not options.response.headers:
        options.response.headers = from_grpc_metadata(await call.initial_metadata())
    if trailers:
        options.response.trailers = _plain(await call.trailing_metadata())


def _plain(pairs: Any) -> Metadata:
    return from_grpc_metadata([(k, v) for k, v in pairs or () if k != STATUS_DETAILS_KEY])


async def _finish_unary(call: Any, options: CallOptions) -> Any:
    try:
        response = await call
    except grpc.aio.AioRpcError as exc:
        if options.response is not None:
            options.response.headers = from_grpc_metadata(exc.initial_metadata())
            options.response.trailers = _plain(exc.trailing_metadata())
        raise _error(exc) from None
    await _record(call, options, trailers=True)
    return response


async def _responses(
    call: Any, options: CallOptions, source: _Requests | None = None
) -> AsyncIterator[Any]:
    try:
        await _record(call, options, trailers=False)
        async for response in call:
            yield response
        await _record(call, options, trailers=True)
    except grpc.aio.AioRpcError as exc:
        if options.response is not None:
            options.response.trailers = _plain(exc.trailing_metadata())
        raise _error(exc) from None
    except asyncio.CancelledError:
        if source is not None:
            source.raise_failure()
        raise
    finally:
        call.cancel()


# --- blocking ------------------------------------------------------------------------------


def _sync_error(exc: Any) -> RpcError:
    """The RpcError a blocking call's ``grpc.RpcError`` (also a ``grpc.Call``) stands for."""
    trailers = exc.trailing_metadata() or ()
    details: list[Message] = []
    rest: list[tuple[str, str]] = []
    for key, value in trailers:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            details = details_from_status(value)
        else:
            rest += from_grpc_metadata([(key, value)]).items()
    return RpcError(Code(exc.code().value[0]), exc.details() or "", details, metadata=rest)


def _sync_record(call: Any, options: CallOptions, *, trailers: bool) -> None:
    if options.response is None:
        return
    if not options.response.headers:
        options.response.headers = from_grpc_metadata(call.initial_metadata() or ())
    if trailers:
        options.response.trailers = _plain(call.trailing_metadata())


def _sync_failed(exc: grpc.RpcError, options: CallOptions) -> RpcError:
    if options.response is not None:
        call: Any = exc
        if not options.response.headers:
            options.response.headers = from_grpc_metadata(call.initial_metadata() or ())
        options.response.trailers = _plain(call.trailing_metadata())
    return _sync_error(exc)


class GrpcTransportSync(Closing):
    """``GrpcTransport`` for blocking clients (``*ClientSync``), over grpcio's blocking
    channel: ``GrpcTransportSync("127.0.0.1:50051")`` opens one it owns (``close()`` or
    ``with``); pass a ``grpc.Channel`` to share one."""

    def __init__(
        self,
        target: str | grpc.Channel,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        if isinstance(target, str):
            options = [
                ("grpc.max_send_message_length", max_message_size),
                ("grpc.max_receive_message_length", max_message_size),
            ]
            self.channel = grpc.insecure_channel(target, options=options)
            self._owned = True
        else:
            self.channel = target
            self._owned = False

    def close(self) -> None:
        """Close the channel if this transport opened it."""
        if self._owned:
            self.channel.close()

    def _stub(self, kind: str, method: MethodSpec[Any, Any]) -> Any:
        return getattr(self.channel, kind)(
            method.path,
            request_serializer=_serialize,
            response_deserializer=method.output.FromString,
        )

    def unary(self, method: MethodSpec[I, O], request: I, options: CallOptions) -> O:
        """Call a unary method."""
        stub = self._stub("unary_unary", method)
        metadata = grpc_request_metadata(options)
        try:
            response, call = stub.with_call(request, timeout=options.timeout, metadata=metadata)
        except grpc.RpcError as exc:
            raise _sync_failed(exc, options) from None
        _sync_record(call, options, trailers=True)
        result: O = response
        return result

    def client_stream(
        self, method: MethodSpec[I, O], requests: Iterable[I], options: CallOptions
    ) -> O:
        """Call a client-streaming method with the given requests."""
        stub = self._stub("stream_unary", method)
        source = _SyncRequests(as_iterable(requests))
        metadata = grpc_request_metadata(options)
        try:
            response, call = stub.with_call(source, timeout=options.timeout, metadata=metadata)
        except grpc.RpcError as exc:
            source.raise_failure()
            raise _sync_failed(exc, options) from None
        _sync_record(call, options, trailers=True)
        result: O = response
        return result

    def server_stream(
        self, method: MethodSpec[I, O], request: I, options: CallOptions
    ) -> StreamCallSync[O]:
        """Call a server-streaming method; iterate the result for the responses."""
        stub = self._stub("unary_stream", method)
        call = stub(request, timeout=options.timeout, metadata=grpc_request_metadata(options))
        return StreamCallSync(_sync_responses(call, options), call.cancel)

    def bidi_stream(
        self, method: MethodSpec[I, O], requests: Iterable[I], options: CallOptions
    ) -> StreamCallSync[O]:
        """Call a bidi method; requests are sent as they come while responses are read."""
        stub = self._stub("stream_stream", method)
        source = _SyncRequests(as_iterable(requests))
        call = stub(source, timeout=options.timeout, metadata=grpc_request_metadata(options))
        return StreamCallSync(_sync_responses(call, options, source), call.cancel)


class _SyncRequests:
    """``_Requests`` for grpcio's blocking channel (which reads them on its own thread)."""

    def __init__(self, requests: Iterable[Any]) -> None:
        self._requests = iter(requests)
        self._failure: Exception | None = None

    def __iter__(self) -> _SyncRequests:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._requests)
        except StopIteration:
            raise
        except Exception as exc:
            self._failure = exc
            raise

    def raise_failure(self) -> None:
        """Raise the requests' own error, if they failed."""
        if self._failure is not None:
            raise self._failure from None


def _sync_responses(
    call: Any, options: CallOptions, source: _SyncRequests | None = None
) -> Iterator[Any]:
    try:
        _sync_record(call, options, trailers=False)
        yield from call
        _sync_record(call, options, trailers=True)
    except grpc.RpcError as exc:
        if source is not None:
            source.raise_failure()
        raise _sync_failed(exc, options) from None
    finally:
        call.cancel()
