"""How a server-streaming method is made durable: ``@durable(...)`` on its handler, read when
the service is bound (``Service.bind``), and the per-method settings it carries."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rpckit.durable.log import Retention

__all__ = [
    "CANCEL_HEADER",
    "EARLIEST_HEADER",
    "FINAL_HEADER",
    "OFFSET_HEADER",
    "STREAM_HEADER",
    "Durability",
    "durability_of",
    "durable",
    "valid_stream_id",
]

#: Request and response metadata (HTTP headers on every HTTP dialect) naming a durable stream.
STREAM_HEADER = "rpckit-stream-id"
#: How many items the client already has (request: where to resume; response: where this
#: response starts). Item ``k`` (from 0) of a stream is followed by offset ``k + 1``.
OFFSET_HEADER = "rpckit-stream-offset"
#: Request metadata: cancel the named stream (then read it to its ``cancelled`` end).
CANCEL_HEADER = "rpckit-stream-cancel"
#: Trailer (and header) of an ``out_of_range`` refusal: the earliest offset still retained.
EARLIEST_HEADER = "rpckit-stream-earliest"

#: Trailer of an error that ends a durable stream for good (its end record, producer lost,
#: an expired offset, an unknown stream): resuming would give the same answer.
FINAL_HEADER = "rpckit-stream-final"

_STREAM_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Durability:
    """A durable method's settings.

    ``retention``: how long a stream is kept after its last append and how many items at
    most; ``lease_seconds``: how long a producer that stopped renewing (its instance died)
    keeps its stream before readers get ``unavailable``; ``detach``: the handler goes on when
    the client that started it leaves (False cancels it then, as a plain stream would).
    """

    retention: Retention = field(default_factory=Retention)
    lease_seconds: float = 10.0
    detach: bool = True

    def __post_init__(self) -> None:
        if self.lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if self.retention.ttl <= 0 or self.retention.max_records <= 0:
            raise ValueError("retention needs a positive ttl and max_records")


def durable(
    *,
    ttl: float = 3600.0,
    max_items: int = 100_000,
    lease_seconds: float = 10.0,
    detach: bool = True,
) -> Callable[[F], F]:
    """Mark a server-streaming handler durable: produced once into the stream log and read by
    every caller from any instance, from any offset (see the how-to "LLM streaming that
    survives reloads and deploys")."""
    settings = Durability(Retention(ttl, max_items), lease_seconds, detach)

    def mark(handler: F) -> F:
        handler.__rpckit_durable__ = settings  # type: ignore[attr-defined]
        return handler

    return mark


def durability_of(handler: Callable[..., Any]) -> Durability | None:
    """The settings ``@durable`` put on ``handler`` (a function or a bound method), if any."""
    found = getattr(handler, "__rpckit_durable__", None)
    return found if isinstance(found, Durability) else None


def valid_stream_id(value: str) -> bool:
    """Stream ids are 1-128 characters of ``[A-Za-z0-9_-]`` (the server makes 32 hex)."""
    return _STREAM_ID.fullmatch(value) is not None
