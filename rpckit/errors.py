"""Status codes and the one exception handlers raise to fail a call.

The 16 gRPC codes are the shared vocabulary of every transport: gRPC sends them as
``grpc-status``, the HTTP bridge as Connect code names and HTTP statuses.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from google.protobuf.message import Message

__all__ = ["Code", "RpcError"]


class Code(enum.IntEnum):
    """The gRPC status codes, with their Connect names and HTTP statuses."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @property
    def connect_name(self) -> str:
        """The code's name in the Connect protocol (``not_found``, ``canceled``...)."""
        return "canceled" if self is Code.CANCELLED else self.name.lower()

    @property
    def http_status(self) -> int:
        """The HTTP status the Connect protocol gives this code."""
        return _HTTP_STATUS[self]

    @classmethod
    def from_connect_name(cls, name: str) -> Code:
        """The code for a Connect code name; unknown names give ``UNKNOWN``."""
        return _BY_CONNECT_NAME.get(name, Code.UNKNOWN)

    @classmethod
    def from_http_status(cls, status: int) -> Code:
        """The code a Connect client infers from an HTTP status without a code in the body."""
        return _FROM_HTTP.get(status, Code.UNKNOWN)


_HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}
_BY_CONNECT_NAME: dict[str, Code] = {code.connect_name: code for code in Code}
# Connect's table for statuses that arrive without a Connect error body.
_FROM_HTTP: dict[int, Code] = {
    400: Code.INTERNAL,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.UNIMPLEMENTED,
    429: Code.UNAVAILABLE,
    502: Code.UNAVAILABLE,
    503: Code.UNAVAILABLE,
    504: Code.UNAVAILABLE,
}


class RpcError(Exception):
    """A call failed with a status code, a one-line message and optional typed details.

    Handlers raise it to fail a call with a chosen code; clients of every transport
    raise it when the server answers with an error.
    """

    def __init__(
        self,
        code: Code,
        message: str = "",
        details: Sequence[Message] = (),
        *,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(f"{code.connect_name}: {message}" if message else code.connect_name)
        self.code = code
        self.message = message
        self.details: list[Message] = list(details)
        self.metadata: list[tuple[str, str]] = list(metadata)

    def __repr__(self) -> str:
        return f"RpcError({self.code.name}, {self.message!r})"
