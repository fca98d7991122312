"""Limits every transport shares, defined once so that gRPC and the HTTP bridge agree."""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE"]

#: Bytes one message may have on any transport (requests refused above it, responses too).
DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024
