"""Range parsing, HTTP dates and validator comparisons (rpckit.http.rest.ranges): pure functions."""

from __future__ import annotations

import calendar

import pytest

from rpckit.http.rest.ranges import (
    UNSATISFIABLE,
    Unsatisfiable,
    etag,
    http_date,
    if_range_matches,
    not_modified,
    parse_etags,
    parse_http_date,
    parse_range,
    precondition_failed,
)

# Sun, 06 Nov 1994 08:49:37 GMT, the example date of RFC 9110.
EPOCH_1994 = calendar.timegm((1994, 11, 6, 8, 49, 37, 0, 0, 0))
MTIME = EPOCH_1994 + 0.25  # sub-second part: Last-Modified drops it
TAG = etag(1000, MTIME)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=10-19", 100, (10, 19)),
        ("bytes=0-0", 100, (0, 0)),
        ("bytes=0-", 100, (0, 99)),
        ("bytes=99-", 100, (99, 99)),
        ("bytes=90-200", 100, (90, 99)),  # last position clamped to the size
        ("bytes=-5", 100, (95, 99)),
        ("bytes=-100", 100, (0, 99)),
        ("bytes=-500", 100, (0, 99)),  # suffix longer than the file: the whole file
        ("BYTES=1-2", 100, (1, 2)),  # the range unit is case-insensitive
        (" bytes=1-2", 100, (1, 2)),
        ("bytes=1-2,", 100, (1, 2)),  # empty list elements are allowed
        ("bytes=, 1-2", 100, (1, 2)),
        ("bytes= 1-2 ", 100, (1, 2)),
        ("bytes=0-99999999999999999999", 100, (0, 99)),
        ("bytes=00005-00010", 100, (5, 10)),
    ],
)
def test_parse_range_satisfiable(header: str, size: int, expected: tuple[int, int]) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=100-", 100),  # first position at the size
        ("bytes=100-200", 100),
        ("bytes=500-600", 100),
        ("bytes=-0", 100),  # a zero-length suffix selects nothing
        ("bytes=0-", 0),  # nothing in an empty file can be selected
        ("bytes=-5", 0),
        ("bytes=0-0", 0),
    ],
)
def test_parse_range_unsatisfiable(header: str, size: int) -> None:
    result = parse_range(header, size)
    assert result is UNSATISFIABLE
    assert isinstance(result, Unsatisfiable)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=abc",
        "bytes=5",
        "bytes=a-b",
        "bytes=1-a",
        "bytes=5-4",  # last before first: invalid, so ignored rather than 416
        "bytes=+1-2",
        "bytes=1_0-20",  # int() would accept this; the grammar does not
        "bytes=\u0661-2",  # nor non-ASCII digits
        "bytes=1 - 2",
        "bytes=--5",
        "bytes=1-2-3",
        "items=0-5",  # another unit
        "bytes 0-5",
        "bytes=0-1,3-4",  # several ranges: the whole file, not multipart
        "bytes=0-1, 5-",
        "bytes=-1,-2",
        "bytes=200-300,0-1",  # even when one of them is unsatisfiable
    ],
)
def test_parse_range_ignored(header: str | None) -> None:
    assert parse_range(header, 100) is None


def test_etag_is_quoted_strong_and_tracks_size_and_mtime() -> None:
    tag = etag(1000, 1.5)
    assert tag == '"3e8-59682f00"'
    assert tag.startswith('"')
    assert tag.endswith('"')
    assert not tag.startswith("W/")
    assert etag(1001, 1.5) != tag
    assert etag(1000, 1.500001) != tag


def test_http_date_is_imf_fixdate() -> None:
    assert http_date(EPOCH_1994) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert http_date(MTIME) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert http_date(951782400) == "Tue, 29 Feb 2000 00:00:00 GMT"


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
        "Sun Nov  6 08:49:37 1994",  # obsolete asctime
        "  Sun, 06 Nov 1994 08:49:37 GMT ",
    ],
)
def test_parse_http_date_formats(value: str) -> None:
    assert parse_http_date(value) == EPOCH_1994


@pytest.mark.parametrize(
    "value",
    [
        "",
        "yesterday",
        "Sun, 06 Nov 1994 08:49:37",  # no GMT
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 6 Nov 1994 08:49:37 GMT",  # day needs two digits
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "1994-11-06T08:49:37Z",
    ],
)
def test_parse_http_date_rejects(value: str) -> None:
    assert parse_http_date(value) is None


def test_http_date_round_trips() -> None:
    for ts in (0, EPOCH_1994, 951782400, 4102444799):
        assert parse_http_date(http_date(ts)) == ts


def test_rfc850_two_digit_year_is_within_fifty_years() -> None:
    parsed = parse_http_date("Thursday, 01-Jan-70 00:00:00 GMT")
    assert parsed is not None
    # Read as 2070 when that is at most 50 years ahead, otherwise 1970.
    assert http_date(parsed).endswith(("1970 00:00:00 GMT", "2070 00:00:00 GMT"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"a"', [(False, '"a"')]),
        ('W/"a"', [(True, '"a"')]),
        ('"a", W/"b" ,"c"', [(False, '"a"'), (True, '"b"'), (False, '"c"')]),
        ('"a,b", "c"', [(False, '"a,b"'), (False, '"c"')]),  # commas inside a tag
        ('"", "a"', [(False, '""'), (False, '"a"')]),
        (', "a",,', [(False, '"a"')]),
        ("", []),
        ('"a" "b"', None),  # no comma between tags
        ("a", None),  # unquoted
        ('"a', None),
        ('w/"a"', None),  # W/ is case-sensitive
        ('"a"b', None),
    ],
)
def test_parse_etags(value: str, expected: list[tuple[bool, str]] | None) -> None:
    assert parse_etags(value) == expected


def test_not_modified_without_validators() -> None:
    assert not not_modified({}, TAG, MTIME)


@pytest.mark.parametrize(
    ("if_none_match", "expected"),
    [
        (TAG, True),
        (f"W/{TAG}", True),  # If-None-Match uses the weak comparison
        (f'"other", {TAG}', True),
        ("*", True),
        ('"other"', False),
        ('W/"other"', False),
        ("garbage", False),
        ("", False),
    ],
)
def test_not_modified_if_none_match(if_none_match: str, expected: bool) -> None:
    assert not_modified({"if-none-match": if_none_match}, TAG, MTIME) is expected


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        (EPOCH_1994, True),  # same second as Last-Modified, despite MTIME's fraction
        (EPOCH_1994 + 60, True),
        (EPOCH_1994 - 1, False),
    ],
)
def test_not_modified_if_modified_since(since: float, expected: bool) -> None:
    headers = {"if-modified-since": http_date(since)}
    assert not_modified(headers, TAG, MTIME) is expected


def test_not_modified_ignores_invalid_dates_and_unknown_mtime() -> None:
    assert not not_modified({"if-modified-since": "not a date"}, TAG, MTIME)
    assert not not_modified({"if-modified-since": http_date(EPOCH_1994)}, TAG, None)


def test_if_none_match_takes_precedence_over_if_modified_since() -> None:
    fresh_date = http_date(EPOCH_1994 + 60)
    stale = {"if-none-match": '"other"', "if-modified-since": fresh_date}
    assert not not_modified(stale, TAG, MTIME)
    old_date = http_date(EPOCH_1994 - 60)
    assert not_modified({"if-none-match": TAG, "if-modified-since": old_date}, TAG, MTIME)


@pytest.mark.parametrize(
    ("headers", "failed"),
    [
        ({}, False),
        ({"if-match": TAG}, False),
        ({"if-match": f'"x", {TAG}'}, False),
        ({"if-match": "*"}, False),
        ({"if-match": f"W/{TAG}"}, True),  # If-Match uses the strong comparison
        ({"if-match": '"other"'}, True),
        ({"if-match": "garbage"}, True),
        ({"if-unmodified-since": http_date(EPOCH_1994)}, False),
        ({"if-unmodified-since": http_date(EPOCH_1994 + 60)}, False),
        ({"if-unmodified-since": http_date(EPOCH_1994 - 1)}, True),
        ({"if-unmodified-since": "not a date"}, False),  # invalid: ignored
        # If-Match wins over If-Unmodified-Since, in both directions.
        ({"if-match": TAG, "if-unmodified-since": http_date(EPOCH_1994 - 1)}, False),
        ({"if-match": '"other"', "if-unmodified-since": http_date(EPOCH_1994)}, True),
    ],
)
def test_precondition_failed(headers: dict[str, str], failed: bool) -> None:
    assert precondition_failed(headers, TAG, MTIME) is failed


@pytest.mark.parametrize(
    ("value", "matches"),
    [
        (TAG, True),
        (f" {TAG} ", True),
        (f"W/{TAG}", False),  # If-Range uses the strong comparison
        ('"other"', False),
        (f"{TAG}, {TAG}", False),  # one validator only
        (http_date(EPOCH_1994), True),  # the exact Last-Modified second
        ("Sunday, 06-Nov-94 08:49:37 GMT", True),
        (http_date(EPOCH_1994 + 1), False),  # a later date is not a match
        (http_date(EPOCH_1994 - 1), False),
        ("garbage", False),
        ("", False),
    ],
)
def test_if_range_matches(value: str, matches: bool) -> None:
    assert if_range_matches(value, TAG, MTIME) is matches


def test_if_range_date_needs_a_known_mtime() -> None:
    assert not if_range_matches(http_date(EPOCH_1994), TAG, None)
