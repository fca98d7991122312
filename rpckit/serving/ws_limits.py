"""WebSocket memory bounds the HTTP servers do not keep by themselves (Hardening 2, items 3-5).

uvicorn (its sans-I/O ``websockets`` protocol, what ``ws="auto"`` picks) is run with
``BoundedWebSocketProtocol``, which changes three things:

- **pongs**: uvicorn writes a pong for every ping with no flow control, so a client that sends
  pings and never reads grows the transport's write buffer without end. Once the buffer holds
  more than ``PONG_BACKLOG`` bytes after a ping, the protocol stops reading the socket until
  the transport drains (``resume_writing``): the client's own TCP window then stops it;
- **fragments**: uvicorn keeps a message's fragments as a list of ``bytes`` objects (70 to 130
  bytes of memory per 1-byte fragment); they are appended to one ``bytearray`` instead, so a
  message costs its size, which ``ws_max_size`` bounds;
- **invalid UTF-8** in a text message is closed with 1007 (uvicorn logs a traceback);
- a **denial response** (``websocket.http.response``, the bridge's 404 for a path without a
  WebSocket endpoint) completes the handshake (uvicorn logs an error after it).

granian (tungstenite in Rust) offers no WebSocket settings: its reassembly already costs a
message's bytes, not a fixed overhead per fragment, but its pong backlog is unbounded too. For
granian ``SocketWatch`` reads the connection's TCP counters (``TCP_INFO``) and shuts the socket
down when the client has sent more than ``SENT_UNREAD`` bytes while reading none of ours.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import struct
import termios
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame

__all__ = ["PONG_BACKLOG", "BoundedWebSocketProtocol", "SocketWatch", "ws_max_size"]

log = logging.getLogger("rpckit.http")

#: Bytes of unsent output past which a connection's pings stop being read (uvicorn) or the
#: connection is ended (granian).
PONG_BACKLOG = 1024 * 1024
#: Room above ``--max-message-size`` for a message a little too large to be refused by the
#: bridge itself (``resource_exhausted`` in an ``end`` frame, close 1009) rather than by the
#: server (a bare close 1009); control frames are at most 64 KiB.
FRAME_ALLOWANCE = 64 * 1024
#: Close code for a text message that is not UTF-8.
CLOSE_INVALID_DATA = 1007


def ws_max_size(max_message_size: int) -> int:
    """The largest WebSocket message the server reassembles for a bridge with this limit."""
    return max_message_size + FRAME_ALLOWANCE


class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with its pong backlog and fragment memory bounded
    and invalid UTF-8 closed quietly with 1007 (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Reading stopped because pongs filled the write buffer.
        self.held = False
        #: The message being reassembled from fragments.
        self.assembled = bytearray()

    # -- pongs -----------------------------------------------------------------------------

    def handle_ping(self) -> None:
        super().handle_ping()
        if self.transport.get_write_buffer_size() > PONG_BACKLOG:
            self.held = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.held:
            self.held = False
            if not self.read_paused and not self.transport.is_closing():
                self.transport.resume_reading()

    async def receive(self) -> Any:
        message = await self.queue.get()
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            if not self.held:
                self.transport.resume_reading()
        return message

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            # A denial response completes the handshake (uvicorn would log that it did not).
            self.handshake_complete = True

    # -- fragments and UTF-8 -----------------------------------------------------------------

    def handle_text(self, event: Frame) -> None:
        self.curr_msg_data_type = "text"
        self._first(event)

    def handle_bytes(self, event: Frame) -> None:
        self.curr_msg_data_type = "bytes"
        self._first(event)

    def _first(self, event: Frame) -> None:
        self.assembled = bytearray()
        if event.fin:
            self._deliver(bytes(event.data))
        else:
            self.assembled += event.data

    def handle_cont(self, event: Frame) -> None:
        self.assembled += event.data
        if event.fin:
            data = bytes(self.assembled)
            self.assembled = bytearray()
            self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        if self.close_sent:
            return  # past ``websocket.close``: only the peer's close reply matters
        message: dict[str, Any]
        if self.curr_msg_data_type == "text":
            try:
                message = {"type": "websocket.receive", "text": data.decode()}
            except UnicodeDecodeError:
                self.conn.send_close(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message")
                self.handle_parser_exception()
                return
        else:
            message = {"type": "websocket.receive", "bytes": data}
        self.queue.put_nowait(message)  # type: ignore[arg-type]
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()


# struct tcp_info (linux/tcp.h): tcpi_bytes_acked and tcpi_bytes_received, both __u64.
_TCP_INFO_ACKED = 120
_TCP_INFO_RECEIVED = 128
_TCP_INFO_SIZE = 136
#: Bytes a granian client may send while it reads none of ours (pongs are the size of pings).
SENT_UNREAD = 256 * 1024
#: Seconds between two looks at the watched sockets' counters.
WATCH_PERIOD = 0.02


def _find_socket(client: tuple[str, int], server: tuple[str, int]) -> socket.socket | None:
    """A duplicate of this process's TCP socket from ``server`` to ``client``, or None."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for name in names:
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            family = socket.AF_INET6 if ":" in client[0] else socket.AF_INET
            sock = socket.fromfd(int(name), family, socket.SOCK_STREAM)
        except OSError:
            continue
        try:
            if sock.getpeername()[:2] == client and sock.getsockname()[:2] == server:
                return sock
        except OSError:
            pass
        sock.close()
    return None


def _counters(sock: socket.socket) -> tuple[int, int, int]:
    """Bytes the client acknowledged, bytes it sent, bytes of ours it has not acknowledged."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    acked: int = struct.unpack_from("=Q", info, _TCP_INFO_ACKED)[0]
    received: int = struct.unpack_from("=Q", info, _TCP_INFO_RECEIVED)[0]
    queued = struct.unpack("=i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    return acked, received, int(queued)


class _Watched:
    __slots__ = ("acked", "client", "mark", "sock")

    def __init__(self, sock: socket.socket, client: Any) -> None:
        self.sock = sock
        self.client = client
        self.acked, self.mark, _ = _counters(sock)

    def check(self) -> bool:
        """Whether the client is within bounds (False: the socket has been shut down)."""
        acked, received, queued = _counters(self.sock)
        if acked != self.acked or queued == 0:  # it reads, or nothing of ours waits
            self.acked, self.mark = acked, received
            return True
        if received - self.mark <= SENT_UNREAD:
            return True
        log.warning("WebSocket from %s:%s sends without reading: connection closed", *self.client)
        self.sock.shutdown(socket.SHUT_RDWR)
        return False


class _Sweeper:
    """One task per event loop looks at every watched socket each ``WATCH_PERIOD``."""

    def __init__(self) -> None:
        self.watched: set[_Watched] = set()
        self.task: asyncio.Task[None] | None = None

    def add(self, watched: _Watched) -> None:
        self.watched.add(watched)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while self.watched:
            await asyncio.sleep(WATCH_PERIOD)
            for watched in list(self.watched):
                try:
                    if not watched.check():
                        self.watched.discard(watched)
                except OSError:
                    self.watched.discard(watched)


_sweeper = _Sweeper()


class SocketWatch:
    """Ends a granian WebSocket whose client sends ``SENT_UNREAD`` bytes while the server has
    output waiting and the client acknowledges none of it (it does not read): the pongs
    granian owes it would pile up in user space otherwise.

    Linux only (``TCP_INFO``); elsewhere, or when the socket cannot be found, nothing is
    watched. Finding the socket walks this process's descriptors once per WebSocket; one
    task per process then reads two counters of every watched socket each ``WATCH_PERIOD``.
    The duplicate descriptor is closed as soon as the call ends (it keeps the connection
    open while it exists).
    """

    def __init__(self, scope: Any) -> None:
        self.scope = scope
        self._watched: _Watched | None = None

    def start(self) -> None:
        client, server = self.scope.get("client"), self.scope.get("server")
        if not hasattr(socket, "TCP_INFO") or not client or not server:
            return
        sock = _find_socket((client[0], int(client[1])), (server[0], int(server[1])))
        if sock is None:
            return
        try:
            self._watched = _Watched(sock, tuple(client[:2]))
        except OSError:
            sock.close()
            return
        _sweeper.add(self._watched)

    async def stop(self) -> None:
        if self._watched is not None:
            _sweeper.watched.discard(self._watched)
            self._watched.sock.close()
            self._watched = None
