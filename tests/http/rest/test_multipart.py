"""rpckit.http.rest.framing's multipart/form-data reader, free of I/O: bodies made by httpx's own
encoder (what a client really sends), split at every point hypothesis picks; limits and
malformed bodies refused with a one-line ``invalid_argument``."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import httpx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rpckit.errors import Code, RpcError
from rpckit.http.rest.framing import (
    PART_END,
    MultipartEvent,
    MultipartReader,
    PartHead,
    multipart_boundary,
)

Part = tuple[PartHead, bytes]


def form(files: dict[str, tuple[str, bytes, str]], data: dict[str, str] | None = None) -> Request:
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return Request(request.headers["content-type"], request.read())


class Request:
    def __init__(self, content_type: str, body: bytes) -> None:
        self.content_type = content_type
        self.body = body
        boundary = multipart_boundary(content_type)
        assert boundary is not None
        self.boundary = boundary


def parse(boundary: str, pieces: Iterable[bytes], **limits: int) -> list[Part]:
    """The parts a reader finds, checking the event order as it goes."""
    reader = MultipartReader(boundary, **limits)
    events: list[MultipartEvent] = []
    for piece in pieces:
        events += reader.feed(piece)
    reader.close()
    parts: list[Part] = []
    head: PartHead | None = None
    data = bytearray()
    for event in events:
        if isinstance(event, PartHead):
            assert head is None, "a head inside a part"
            head, data = event, bytearray()
        elif event is PART_END:
            assert head is not None
            parts.append((head, bytes(data)))
            head = None
        else:
            assert isinstance(event, bytes)
            assert head is not None
            assert event, "an empty data event"
            data += event
    assert head is None, "a part never ended"
    return parts


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    return [body[a:b] for a, b in itertools.pairwise(points)]


_NASTY = st.sampled_from([b"\r\n", b"--", b"\r\n--", b"-", b"\r", b"\n", b"x", b"\x00", b"\xff"])


@settings(max_examples=300, deadline=None)
@given(
    content=st.lists(st.one_of(_NASTY, st.binary(max_size=40)), max_size=30).map(b"".join),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
    field=st.text(max_size=20),
)
def test_any_split_gives_back_the_file(content: bytes, cuts: list[int], field: str) -> None:
    request = form({"upload": ('é "q".bin', content, "image/png")}, {"note": field})
    # The nastiest content holds the delimiter's own prefix: "\r\n--" + part of the boundary.
    parts = parse(request.boundary, split(request.body, cuts))
    assert [(h.name, h.filename, h.content_type) for h, _ in parts] == [
        ("note", None, None),
        ("upload", 'é "q".bin', "image/png"),
    ]
    assert parts[0][1] == field.encode()
    assert parts[1][1] == content


@given(content=st.binary(max_size=300), cuts=st.lists(st.integers(min_value=0), max_size=6))
def test_delimiter_prefixes_in_the_data_are_data(content: bytes, cuts: list[int]) -> None:
    boundary = "b0undary"
    data = b"\r\n--b0undar" + content + b"\r\n--b0undarX"
    assume(b"\r\n--b0undary" not in data)
    head = b"--b0undary\r\nContent-Disposition: form-data; name=f; filename=a\r\n\r\n"
    body = head + data + b"\r\n--b0undary--\r\n"
    parts = parse(boundary, split(body, cuts))
    assert parts[0][1] == data


def test_bounded_memory_while_streaming() -> None:
    reader = MultipartReader("xyz")
    assert reader.feed(b"--xyz\r\nContent-Disposition: form-data; name=f; filename=a\r\n\r\n")
    sent = 0
    for _ in range(1000):
        events = reader.feed(b"a" * 65536)
        sent += sum(len(e) for e in events if isinstance(e, bytes))
        assert len(reader._buffer) < len(b"\r\n--xyz")  # only a possible delimiter start
    assert sent > 1000 * 65536 - 10


def test_preamble_epilogue_padding_and_empty_parts() -> None:
    body = (
        b"ignored preamble\r\n--B  \t\r\n"
        b'Content-Disposition: form-data; name="empty"\r\n\r\n'
        b"\r\n--B\r\n\r\n"  # a part with no headers at all
        b"\r\n--B--\r\nepilogue, ignored --B\r\n"
    )
    with pytest.raises(RpcError, match="has no 'Content-Disposition: form-data'"):
        parse("B", [body])
    body = body.replace(b"\r\n--B\r\n\r\n", b"", 1)
    assert parse("B", [body]) == [(PartHead("empty", None, None), b"")]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"--B\r\nContent-Disposition: form-data; name=a\r\n\r\nabc", "before its closing"),
        (b"--B\r\nContent-Disposition: form-data; name=a\r\n", "before its closing"),
        (b"no boundary at all", "before its closing"),
        (b"--Bxx\r\n", "not followed by CRLF"),
        (b"--B\r\nno colon here\r\n\r\n\r\n--B--", "no name"),
        (b"--B\r\nContent-Disposition: attachment\r\n\r\n\r\n--B--", "form-data"),
        (b"--B\r\nX: " + b"y" * 200 + b"\r\n\r\n", "headers exceed 100 bytes"),
        (b"--B\r\nX: " + b"y" * 200, "headers exceed 100 bytes"),
        (
            b"--B\r\n" + b"Content-Disposition: form-data\r\n\r\n\r\n--B\r\n" * 3,
            "more than 2 parts",
        ),
    ],
)
def test_malformed_bodies(body: bytes, needle: str) -> None:
    with pytest.raises(RpcError) as caught:
        parse("B", [body], max_head=100, max_parts=2)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert needle in caught.value.message
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=abc", "abc"),
        ('Multipart/Form-Data; charset=utf-8; boundary="a b:c"', "a b:c"),
        ("application/octet-stream", None),
        ("multipart/mixed; boundary=abc", None),
        (None, None),
    ],
)
def test_multipart_boundary(content_type: str | None, boundary: str | None) -> None:
    assert multipart_boundary(content_type) == boundary


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=" + "x" * 71,
        'multipart/form-data; boundary="ends with space "',
    ],
)
def test_multipart_without_a_usable_boundary(content_type: str) -> None:
    with pytest.raises(RpcError) as caught:
        multipart_boundary(content_type)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert "boundary" in caught.value.message
