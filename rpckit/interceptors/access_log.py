"""The access log: one structured line per call, on the ``rpckit.access`` logger at INFO.

``rpckit serve`` installs it by default (``--log-level warning`` silences it). Each line
is ``key=value`` pairs, and the same fields ride on the record as ``record.rpc`` (a dict)
for JSON formatters::

    method=/pkg.Svc/Get transport=http dialect=connect code=OK duration_ms=1.42
    messages_in=1 bytes_in=12 messages_out=1 bytes_out=30 peer=127.0.0.1:50312

The lines are made off the call's path under load: a call that ends within ``FLUSH_DELAY``
seconds of the last write is only noted, and the calls noted are then formatted together
(at most ``FLUSH_DELAY`` later; at once on ``flush()``, which the gRPC server calls when it
stops, and at exit), one ``LogRecord`` each as before, with the call's end as its time, and
handed to the logger's handlers. A plain ``StreamHandler``
(or an open ``FileHandler``) gets the whole batch in one write; any other handler gets
the records one by one, as ``Logger.handle`` would pass them.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import re
import time
import weakref
from typing import TYPE_CHECKING, Any

from rpckit.interceptors import Interceptor, Outcome

if TYPE_CHECKING:
    from rpckit.context import Context

__all__ = ["AccessLog", "access_fields", "format_fields"]

LOGGER_NAME = "rpckit.access"

_UNSAFE = re.compile(r'[ "=\\]')
#: Values seen before (methods, peers, codes...) and how they are written on the line.
_WRITTEN: dict[str, str] = {}
_WRITTEN_MAX = 4096


def access_fields(ctx: Context, outcome: Outcome) -> dict[str, Any]:
    """The fields of one call's access log line, in their order on the line."""
    # plain strings on the record, as before the enums
    return _fields(ctx.method.path, ctx.transport.value, ctx.dialect.value, ctx.peer, outcome)


#: What ``on_end`` notes of a call: method path, transport, dialect, peer, outcome, time.
_Noted = tuple[str, Any, Any, str, Outcome, float]


def _fields(
    method: str, transport: str, dialect: str, peer: str, outcome: Outcome
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "method": method,
        "transport": transport,
        "dialect": dialect,
        "code": outcome.code.name,
        "duration_ms": round(outcome.duration * 1000, 2),
        "messages_in": outcome.messages_in,
        "bytes_in": outcome.bytes_in,
        "messages_out": outcome.messages_out,
        "bytes_out": outcome.bytes_out,
        "peer": peer,
    }
    if outcome.message:
        fields["error"] = outcome.message
    return fields


def _quote(text: str) -> str:
    if not text or not text.isprintable() or _UNSAFE.search(text) is not None:
        return json.dumps(text)  # escapes quotes, backslashes and control characters
    return text


def _written(value: Any) -> str:
    """``value`` as it goes on the line (see ``format_fields``)."""
    kind = type(value)
    if kind is int or kind is float:
        return str(value)  # digits, signs, '.', 'e', inf, nan: never quoted
    text = value if kind is str else str(value)
    found = _WRITTEN.get(text)
    if found is None:
        found = _quote(text)
        if len(text) <= 200:  # short, recurring values (methods, peers); not error texts
            if len(_WRITTEN) >= _WRITTEN_MAX:
                _WRITTEN.clear()
            _WRITTEN[text] = found
    return found


def format_fields(fields: dict[str, Any]) -> str:
    """``key=value`` pairs; a value with spaces, quotes, ``=`` or control characters is
    written as a JSON string, so that one call is always one parseable line."""
    return " ".join([f"{key}={_written(value)}" for key, value in fields.items()])


#: Seconds between two writes at most: the lines of calls that end sooner after a write
#: wait (at most this long) to go out with the next one, in one batch.
FLUSH_DELAY = 0.01
#: Lines that go out at once, however soon after the last write.
FLUSH_SIZE = 1024

_LIVE: weakref.WeakSet[AccessLog] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:  # lines noted after the event loop's last turn (runs before logging's)
    for access_log in list(_LIVE):
        access_log.flush()


class AccessLog(Interceptor):
    """Logs every call once it has ended (a cheap no-op while INFO is disabled)."""

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self.logger = logger or logging.getLogger(LOGGER_NAME)
        self.level = level
        self._pending: list[_Noted] = []
        self._scheduled = False
        self._written_at = 0.0  # time.time() of the last write
        _LIVE.add(self)

    def on_end(self, ctx: Context, outcome: Outcome) -> None:
        scheduled = self._scheduled  # a batch is open: its level is checked at the write
        if not scheduled and not self.logger.isEnabledFor(self.level):
            return
        now = time.time()
        pending = self._pending
        # Plain values, not the context: nothing of the call outlives it (the collector's
        # young generation stays small).
        pending.append((ctx.method.path, ctx.transport, ctx.dialect, ctx.peer, outcome, now))
        if scheduled:
            if len(pending) >= FLUSH_SIZE:
                self.flush()
            return
        wait = self._written_at + FLUSH_DELAY - now
        if wait <= 0:  # nothing written for a while: this line goes out at once
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop here: write it now
            self.flush()
            return
        self._scheduled = True
        loop.call_later(wait, self.flush)

    def flush(self) -> None:
        """Write the lines of the calls noted so far."""
        self._scheduled = False
        pending = self._pending
        if not pending:
            return
        self._pending = []
        self._written_at = time.time()
        logger = self.logger
        if logger.disabled or not logger.isEnabledFor(self.level):
            return
        if not logger.filters and self._write_plain(pending):
            return
        records = self._records(pending)
        if logger.filters:
            records = [r for r in records if logger.filter(r)]
        if records:
            _call_handlers(logger, records)

    def _write_plain(self, pending: list[_Noted]) -> bool:
        """Write the lines without records where every handler the records would reach is
        a plain ``StreamHandler`` whose format only adds what is the same for every line
        (``%(levelname)s %(name)s: %(message)s``, as ``rpckit serve`` logs): each line is
        then that text around the message, exactly as ``Formatter.format`` would give it.
        False (nothing written) where a handler or its format needs the records."""
        handlers = _handlers(self.logger, self.level)
        if not handlers:
            return False
        template: dict[str, Any] | None = None
        frames = []
        for handler in handlers:
            fmt = _plain_format(handler)
            if fmt is None:
                return False
            if template is None:
                template = self._template().__dict__
            before, _, after = (fmt % {**template, "message": _SENTINEL}).partition(_SENTINEL)
            frames.append((handler, before, after + handler.terminator))  # type: ignore[attr-defined]
        lines = [_line(item) for item in pending]
        for handler, before, after in frames:
            text = "".join([before + line + after for line in lines])
            _write_text(handler, text)  # type: ignore[arg-type]
        return True

    def _template(self) -> logging.LogRecord:
        """A real record made now (this thread, this process): what the lines share."""
        return logging.LogRecord(
            self.logger.name, self.level, __file__, 0, "%s", None, None, "on_end"
        )

    def _records(self, pending: list[_Noted]) -> list[logging.LogRecord]:
        logger = self.logger
        level = self.level
        if logging.getLogRecordFactory() is not logging.LogRecord:  # a custom factory: use it
            records = []
            for method, transport, dialect, peer, outcome, _ in pending:
                fields = _fields(method, _value(transport), _value(dialect), peer, outcome)
                records.append(
                    logger.makeRecord(
                        logger.name,
                        level,
                        __file__,
                        0,
                        "%s",
                        (format_fields(fields),),
                        None,
                        "on_end",
                        {"rpc": fields},
                    )
                )
            return records
        # One real record made now (this thread, this process) is the template of them all.
        template_fields = self._template().__dict__
        start = logging._startTime  # type: ignore[attr-defined] # what LogRecord measures relativeCreated from
        new = logging.LogRecord.__new__
        record_type = logging.LogRecord
        records = []
        for item in pending:
            method, transport, dialect, peer, outcome, created = item
            line = _line(item)
            fields = _fields(method, _value(transport), _value(dialect), peer, outcome)
            record = new(record_type)
            values = template_fields.copy()
            record.__dict__ = values
            values["args"] = (line,)
            values["created"] = created
            values["msecs"] = int((created - int(created)) * 1000) + 0.0
            values["relativeCreated"] = (created - start) * 1000
            values["rpc"] = fields
            records.append(record)
        return records


#: The parts of a line that repeat from call to call, by (method, transport, dialect, code,
#: peer): ``method=... transport=... dialect=... code=...`` and `` peer=...``.
_PARTS: dict[tuple[str, Any, Any, Any, str], tuple[str, str]] = {}
_PARTS_MAX = 4096
_VALUES: dict[Any, str] = {}


def _value(member: Any) -> str:
    """``member.value`` of a string enum (``Transport``, ``Dialect``), without enum's
    slow attribute lookup on every call."""
    found = _VALUES.get(member)
    if found is None:
        found = _VALUES[member] = member.value
    return found


def _parts(key: tuple[str, Any, Any, Any, str]) -> tuple[str, str]:
    method, transport, dialect, code, peer = key
    if len(_PARTS) >= _PARTS_MAX:  # many peers: start again rather than grow
        _PARTS.clear()
    found = _PARTS[key] = (
        f"method={_written(method)} transport={_written(_value(transport))}"
        f" dialect={_written(_value(dialect))} code={_written(code.name)}",
        f" peer={_written(peer)}",
    )
    return found


def _line(item: _Noted) -> str:
    """The access line of a call noted by ``on_end``: ``format_fields(access_fields(...))``."""
    method, transport, dialect, peer, outcome, _ = item
    key = (method, transport, dialect, outcome.code, peer)
    parts = _PARTS.get(key)
    if parts is None:
        parts = _parts(key)
    line = (
        f"{parts[0]} duration_ms={round(outcome.duration * 1000, 2)}"
        f" messages_in={outcome.messages_in} bytes_in={outcome.bytes_in}"
        f" messages_out={outcome.messages_out} bytes_out={outcome.bytes_out}{parts[1]}"
    )
    message = outcome.message
    if message:
        line += f" error={_quote(message)}"
    return line


_SENTINEL = "\x00rpckit-access-message\x00"
#: Record attributes that differ from line to line (the rest is the same in a batch).
_PER_RECORD = frozenset(
    ["message", "asctime", "created", "msecs", "relativeCreated", "msg", "args", "rpc"]
)
_KEYS = re.compile(r"%\((\w+)\)")


def _handlers(logger: logging.Logger, level: int) -> list[logging.Handler]:
    """The handlers ``Logger.callHandlers`` would pass a record of ``level`` to."""
    found: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        found.extend(h for h in current.handlers if level >= h.level)
        current = current.parent if current.propagate else None
    return found


def _plain_format(handler: logging.Handler) -> str | None:
    """The %-format of a plain stream handler whose lines differ only by their message."""
    kind = type(handler)
    if kind is not logging.StreamHandler and kind is not logging.FileHandler:
        return None
    if getattr(handler, "stream", None) is None or handler.filters:
        return None
    formatter = handler.formatter or logging._defaultFormatter  # type: ignore[attr-defined]
    style = getattr(formatter, "_style", None)
    if type(formatter) is not logging.Formatter or type(style) is not logging.PercentStyle:
        return None
    fmt: str = style._fmt
    if style._defaults or fmt.count("%(message)s") != 1:  # type: ignore[attr-defined]
        return None
    if any(key in _PER_RECORD for key in _KEYS.findall(fmt.replace("%(message)s", ""))):
        return None
    return fmt


def _write_text(handler: logging.StreamHandler[Any], text: str) -> None:
    try:
        handler.acquire()
        try:
            handler.stream.write(text)
            handler.flush()
        finally:
            handler.release()
    except RecursionError:
        raise
    except Exception:
        handler.handleError(logging.makeLogRecord({"msg": text}))


def _call_handlers(logger: logging.Logger, records: list[logging.LogRecord]) -> None:
    """``Logger.callHandlers`` for a batch of records of one level."""
    level = records[0].levelno
    found = 0
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            found += 1
            if level < handler.level:
                continue
            kind = type(handler)
            stream = getattr(handler, "stream", None)
            if (
                (kind is logging.StreamHandler or kind is logging.FileHandler)
                and stream is not None
                and not handler.filters
            ):
                _write(handler, stream, records)  # type: ignore[arg-type]
            else:
                for record in records:
                    handler.handle(record)
        current = current.parent if current.propagate else None
    if found == 0 and logging.lastResort is not None:
        for record in records:
            if record.levelno >= logging.lastResort.level:
                logging.lastResort.handle(record)


def _write(
    handler: logging.StreamHandler[Any], stream: Any, records: list[logging.LogRecord]
) -> None:
    """``StreamHandler.emit`` for many records: each formatted, then one write and flush."""
    record = records[0]
    try:
        text = handler.terminator.join(_formatted(handler, records)) + handler.terminator
        handler.acquire()
        try:
            stream.write(text)
            handler.flush()
        finally:
            handler.release()
    except RecursionError:
        raise
    except Exception:
        handler.handleError(record)


def _formatted(handler: logging.Handler, records: list[logging.LogRecord]) -> list[str]:
    """``handler.format`` of each record (the access log's: no exception, no stack)."""
    formatter = handler.formatter or logging._defaultFormatter  # type: ignore[attr-defined]
    style = getattr(formatter, "_style", None)
    if (
        type(formatter) is not logging.Formatter
        or type(style) is not logging.PercentStyle
        or style._defaults  # type: ignore[attr-defined]
    ):
        return [handler.format(record) for record in records]
    # What Formatter.format does for a record without exc_info or stack_info, inlined.
    fmt = style._fmt
    uses_time = formatter.usesTime()
    lines = []
    for record in records:
        values = record.__dict__
        values["message"] = record.getMessage()
        if uses_time:
            values["asctime"] = formatter.formatTime(record, formatter.datefmt)
        lines.append(fmt % values)
    return lines
