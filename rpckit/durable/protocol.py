"""The Durable Streams protocol's rules (ElectricSQL, PROTOCOL.md 1.0), free of I/O: header
names, the parsers for offsets, TTLs, expiry times and producer headers (each raising
``ProtocolError`` with the status the protocol gives and a clear message), idempotent-producer
decisions, JSON-mode splitting and joining, SSE event text and cursors.

Protocol offsets wrap the log's: ``<segment>_<hex of the log offset>``, the segment as 16 hex
digits. A stream's records are a lineage of segments: a plain stream has one (segment 0, its
own log stream); a fork reads its source's segments up to the fork point, then its own log
stream as the next segment. ``0000000000000000_0000000000000000`` is every stream's beginning
(segment 0, before its first record). Hex keeps the log's string order (each byte becomes two
characters of the same order, never ``00`` for a text offset) and the fixed-width segment sorts
first, so offsets stay strictly increasing along a stream and its forks, short, URL-safe, and
never one of the protocol's sentinels ``-1`` and ``now``.
"""

from __future__ import annotations

import base64
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from urllib.parse import urlsplit

__all__ = [
    "BEGINNING",
    "CLOSED",
    "CURSOR",
    "CURSOR_EPOCH",
    "CURSOR_INTERVAL",
    "EXPIRES_AT",
    "FORKED_FROM",
    "FORK_OFFSET",
    "FORK_SUB_OFFSET",
    "MAX_SAFE_INTEGER",
    "NEXT_OFFSET",
    "NOW",
    "PRODUCER_EPOCH",
    "PRODUCER_EXPECTED_SEQ",
    "PRODUCER_ID",
    "PRODUCER_RECEIVED_SEQ",
    "PRODUCER_SEQ",
    "SEQ",
    "SSE_ENCODING",
    "TTL",
    "UP_TO_DATE",
    "ZERO_OFFSET",
    "Fork",
    "Position",
    "Producer",
    "ProducerDecision",
    "ProducerState",
    "ProtocolError",
    "Verdict",
    "control_event",
    "cursor_for",
    "cut_at_sub_offset",
    "data_event",
    "decide_producer",
    "format_offset",
    "is_json",
    "join_json",
    "normalize_content_type",
    "parse_bool_header",
    "parse_expires_at",
    "parse_fork",
    "parse_offset",
    "parse_position",
    "parse_producer",
    "parse_ttl",
    "split_json",
    "sse_allowed",
    "sse_binary",
]

NEXT_OFFSET = "Stream-Next-Offset"
UP_TO_DATE = "Stream-Up-To-Date"
CURSOR = "Stream-Cursor"
CLOSED = "Stream-Closed"
TTL = "Stream-TTL"
EXPIRES_AT = "Stream-Expires-At"
SEQ = "Stream-Seq"
SSE_ENCODING = "Stream-SSE-Data-Encoding"
PRODUCER_ID = "Producer-Id"
PRODUCER_EPOCH = "Producer-Epoch"
PRODUCER_SEQ = "Producer-Seq"
PRODUCER_EXPECTED_SEQ = "Producer-Expected-Seq"
PRODUCER_RECEIVED_SEQ = "Producer-Received-Seq"
FORKED_FROM = "Stream-Forked-From"
FORK_OFFSET = "Stream-Fork-Offset"
FORK_SUB_OFFSET = "Stream-Fork-Sub-Offset"

#: The sentinel offsets a client may send; never produced by a server.
BEGINNING = "-1"
NOW = "now"

#: Producer epochs and sequence numbers stay within JavaScript's exact integers.
MAX_SAFE_INTEGER = 2**53 - 1

#: Cursors count 20-second intervals from 2024-10-09T00:00:00Z.
CURSOR_INTERVAL = 20
CURSOR_EPOCH = datetime(2024, 10, 9, tzinfo=UTC).timestamp()

_SEGMENT_DIGITS = 16
_SEGMENT_START = "0" * 16
_HEX = re.compile(r"[0-9a-f]+")
_FORBIDDEN = frozenset(",&=?/")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


class ProtocolError(Exception):
    """A request the protocol refuses: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# Offsets ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Position:
    """Where a protocol offset stands: after the log record at ``log_offset`` of segment
    ``segment`` of a stream's lineage (None: at the segment's start, before its records)."""

    segment: int
    log_offset: str | None


def format_offset(segment: int, log_offset: str | None) -> str:
    """The protocol offset after the log record at ``log_offset`` of ``segment`` (None:
    before any record of the segment; segment 0 and None is every stream's beginning)."""
    part = _SEGMENT_START if log_offset is None else log_offset.encode().hex()
    return f"{segment:0{_SEGMENT_DIGITS}x}_{part}"


#: The offset before a stream's first record (the same for every stream, forks included).
ZERO_OFFSET = format_offset(0, None)


def parse_position(offset: str) -> Position:
    """The position a protocol offset stands for (400 when this server could not have made
    it: not ``<16 hex digits>_<hex>``, or not the hex of a UTF-8 log offset)."""
    segment, sep, part = offset.partition("_")
    if (
        not sep
        or len(segment) != _SEGMENT_DIGITS
        or not _HEX.fullmatch(segment)
        or not _HEX.fullmatch(part)
        or len(part) % 2
    ):
        raise ProtocolError(400, f"offset {offset!r} is not one this server gave")
    if part == _SEGMENT_START:
        return Position(int(segment, 16), None)
    try:
        return Position(int(segment, 16), bytes.fromhex(part).decode())
    except ValueError as error:  # UnicodeDecodeError is a ValueError too
        raise ProtocolError(400, f"offset {offset!r} is not one this server gave") from error


def parse_offset(values: Sequence[str]) -> str | None:
    """The ``offset`` query parameter's values as a protocol offset, ``-1``, ``now`` or None
    (absent). Refused (400): repeated, empty, a forbidden character, whitespace, or an offset
    this server could not have produced."""
    if not values:
        return None
    if len(values) > 1:
        raise ProtocolError(400, "offset is given more than once")
    value = values[0]
    if value == "":
        raise ProtocolError(400, "offset is empty")
    if value in (BEGINNING, NOW):
        return value
    bad = sorted({c for c in value if c in _FORBIDDEN or c.isspace() or not c.isprintable()})
    if bad:
        raise ProtocolError(400, f"offset {value!r} has characters offsets never hold: {bad}")
    parse_position(value)
    return value


# Creation headers ------------------------------------------------------------------------


def parse_ttl(value: str) -> int:
    """``Stream-TTL``: a non-negative decimal integer, no sign, no leading zeros (400)."""
    if not _DECIMAL.fullmatch(value):
        raise ProtocolError(
            400, f"Stream-TTL {value!r} is not a non-negative integer without leading zeros"
        )
    return int(value)


def parse_expires_at(value: str) -> float:
    """``Stream-Expires-At``: an RFC 3339 timestamp, as ``time.time()`` seconds (400)."""
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        raise ProtocolError(400, f"Stream-Expires-At {value!r} is not an RFC 3339 timestamp")
    text = value.strip().replace("z", "Z").replace("t", "T").replace(" ", "T")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise ProtocolError(400, f"Stream-Expires-At {value!r}: {error}") from error
    return moment.timestamp()


def parse_bool_header(value: str | None) -> bool:
    """A presence flag such as ``Stream-Closed``: true when its value is ``true``."""
    return value is not None and value.strip().lower() == "true"


def normalize_content_type(value: str | None) -> str:
    """The media type compared between requests: lower-case, parameters kept but spaced
    consistently; ``application/octet-stream`` when absent."""
    if value is None or not value.strip():
        return "application/octet-stream"
    parts = [p.strip() for p in value.split(";") if p.strip()]
    return "; ".join([parts[0].lower(), *(p.lower() for p in parts[1:])])


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def is_json(content_type: str) -> bool:
    """A JSON-mode stream (messages kept apart, reads as one array)."""
    return _media_type(content_type) == "application/json"


def sse_allowed(content_type: str) -> bool:
    """Whether ``live=sse`` may serve this stream as text (else base64, see ``sse_binary``)."""
    return is_json(content_type) or _media_type(content_type).startswith("text/")


def sse_binary(content_type: str) -> bool:
    """SSE data events of this stream are base64 (``Stream-SSE-Data-Encoding: base64``)."""
    return not sse_allowed(content_type)


# Idempotent producers --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Producer:
    """The three producer headers of one append."""

    id: str
    epoch: int
    seq: int


@dataclass(frozen=True, slots=True)
class ProducerState:
    """What the server holds for one producer of one stream."""

    epoch: int
    last_seq: int


class Verdict(Enum):
    ACCEPT = "accept"  # append, then store the new state (200)
    DUPLICATE = "duplicate"  # already appended: 204, nothing written
    STALE_EPOCH = "stale_epoch"  # 403 with the current epoch
    GAP = "gap"  # 409 with the expected and received sequence
    BAD_EPOCH_START = "bad_epoch_start"  # a new epoch not starting at 0: 400


@dataclass(frozen=True, slots=True)
class ProducerDecision:
    verdict: Verdict
    state: ProducerState | None  # the state after an accepted append; the current otherwise

    @property
    def status(self) -> int:
        return {
            Verdict.ACCEPT: 200,
            Verdict.DUPLICATE: 204,
            Verdict.STALE_EPOCH: 403,
            Verdict.GAP: 409,
            Verdict.BAD_EPOCH_START: 400,
        }[self.verdict]


def _producer_integer(name: str, value: str) -> int:
    if not _DECIMAL.fullmatch(value.strip()):
        raise ProtocolError(400, f"{name} {value!r} is not a non-negative integer")
    number = int(value.strip())
    if number > MAX_SAFE_INTEGER:
        raise ProtocolError(400, f"{name} {value!r} is above 2^53-1")
    return number


def parse_producer(producer_id: str | None, epoch: str | None, seq: str | None) -> Producer | None:
    """The producer headers: all three or none (400 otherwise, or on a bad value)."""
    given = [v is not None for v in (producer_id, epoch, seq)]
    if not any(given):
        return None
    if not all(given):
        raise ProtocolError(
            400, "Producer-Id, Producer-Epoch and Producer-Seq must be sent together"
        )
    assert producer_id is not None
    assert epoch is not None
    assert seq is not None
    if producer_id.strip() == "":
        raise ProtocolError(400, "Producer-Id is empty")
    return Producer(
        producer_id,
        _producer_integer(PRODUCER_EPOCH, epoch),
        _producer_integer(PRODUCER_SEQ, seq),
    )


def decide_producer(state: ProducerState | None, producer: Producer) -> ProducerDecision:
    """Whether an append by ``producer`` is new, a duplicate, fenced or out of sequence."""
    if state is None or producer.epoch > state.epoch:
        if producer.seq != 0:
            if state is None:
                return ProducerDecision(Verdict.GAP, ProducerState(producer.epoch, -1))
            return ProducerDecision(Verdict.BAD_EPOCH_START, state)
        return ProducerDecision(Verdict.ACCEPT, ProducerState(producer.epoch, 0))
    if producer.epoch < state.epoch:
        return ProducerDecision(Verdict.STALE_EPOCH, state)
    if producer.seq <= state.last_seq:
        return ProducerDecision(Verdict.DUPLICATE, state)
    if producer.seq == state.last_seq + 1:
        return ProducerDecision(Verdict.ACCEPT, ProducerState(state.epoch, producer.seq))
    return ProducerDecision(Verdict.GAP, state)


# Forks -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fork:
    """What a PUT asks to fork: the source stream's path, the fork offset (None: the source's
    tail when the fork is made) and the sub-offset (bytes of a binary stream, messages of a
    JSON stream past the fork offset; 0: none)."""

    source: str
    offset: str | None = None
    sub_offset: int = 0


def parse_fork(source: str | None, offset: str | None, sub_offset: str | None) -> Fork | None:
    """The fork headers of a PUT, or None when it forks nothing. Refused (400): an offset or
    sub-offset without ``Stream-Forked-From``, a sub-offset above 0 without
    ``Stream-Fork-Offset``, a malformed offset or sub-offset (a decimal integer, no sign, no
    leading zeros). A source given as a URL stands for its path."""
    if source is None:
        if offset is not None or sub_offset is not None:
            raise ProtocolError(400, f"{FORK_OFFSET} and {FORK_SUB_OFFSET} need {FORKED_FROM}")
        return None
    source = source.strip()
    if "://" in source:
        source = urlsplit(source).path
    if not source:
        raise ProtocolError(400, f"{FORKED_FROM} is empty")
    if offset is not None:
        offset = offset.strip()
        if offset not in (BEGINNING,):
            parse_position(offset)
    count = 0
    if sub_offset is not None:
        value = sub_offset.strip()
        if not _DECIMAL.fullmatch(value) or int(value) > MAX_SAFE_INTEGER:
            raise ProtocolError(
                400, f"{FORK_SUB_OFFSET} {sub_offset!r} is not a non-negative integer"
            )
        count = int(value)
    if count > 0 and offset is None:
        raise ProtocolError(400, f"{FORK_SUB_OFFSET} above 0 needs {FORK_OFFSET}")
    return Fork(source, None if offset == BEGINNING else offset, count)


def cut_at_sub_offset(following: Sequence[bytes], count: int, *, json_mode: bool) -> list[bytes]:
    """The part of the records after a fork offset that a sub-offset of ``count`` keeps: the
    first ``count`` messages of a JSON stream, the first ``count`` bytes of the next record
    of any other. 400 when there are fewer (or no record at all)."""
    if json_mode:
        if len(following) < count:
            raise ProtocolError(
                400, f"{FORK_SUB_OFFSET} {count} is past the {len(following)} messages there"
            )
        return list(following[:count])
    if not following or len(following[0]) < count:
        size = len(following[0]) if following else 0
        raise ProtocolError(400, f"{FORK_SUB_OFFSET} {count} is past the {size} bytes there")
    return [following[0][:count]]


# JSON mode -------------------------------------------------------------------------------


def split_json(body: bytes, *, allow_empty: bool) -> list[bytes]:
    """A JSON-mode body as its messages, each re-serialized compactly: one top-level array is
    flattened one level, any other value is one message. 400 on invalid JSON, and on ``[]``
    unless ``allow_empty`` (a PUT may create an empty stream)."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ProtocolError(400, f"the body is not valid JSON: {error}") from error
    items = value if isinstance(value, list) else [value]
    if not items and not allow_empty:
        raise ProtocolError(400, "an empty JSON array appends nothing")
    return [_compact(item) for item in items]


def _compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def join_json(messages: Iterable[bytes]) -> bytes:
    """Messages as one JSON array (``[]`` when there are none)."""
    return b"[" + b",".join(messages) + b"]"


# SSE -------------------------------------------------------------------------------------


def _event(kind: str, text: str) -> bytes:
    # Every line of the payload becomes its own data: line, so a CR or LF in the data can
    # never end the event or start a forged one.
    # A reader drops one space after "data:", so a line that starts with one gets another.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    body = "".join(f"data:{' ' if line.startswith(' ') else ''}{line}\n" for line in lines)
    return f"event: {kind}\n{body}\n".encode()


def data_event(payload: bytes, *, binary: bool) -> bytes:
    """An SSE ``data`` event: the payload as text, or base64 for binary streams."""
    text = base64.b64encode(payload).decode() if binary else payload.decode(errors="replace")
    return _event("data", text)


def control_event(
    next_offset: str, cursor: str | None, *, up_to_date: bool = False, closed: bool = False
) -> bytes:
    """An SSE ``control`` event: the next offset, the cursor (absent once closed), and the
    ``upToDate`` / ``streamClosed`` flags when they hold."""
    fields: dict[str, object] = {"streamNextOffset": next_offset}
    if cursor is not None and not closed:
        fields["streamCursor"] = cursor
    if up_to_date:
        fields["upToDate"] = True
    if closed:
        fields["streamClosed"] = True
    return _event("control", json.dumps(fields, separators=(",", ":")))


# Cursors ---------------------------------------------------------------------------------


def cursor_for(now: float, client: str | None, rng: random.Random | None = None) -> str:
    """The cursor for a live response at ``now``: the current 20-second interval, or, when
    the client's cursor is not behind it, a cursor strictly above the client's (1 to 3600
    seconds of jitter, in intervals) so cursors never repeat or go back."""
    interval = int((now - CURSOR_EPOCH) // CURSOR_INTERVAL)
    previous: int | None = None
    if client is not None and _DECIMAL.fullmatch(client.strip()):
        previous = int(client.strip())
    if previous is None or previous < interval:
        return str(interval)
    jitter = (rng or random).randint(1, 3600)
    return str(previous + max(1, jitter // CURSOR_INTERVAL))
