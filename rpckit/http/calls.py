"""What the HTTP client transports (Connect, gRPC-Web) share around each call: the
client-side deadline and httpx failures as ``RpcError``, a one-request stream, the refusal
of bidi calls, and decoding a response message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any, TypeVar

import httpx
from google.protobuf.message import Message

from rpckit.encodings import Encoding
from rpckit.errors import Code, RpcError
from rpckit.service import MethodSpec

__all__ = ["CallErrors", "bidi_refused", "bidi_refused_sync", "decode_response", "one_request"]

I = TypeVar("I")  # noqa: E741 - request type
O = TypeVar("O", bound=Message)  # noqa: E741 - response type


class CallErrors:
    """``async with``: the call's deadline (``loop.time()`` seconds, or None), and httpx's
    failures as ``deadline_exceeded`` or ``unavailable``."""

    def __init__(self, deadline: float | None) -> None:
        self._timeout = asyncio.timeout_at(deadline)

    @classmethod
    def after(cls, timeout: float | None) -> CallErrors:
        """The deadline ``timeout`` seconds from now (None: no deadline)."""
        if timeout is None:
            return cls(None)
        return cls(asyncio.get_running_loop().time() + timeout)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError:
            raise RpcError(Code.DEADLINE_EXCEEDED, "deadline exceeded") from None
        if isinstance(exc, httpx.TimeoutException):
            raise RpcError(Code.DEADLINE_EXCEEDED, "deadline exceeded") from None
        if isinstance(exc, httpx.TransportError):
            raise RpcError(Code.UNAVAILABLE, f"connection failed: {exc}") from None
        return False


async def one_request(request: I) -> AsyncIterator[I]:
    """A single request as a request stream."""
    yield request


async def bidi_refused(method: MethodSpec[Any, Any], reason: str) -> AsyncIterator[Any]:
    """A response stream that fails at once: this transport cannot carry a bidi call."""
    raise RpcError(Code.UNIMPLEMENTED, f"{method.name} is a bidi stream: {reason}")
    yield  # pragma: no cover - makes this an async generator


def bidi_refused_sync(method: MethodSpec[Any, Any], reason: str) -> Iterator[Any]:
    """``bidi_refused`` for blocking transports."""
    raise RpcError(Code.UNIMPLEMENTED, f"{method.name} is a bidi stream: {reason}")
    yield  # pragma: no cover - makes this a generator


def decode_response(codec: Encoding, data: bytes, message_type: type[O]) -> O:
    """A response message; a malformed one is the server's fault (``internal``)."""
    try:
        return codec.decode(data, message_type)
    except RpcError as error:
        raise RpcError(Code.INTERNAL, f"malformed response: {error.message}") from None
