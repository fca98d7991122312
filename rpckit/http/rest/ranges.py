"""HTTP validators and byte ranges for file responses (RFC 9110 §8.8, §13, §14). No I/O."""

from __future__ import annotations

import calendar
import enum
import re
import time
from collections.abc import Mapping

from rpckit.numbers import try_int

__all__ = [
    "UNSATISFIABLE",
    "Unsatisfiable",
    "etag",
    "http_date",
    "if_range_matches",
    "not_modified",
    "parse_etags",
    "parse_http_date",
    "parse_range",
    "precondition_failed",
]


class Unsatisfiable(enum.Enum):
    """A well-formed Range that selects no byte of the file: answered with 416."""

    UNSATISFIABLE = "unsatisfiable"


UNSATISFIABLE = Unsatisfiable.UNSATISFIABLE

_SPEC = re.compile(r"([0-9]*)-([0-9]*)")


def parse_range(header: str | None, size: int) -> tuple[int, int] | Unsatisfiable | None:
    """The inclusive byte span one ``bytes=`` range selects, clamped to ``size``.

    None means "ignore the header and send the whole file" (absent, malformed, another unit,
    or several ranges, which this server does not serve as multipart); UNSATISFIABLE means 416.
    """
    if header is None:
        return None
    unit, eq, range_set = header.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    specs = [s.strip() for s in range_set.split(",") if s.strip()]  # empty list items are legal
    if len(specs) != 1:
        return None
    match = _SPEC.fullmatch(specs[0])
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first:
        if not last:
            return None
        suffix = _position(last)
        if suffix == 0 or size == 0:
            return UNSATISFIABLE
        return max(0, size - suffix), size - 1
    start = _position(first)
    end = None if not last else _position(last)
    if end is not None and end < start:
        return None  # RFC 9110 §14.1.1: last < first makes the spec invalid, not unsatisfiable
    if start >= size:
        return UNSATISFIABLE
    return start, size - 1 if end is None else min(end, size - 1)


#: Positions beyond any file (more than 20 digits) all mean "past the end": the same answer.
_FAR = 2**64


def _position(digits: str) -> int:
    """A byte position of a Range spec (ASCII digits already matched), bounded in length."""
    value = try_int(digits.lstrip("0") or "0", maximum=_FAR)
    return _FAR if value is None else value


def etag(size: int, mtime: float) -> str:
    """A strong entity tag from size and modification time: changes whenever either does."""
    return f'"{size:x}-{round(mtime * 1_000_000_000):x}"'


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(ts: float) -> str:
    """``ts`` (Unix seconds) as an IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    t = time.gmtime(int(ts))
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


_MONTH = "(" + "|".join(_MONTHS) + ")"
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
_IMF_FIXDATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) " + _MONTH + r" ([0-9]{4}) " + _TIME + " GMT"
)
_RFC850 = re.compile(
    r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
    r"([0-9]{2})-" + _MONTH + r"-([0-9]{2}) " + _TIME + " GMT"
)
_ASCTIME = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) " + _MONTH + r" ([0-9 ][0-9]) " + _TIME + r" ([0-9]{4})"
)


def parse_http_date(value: str) -> float | None:
    """Unix seconds from an HTTP-date in any of RFC 9110's three formats; None if invalid."""
    value = value.strip()
    if m := _IMF_FIXDATE.fullmatch(value):
        day, month, year, hh, mm, ss = m.groups()
    elif m := _RFC850.fullmatch(value):
        day, month, yy, hh, mm, ss = m.groups()
        # RFC 9110 §5.6.7: a two-digit year more than 50 years ahead is in the past century.
        this_year = time.gmtime().tm_year
        year_int = this_year - this_year % 100 + int(yy)
        if year_int > this_year + 50:
            year_int -= 100
        year = str(year_int)
    elif m := _ASCTIME.fullmatch(value):
        month, day, hh, mm, ss, year = m.groups()
    else:
        return None
    y, mo, d = int(year), _MONTHS.index(month) + 1, int(day)
    h, mi, sec = int(hh), int(mm), int(ss)
    if not (1 <= d <= calendar.monthrange(y, mo)[1] and h < 24 and mi < 60 and sec <= 60):
        return None  # 60 is a leap second
    return float(calendar.timegm((y, mo, d, h, mi, sec, 0, 0, 0)))


_ETAG = re.compile(r'(W/)?("[\x21\x23-\x7e\x80-\xff]*")')
_LIST_SEP = re.compile(r"[ \t]*(,[ \t]*)*")


def parse_etags(value: str) -> list[tuple[bool, str]] | None:
    """The entity tags of an If-Match/If-None-Match list as (weak, opaque-tag); None if invalid.

    Tags are scanned as quoted strings because an opaque tag may itself contain commas.
    """
    tags: list[tuple[bool, str]] = []
    index = _skip_separators(value, 0)
    while index < len(value):  # each turn consumes one tag, so this ends
        m = _ETAG.match(value, index)
        if m is None:
            return None
        tags.append((m.group(1) is not None, m.group(2)))
        index = _skip_separators(value, m.end())
        if index < len(value) and "," not in value[m.end() : index]:
            return None  # two tags need a comma between them
    return tags


def _skip_separators(value: str, index: int) -> int:
    m = _LIST_SEP.match(value, index)
    return m.end() if m else index


def _split_tag(tag: str) -> tuple[bool, str]:
    return (True, tag[2:]) if tag.startswith("W/") else (False, tag)


def _matches(header: str, current: str, *, strong: bool) -> bool:
    """Whether an If-Match/If-None-Match value names ``current`` (``*`` names any)."""
    if header.strip() == "*":
        return True
    tags = parse_etags(header)
    if not tags:
        return False  # invalid or empty lists match nothing: the full response is always safe
    current_weak, current_opaque = _split_tag(current)
    for weak, opaque in tags:
        if opaque == current_opaque and (not strong or not (weak or current_weak)):
            return True
    return False


def _seconds(mtime: float) -> int:
    """Last-Modified has one-second resolution, so comparisons use whole seconds."""
    return int(mtime)


def not_modified(headers: Mapping[str, str], etag: str, mtime: float | None) -> bool:
    """Whether a GET/HEAD may be answered 304: If-None-Match (weak) wins over If-Modified-Since."""
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        return _matches(if_none_match, etag, strong=False)
    since = headers.get("if-modified-since")
    if since is None or mtime is None:
        return False
    date = parse_http_date(since)
    return date is not None and _seconds(mtime) <= date


def precondition_failed(headers: Mapping[str, str], etag: str, mtime: float | None) -> bool:
    """Whether If-Match (strong) or, without it, If-Unmodified-Since fails: answered with 412."""
    if_match = headers.get("if-match")
    if if_match is not None:
        return not _matches(if_match, etag, strong=True)
    since = headers.get("if-unmodified-since")
    if since is None or mtime is None:
        return False
    date = parse_http_date(since)
    return date is not None and _seconds(mtime) > date


def if_range_matches(value: str, etag: str, mtime: float | None) -> bool:
    """Whether If-Range still names this file: a strong ETag match or the exact Last-Modified."""
    value = value.strip()
    if value.startswith(('"', "W/")):
        tags = parse_etags(value)
        if tags is None or len(tags) != 1:
            return False
        weak, opaque = tags[0]
        return not weak and (False, opaque) == _split_tag(etag)
    if mtime is None:
        return False
    date = parse_http_date(value)
    return date is not None and date == _seconds(mtime)
