"""Test your services without a server: a client ``Transport`` per dialect, in-process.

``transport_for`` is the one-liner (grpclib's ``testing.ChannelFor`` is the model)::

    from rpckit.testing import transport_for

    async def test_get_dog() -> None:
        async with transport_for([MyService()], dialect="connect") as transport:
            client = StreamsServiceClient(transport)
            assert (await client.get_dog(GetDogRequest(index=1))).name == "Dog 1"

The dialects and what carries them:

- ``"connect"`` and ``"grpc-web"``: the HTTP bridge (``rpckit.http.create_app``) driven
  in-process by ``httpx`` through ``StreamingASGITransport``: no socket, no thread, the
  handler runs on the test's own event loop. Responses stream (a server stream's first
  message arrives before the handler ends; closing a stream early is a client disconnect the
  handler sees) and request bodies stream (a client stream's requests reach the handler as
  they are produced).
- the REST routes (``google.api.http``) have no typed Python client; ``bridge_for`` yields
  an ``InProcessBridge`` whose ``http`` is an ``httpx.AsyncClient`` on the same app, for
  ``http.get("/api/dogs/1")`` and friends.
- ``"grpc"``: grpcio has no in-process channel, so this one starts a real ``grpc.aio`` server
  on a loopback port chosen by the OS (``127.0.0.1:0``) and closes it on exit. Tests that
  use it bind a socket (rpckit's own suite marks them ``loopback``).
- WebSocket is not offered: ``WebSocketTransport`` opens its own socket with the
  ``websockets`` library and has no hook to run over anything else.

Everything here is for tests: ``StreamingASGITransport`` keeps no connection limits and
answers every request with the app in the same process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from rpckit.client import Transport
from rpckit.grpc import GrpcServer, GrpcTransport
from rpckit.http import BridgeOptions, ConnectTransport, GrpcWebTransport, create_app
from rpckit.http.app import Bridge
from rpckit.interceptors import Interceptor
from rpckit.limits import DEFAULT_MAX_MESSAGE_SIZE
from rpckit.service import Service

__all__ = [
    "BASE_URL",
    "DIALECTS",
    "Dialect",
    "InProcessBridge",
    "LoopbackGrpc",
    "StreamingASGITransport",
    "bridge_for",
    "grpc_for",
    "transport_for",
]

#: The dialects ``transport_for`` serves.
Dialect = Literal["connect", "grpc-web", "grpc"]
DIALECTS: tuple[Dialect, ...] = ("connect", "grpc-web", "grpc")
#: The base URL of the in-process bridge (never resolved: no request leaves the process).
BASE_URL = "http://rpckit.test"

ASGIApp = Any  # (scope, receive, send) -> Awaitable[None]; Starlette's alias, kept loose


# --- the streaming ASGI transport for httpx ------------------------------------------------


class _Body:
    """The response body between the app (``send``) and the client (iteration).

    Bounded, like a socket's buffers: an app that sends more than ``limit`` chunks the
    client has not read waits in ``send`` (backpressure), until the client reads or leaves.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: deque[bytes] = deque()
        self.finished = False
        self.error: BaseException | None = None
        self.changed = asyncio.Event()
        self.left = asyncio.Event()  # the client closed the response

    async def put(self, chunk: bytes) -> None:
        while len(self.chunks) >= self.limit and not self.left.is_set():
            self.changed.clear()
            await self.changed.wait()
        if self.left.is_set():
            return  # nobody reads any more: dropped, as a server drops writes to a gone peer
        if chunk:
            self.chunks.append(chunk)
        self._signal()

    def finish(self, error: BaseException | None = None) -> None:
        if not self.finished:
            self.finished, self.error = True, error
            self._signal()

    async def get(self) -> bytes | None:
        """The next chunk; None at the end. Raises if the app failed mid-body."""
        while not self.chunks and not self.finished:
            self.changed.clear()
            await self.changed.wait()
        if self.chunks:
            chunk = self.chunks.popleft()
            self._signal()  # room for the app's next chunk
            return chunk
        if self.error is not None:
            raise httpx.RemoteProtocolError(
                f"the app failed after the response started: {self.error!r}"
            ) from self.error
        return None

    def leave(self) -> None:
        self.left.set()
        self._signal()

    def _signal(self) -> None:
        self.changed.set()


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, body: _Body, call: _AppCall) -> None:
        self._body = body
        self._call = call

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self._body.get()) is not None:
            yield chunk

    async def aclose(self) -> None:
        await self._call.close()


class _AppCall:
    """One request through the app: its task, its receive/send, and its disconnect."""

    def __init__(
        self, app: ASGIApp, scope: dict[str, Any], request: httpx.Request, limit: int
    ) -> None:
        self.app = app
        self.scope = scope
        self.request_body = request.stream.__aiter__()  # type: ignore[union-attr]
        self.request_complete = False
        self.started: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = (
            asyncio.get_running_loop().create_future()
        )
        self.body = _Body(limit)
        self.disconnected = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            await self.app(self.scope, self._receive, self._send)
        except asyncio.CancelledError:
            self.body.finish(ConnectionResetError("the call was cancelled"))
            if not self.started.done():
                self.started.cancel()
            raise
        except BaseException as exc:
            self.body.finish(exc)
            if not self.started.done():
                self.started.set_exception(exc)
            return
        if not self.started.done():
            self.started.set_exception(RuntimeError("the app returned without a response"))
        self.body.finish()

    async def _receive(self) -> dict[str, Any]:
        if self.disconnected.is_set():
            return {"type": "http.disconnect"}
        if self.request_complete:
            await self.disconnected.wait()
            return {"type": "http.disconnect"}
        chunk = asyncio.ensure_future(anext(self.request_body, None))
        gone = asyncio.ensure_future(self.disconnected.wait())
        try:
            await asyncio.wait([chunk, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not chunk.done():
                chunk.cancel()
                with contextlib.suppress(BaseException):
                    await chunk
        if not chunk.done() or chunk.cancelled():
            return {"type": "http.disconnect"}
        data = chunk.result()
        if data is None:
            self.request_complete = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": bytes(data), "more_body": True}

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started.done():
                raise RuntimeError("http.response.start sent twice")
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            self.started.set_result((int(message["status"]), headers))
        elif kind == "http.response.body":
            if not self.started.done():
                raise RuntimeError("http.response.body before http.response.start")
            await self.body.put(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                self.body.finish()

    async def close(self) -> None:
        """The client is done with the response: a disconnect if the app still runs."""
        self.disconnected.set()
        self.body.leave()
        if self.task is not None and not self.task.done():
            # The app sees http.disconnect (rpckit's bridge cancels the handler on it); a
            # bounded wait, then the task is cancelled, as a server would on shutdown.
            done, _ = await asyncio.wait([self.task], timeout=5)
            if not done:
                self.task.cancel()
        if self.task is not None:
            with contextlib.suppress(BaseException):
                await self.task


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """An ``httpx`` transport that calls an ASGI app in-process and streams both ways.

    ``httpx.ASGITransport`` (0.28) runs the app to completion before it returns the
    response, so a server stream arrives all at once and an endless one never does. Here the
    response is returned at ``http.response.start``, body chunks arrive as the app sends them
    (bounded by ``buffer`` chunks: an app that outruns its reader waits), the request body is
    handed to ``receive()`` as the client produces it, and closing the response early
    (leaving ``async with client.stream(...)``) is a client disconnect: ``receive()``
    answers ``http.disconnect``. An exception the app raises before responding is raised to
    the caller; after, the body ends with ``httpx.RemoteProtocolError`` (a cut connection).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        client: tuple[str, int] = ("127.0.0.1", 50000),
        root_path: str = "",
        buffer: int = 16,
    ) -> None:
        self.app = app
        self.client = client
        self.root_path = root_path
        self.buffer = buffer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?", 1)[0],
            "query_string": url.query,
            "root_path": self.root_path,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "server": (url.host, port),
            "client": self.client,
            "extensions": {},
        }
        call = _AppCall(self.app, scope, request, self.buffer)
        call.start()
        try:
            status, headers = await asyncio.shield(call.started)
        except BaseException:
            await call.close()
            raise
        return httpx.Response(
            status, headers=headers, stream=_ResponseStream(call.body, call), request=request
        )


# --- the bridge in-process -----------------------------------------------------------------


@dataclass
class InProcessBridge:
    """The HTTP bridge for ``services``, reachable only from this process.

    ``app`` is the bridge itself (``app.lifecycle.grace_over()`` ends open calls with
    ``unavailable``, as a server's drain would);
    ``http`` an ``httpx.AsyncClient`` on it (base URL ``BASE_URL``) for the REST routes and
    raw requests; ``transport(dialect)`` a typed-client transport sharing that client.
    """

    app: Bridge
    http: httpx.AsyncClient

    def transport(
        self, dialect: Literal["connect", "grpc-web"] = "connect", *, encoding: str = "proto"
    ) -> Transport:
        """A Connect or gRPC-Web transport on the in-process bridge (it shares ``http``:
        nothing to close)."""
        size = self.app.options.max_message_size
        if dialect == "connect":
            return ConnectTransport(
                BASE_URL, client=self.http, encoding=encoding, max_message_size=size
            )
        if dialect == "grpc-web":
            return GrpcWebTransport(
                BASE_URL, client=self.http, encoding=encoding, max_message_size=size
            )
        raise ValueError(f"the bridge in-process speaks connect and grpc-web, not {dialect!r}")


@asynccontextmanager
async def bridge_for(
    services: Sequence[Service],
    *,
    interceptors: Sequence[Interceptor] = (),
    options: BridgeOptions | None = None,
    **app_options: Any,
) -> AsyncIterator[InProcessBridge]:
    """Serve ``services`` on the HTTP bridge in-process; yields an ``InProcessBridge``.

    ``options`` are the bridge's wire settings (``BridgeOptions``: limits, encodings...),
    ``app_options`` go to ``rpckit.http.create_app`` as they are (``cors``, ``static``). No
    socket is opened; the handlers run on the running event loop.
    """
    app = create_app(list(services), options=options, interceptors=interceptors, **app_options)
    app.lifecycle.serving_on(asyncio.get_running_loop())
    transport = StreamingASGITransport(app)
    async with httpx.AsyncClient(
        transport=transport, base_url=BASE_URL, timeout=httpx.Timeout(None)
    ) as http:
        yield InProcessBridge(app, http)


# --- gRPC on loopback ----------------------------------------------------------------------


@dataclass
class LoopbackGrpc:
    """rpckit's gRPC server for ``services`` on a loopback port: ``address`` to dial,
    ``server`` itself (``server.runner.drain.set()`` ends open calls as a drain would)."""

    server: GrpcServer
    address: str

    def transport(self) -> GrpcTransport:
        """A new gRPC transport to the server (close it, or use ``async with``)."""
        return GrpcTransport(self.address, max_message_size=self.server.max_message_size)


@asynccontextmanager
async def grpc_for(
    services: Sequence[Service],
    *,
    interceptors: Sequence[Interceptor] = (),
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> AsyncIterator[LoopbackGrpc]:
    """Serve ``services`` with rpckit's gRPC server on ``127.0.0.1:0``.

    Not in-process: grpcio has no in-process channel, so this binds a real loopback socket
    (a free port the OS picks) and stops the server, without grace, on exit.
    """
    server = GrpcServer(
        list(services), max_message_size=max_message_size, interceptors=interceptors
    )
    port = await server.start("127.0.0.1:0")
    try:
        yield LoopbackGrpc(server, f"127.0.0.1:{port}")
    finally:
        await server.stop(0)


# --- one transport per dialect -------------------------------------------------------------


@asynccontextmanager
async def transport_for(
    services: Sequence[Service],
    dialect: Dialect = "connect",
    *,
    interceptors: Sequence[Interceptor] = (),
    encoding: str = "proto",
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> AsyncIterator[Transport]:
    """A client ``Transport`` to ``services`` over ``dialect``, for the ``async with`` block.

    ``"connect"`` and ``"grpc-web"`` run the HTTP bridge in-process (``bridge_for``);
    ``"grpc"`` serves on a loopback port (``grpc_for``: grpcio has no in-process channel).
    ``interceptors`` run around every call on the server side; ``encoding`` picks the codec
    of the HTTP dialects (gRPC is always protobuf).
    """
    if dialect == "grpc":
        async with (
            grpc_for(
                services, interceptors=interceptors, max_message_size=max_message_size
            ) as served,
            served.transport() as transport,
        ):
            yield transport
        return
    if dialect not in ("connect", "grpc-web"):
        raise ValueError(f"unknown dialect {dialect!r}; known: {', '.join(DIALECTS)}")
    options = BridgeOptions(max_message_size=max_message_size)
    async with bridge_for(services, interceptors=interceptors, options=options) as bridge:
        yield bridge.transport(dialect, encoding=encoding)
