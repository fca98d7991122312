"""Status codes and the one exception handlers raise to fail a call.

The 16 gRPC codes are the shared vocabulary of every transport: gRPC sends them as
``grpc-status``, the HTTP bridge as Connect code names and HTTP statuses. A number from the
wire that is none of them is kept (``Code(17)``) and means ``unknown``, as the gRPC spec says.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from google.protobuf.message import Message

__all__ = ["Code", "RpcError", "message_too_large"]


class Code(enum.IntEnum):
    """The gRPC status codes, with their Connect names and HTTP statuses.

    ``Code(n)`` for a number outside the table gives a code that keeps ``n`` (``int``,
    ``value``, ``name`` ``CODE_<n>``) but behaves as ``UNKNOWN``: its Connect name is
    ``unknown`` and its HTTP status 500. Such codes are not members (``list(Code)`` and
    ``len(Code)`` hold the 17 known ones) and are not cached, so a peer cannot grow a table.
    """

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

    @classmethod
    def _missing_(cls, value: object) -> Code | None:
        """A status number outside the table: kept as a pseudo-code that means ``unknown``."""
        if type(value) is not int or not _MIN_CODE <= value <= _MAX_CODE:
            return None
        pseudo = int.__new__(cls, value)
        pseudo._name_ = f"CODE_{value}"
        pseudo._value_ = value
        return pseudo

    @property
    def known(self) -> bool:
        """Whether this is one of the 17 codes of the gRPC spec (not a number from the wire)."""
        return self._name_ in Code.__members__

    @property
    def connect_name(self) -> str:
        """The code's name in the Connect protocol (``not_found``, ``canceled``...)."""
        if not self.known:
            return "unknown"
        return "canceled" if self is Code.CANCELLED else self.name.lower()

    @property
    def http_status(self) -> int:
        """The HTTP status the Connect protocol gives this code (500 for unknown numbers)."""
        return _HTTP_STATUS.get(self, 500)

    @classmethod
    def from_connect_name(cls, name: str) -> Code:
        """The code for a Connect code name; unknown names give ``UNKNOWN``."""
        return _BY_CONNECT_NAME.get(name, Code.UNKNOWN)

    @classmethod
    def from_http_status(cls, status: int) -> Code:
        """The code a Connect client infers from an HTTP status without a code in the body."""
        return _FROM_HTTP.get(status, Code.UNKNOWN)


# grpc-status and google.rpc.Status.code are 32-bit: anything else is not a status number.
_MIN_CODE, _MAX_CODE = -(2**31), 2**32 - 1
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


def message_too_large(limit: int) -> RpcError:
    """The error for a request message over the size limit: one text on every transport."""
    return RpcError(
        Code.RESOURCE_EXHAUSTED, f"request message is larger than the limit of {limit} bytes"
    )
