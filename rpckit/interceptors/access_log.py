"""The access log: one structured line per call, on the ``rpckit.access`` logger at INFO.

``rpckit serve`` installs it by default (``--log-level warning`` silences it). Each line
is ``key=value`` pairs, and the same fields ride on the record as ``record.rpc`` (a dict)
for JSON formatters::

    method=/pkg.Svc/Get transport=http dialect=connect code=OK duration_ms=1.42
    messages_in=1 bytes_in=12 messages_out=1 bytes_out=30 peer=127.0.0.1:50312
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from rpckit.interceptors import Interceptor, Outcome

if TYPE_CHECKING:
    from rpckit.context import Context

__all__ = ["AccessLog", "access_fields", "format_fields"]

LOGGER_NAME = "rpckit.access"


def access_fields(ctx: Context, outcome: Outcome) -> dict[str, Any]:
    """The fields of one call's access log line, in their order on the line."""
    fields: dict[str, Any] = {
        "method": ctx.method.path,
        "transport": ctx.transport.value,  # plain strings on the record, as before the enums
        "dialect": ctx.dialect.value,
        "code": outcome.code.name,
        "duration_ms": round(outcome.duration * 1000, 2),
        "messages_in": outcome.messages_in,
        "bytes_in": outcome.bytes_in,
        "messages_out": outcome.messages_out,
        "bytes_out": outcome.bytes_out,
        "peer": ctx.peer,
    }
    if outcome.message:
        fields["error"] = outcome.message
    return fields


def format_fields(fields: dict[str, Any]) -> str:
    """``key=value`` pairs; a value with spaces, quotes, ``=`` or control characters is
    written as a JSON string, so that one call is always one parseable line."""
    parts = []
    for key, value in fields.items():
        text = str(value)
        if not text or any(c in text for c in ' "=\\') or not text.isprintable():
            text = json.dumps(text)  # escapes quotes, backslashes and control characters
        parts.append(f"{key}={text}")
    return " ".join(parts)


class AccessLog(Interceptor):
    """Logs every call once it has ended (a cheap no-op while INFO is disabled)."""

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self.logger = logger or logging.getLogger(LOGGER_NAME)
        self.level = level

    def on_end(self, ctx: Context, outcome: Outcome) -> None:
        if not self.logger.isEnabledFor(self.level):
            return
        fields = access_fields(ctx, outcome)
        self.logger.log(self.level, "%s", format_fields(fields), extra={"rpc": fields})
