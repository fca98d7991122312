"""A raw HTTP/2 gRPC client (h2 over an asyncio socket): to see what a server really sends.

grpcio's client hides the per-message compressed flag and merges header blocks; the tests
that check gRPC wire behaviour (grpc's interop ``server_compressed_*`` cases) read it here.
"""

from __future__ import annotations

import asyncio
import gzip
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

__all__ = ["WireResponse", "grpc_call"]

#: Seconds a call may take before the test fails instead of hanging.
TIMEOUT = 10.0


@dataclass
class WireResponse:
    """What came back on one HTTP/2 stream."""

    headers: dict[str, str] = field(default_factory=dict)
    trailers: dict[str, str] = field(default_factory=dict)
    #: (compressed flag, decompressed payload) per gRPC message.
    messages: list[tuple[int, bytes]] = field(default_factory=list)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">BI", 0, len(payload)) + payload


async def grpc_call(
    address: str,
    path: str,
    requests: list[bytes],
    metadata: Sequence[tuple[str, str]] = (),
) -> WireResponse:
    """Send ``requests`` (serialised messages) to ``path``; read the whole response."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    conn.send_headers(
        stream,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", address),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("grpc-accept-encoding", "gzip,identity"),
            *metadata,
        ],
    )
    conn.send_data(stream, b"".join(_frame(r) for r in requests), end_stream=True)
    writer.write(conn.data_to_send())
    response = WireResponse()
    body = bytearray()
    header_blocks = 0
    try:
        async with asyncio.timeout(TIMEOUT):
            ended = False
            while not ended:
                data = await reader.read(65536)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        header_blocks += 1
                        response.headers = {str(k): str(v) for k, v in event.headers}
                    elif isinstance(event, h2.events.DataReceived):
                        body += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, stream)
                    elif isinstance(event, h2.events.TrailersReceived):
                        response.trailers = {str(k): str(v) for k, v in event.headers}
                    elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                        ended = True
                writer.write(conn.data_to_send())
    finally:
        writer.close()
    if not response.trailers:  # a trailers-only response: one header block, status included
        response.trailers = response.headers
    offset = 0
    while offset + 5 <= len(body):
        flag, length = struct.unpack_from(">BI", body, offset)
        payload = bytes(body[offset + 5 : offset + 5 + length])
        response.messages.append((flag, gzip.decompress(payload) if flag else payload))
        offset += 5 + length
    return response
