"""The adapter half every bridge dialect shares, written once: from a request's ``Head`` (a
dialect's head step, no I/O) to the call runner.

``HttpCall`` builds the call's ``Context``, sends a refusal through the runner (so that
interceptors, the access log and metrics see a refused request like any other call), runs
the call with a disconnect watch that starts once the request is read, reads exactly one
request where the method takes one, and splits an enveloped body (Connect, gRPC-Web) into
decoded messages. Each dialect keeps its own wire: how it words a refusal, an answer, an end.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from rpckit.call import CallRunner, Request, Responder
from rpckit.context import Context
from rpckit.encodings import Encoding
from rpckit.errors import Code, RpcError
from rpckit.http.asgi import (
    DisconnectWatch,
    Receive,
    Scope,
    Send,
    body_chunks,
    read_body,
    send_error,
)
from rpckit.http.wire import FLAG_COMPRESSED, ONE_REQUEST, EnvelopeReader, Head, Refusal
from rpckit.service import MethodKind, MethodSpec

__all__ = ["HttpCall", "call_context", "checked_size", "unknown_method"]

Handler = Callable[..., Any]
#: ``/<package>.<Service>/<Method>``: proto names, a package required (so that no plain
#: route such as ``/api/files`` looks like a method), bounded in length.
_METHOD_PATH = re.compile(
    r"/((?:[A-Za-z_][A-Za-z0-9_]*\.)+[A-Za-z_][A-Za-z0-9_]*)/([A-Za-z_][A-Za-z0-9_]*)"
)
_MAX_METHOD_PATH = 256


def unknown_method(path: str) -> MethodSpec[Any, Any] | None:
    """A stand-in MethodSpec for a path shaped like a method that the bridge does not serve
    (a stale client, a wrong package), so that its refusal is recorded under the name the
    client asked for; None for any other path."""
    if len(path) > _MAX_METHOD_PATH:
        return None
    match = _METHOD_PATH.fullmatch(path)
    if match is None:
        return None
    return MethodSpec(match[1], match[2], "", MethodKind.UNARY, Empty, Empty)


def call_context(
    method: MethodSpec[Any, Any],
    scope: Scope,
    head: Head,
    dialect: str,
    transport: str = "http",
) -> Context:
    """The handler's Context for a request on the bridge: its metadata, peer, deadline (from
    the head's timeout, counted from now), request compression and, over HTTP, the raw query
    (where an interceptor may find credentials)."""
    client = scope.get("client")
    timeout = head.timeout
    return Context(
        method,
        transport=transport,
        dialect=dialect,
        request_headers=head.metadata,
        peer=f"{client[0]}:{client[1]}" if client else "",
        deadline=None if timeout is None else time.monotonic() + timeout,
        request_compression=head.compression_name,
        query=scope.get("query_string", b"") if transport == "http" else b"",
    )


def checked_size(data: bytes, limit: int) -> bytes:
    """An encoded response message, refused (``resource_exhausted``) over the size limit:
    every writer of every dialect applies it, to unary answers as to stream messages."""
    if len(data) > limit:
        raise RpcError(
            Code.RESOURCE_EXHAUSTED,
            f"response message of {len(data)} bytes is larger than the limit",
        )
    return data


class HttpCall:
    """One request to one method on the bridge, from its head to its end."""

    __slots__ = ("ctx", "handler", "receive", "runner", "send", "watch")

    def __init__(
        self,
        runner: CallRunner,
        method: MethodSpec[Any, Any],
        handler: Handler,
        scope: Scope,
        receive: Receive,
        send: Send,
        head: Head,
        dialect: str,
    ) -> None:
        self.runner = runner
        self.handler = handler
        self.receive = receive
        self.send = send
        self.ctx = call_context(method, scope, head, dialect)
        self.watch: DisconnectWatch | None = None

    async def refuse(
        self, error: RpcError, answer: Callable[[RpcError], Awaitable[None]] | None = None
    ) -> None:
        """End the request with ``error`` before its handler, through the runner (which
        records it like any call). A ``Refusal`` with an HTTP status is answered here with
        that status and a JSON error; anything else by ``answer``, the dialect's wording."""
        if answer is None or (isinstance(error, Refusal) and error.status is not None):
            answer = self._refusal
        await self.runner.refuse(self.ctx, error, answer)

    async def _refusal(self, error: RpcError) -> None:
        status = error.status if isinstance(error, Refusal) else None
        headers = error.headers if isinstance(error, Refusal) else []
        await send_error(self.send, status or error.code.http_status, error, headers)

    async def run(
        self, request: Request, responder: Responder, *, watch: bool = True, read: bool = False
    ) -> None:
        """Run the call. ``watch``: notice the client leaving once the request is read (the
        request calls ``read()`` then, or ``read`` says it is read already: nothing to read
        but the URL); without it, reading the body notices (a client stream)."""
        runner = self.runner
        if not watch:
            await runner.run(self.ctx, self.handler, request, responder)
            return
        self.watch = watcher = DisconnectWatch(self.receive, self.ctx, runner.current_task())
        if read:
            watcher.start()
        try:
            await runner.run(self.ctx, self.handler, request, responder, task=watcher.target)
        finally:
            watcher.stop()

    async def run_messages(self, requests: AsyncIterator[Any], responder: Responder) -> None:
        """Run a call whose request body is a stream of messages (Connect streams, gRPC-Web),
        by the method's shape: a client stream notices the client leaving by reading; a
        bidi stream is watched once its body has ended (``messages`` starts the watch); a
        unary or server-streaming call takes exactly one message (``one``)."""
        kind = self.ctx.method.kind
        if kind is MethodKind.CLIENT_STREAM:
            await self.run(requests, responder, watch=False)
        elif kind is MethodKind.BIDI_STREAM:
            await self.run(requests, responder)
        else:
            await self.run(partial(self.one, requests), responder)

    def read(self) -> None:
        """The request has been read whole: from now on only a disconnect can arrive."""
        if self.watch is not None:
            self.watch.start()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The request body as it arrives, counted into the call's ``bytes_in``."""
        stats = self.ctx.stats
        async for chunk in body_chunks(self.receive):
            stats.bytes_in += len(chunk)
            yield chunk

    async def body(self, limit: int) -> bytes:
        """The whole request body (at most ``limit`` bytes), counted; the watch starts."""
        body = await read_body(self.receive, limit)
        self.ctx.stats.bytes_in += len(body)
        self.read()
        return body

    async def one(self, requests: AsyncIterator[Message]) -> Message:
        """The one request of a unary or server-streaming call sent as a stream of messages:
        ``invalid_argument`` with one text on every dialect for none or more than one."""
        request = await anext(requests, None)
        if request is None or await anext(requests, None) is not None:
            raise RpcError(Code.INVALID_ARGUMENT, ONE_REQUEST)
        self.read()
        return request

    async def messages(
        self,
        chunks: AsyncIterator[bytes],
        codec: Encoding,
        head: Head,
        limit: int,
        *,
        final_flag: int,
        final_error: str,
        encoding_header: str,
    ) -> AsyncGenerator[Any, None]:
        """The decoded messages of an enveloped request body (Connect streams, gRPC-Web).

        ``final_flag`` ends a response only: in a request it is ``final_error``. A compressed
        message needs the compression the head named (``encoding_header``). A client
        stream's messages are counted here; a single request is counted by the runner.
        Once the body has ended, the disconnect watch starts (where the call has one).
        """
        reader = EnvelopeReader(limit)
        compression = head.compression
        message_type = self.ctx.method.input
        stats = self.ctx.stats
        count = 1 if self.ctx.method.kind.client_streams else 0
        async for chunk in chunks:
            for flags, data in reader.feed(chunk):
                if flags & final_flag:
                    raise RpcError(Code.INVALID_ARGUMENT, final_error)
                if flags & FLAG_COMPRESSED:
                    if compression is None:
                        raise RpcError(
                            Code.INVALID_ARGUMENT, f"compressed message without {encoding_header}"
                        )
                    data = compression.decompress(data, limit)
                stats.messages_in += count
                yield codec.decode(data, message_type)
        reader.close()
        self.read()  # the body has ended: a bidi call's answers may go on, watched
