"""Limits every transport shares, defined once so that gRPC and the HTTP bridge agree."""

from __future__ import annotations

__all__ = ["DEFAULT_GRPC_STREAM_WINDOW", "DEFAULT_MAX_MESSAGE_SIZE"]

#: Bytes one message may have on any transport (requests refused above it, responses too).
DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024

#: Bytes of one gRPC call's request stream a server takes ahead of its handler: the HTTP/2
#: stream window it grants (``rpckit.grpc.GrpcServer``'s ``stream_window``, ``rpckit serve
#: --grpc-window``). A call sends at most about half of it per round trip.
DEFAULT_GRPC_STREAM_WINDOW = 1024 * 1024
