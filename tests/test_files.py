"""rpckit.files: Content-Disposition both ways, upload name sanitising, and the check of an
untrusted name under a root (property-tested: no name it accepts leaves the root)."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpckit.files import (
    BadFileName,
    content_disposition,
    parse_content_disposition,
    relative_parts,
    sanitize_filename,
)


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("a.txt", 'attachment; filename="a.txt"'),
        (
            "résumé.pdf",
            "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf",
        ),
        ('qu"ote.txt', "attachment; filename=\"qu_ote.txt\"; filename*=UTF-8''qu%22ote.txt"),
        (None, "attachment"),
    ],
)
def test_content_disposition_round_trip(name: str | None, header: str) -> None:
    assert content_disposition(name) == header
    assert parse_content_disposition(header) == name


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ('attachment; filename="plain.txt"', "plain.txt"),
        ("attachment; filename=bare.txt", "bare.txt"),
        ('inline; filename="a\\"b.txt"', 'a"b.txt'),
        ("attachment; filename*=UTF-8''%E2%82%AC.txt; filename=\"e.txt\"", "€.txt"),
        ("attachment; filename*=bogus", None),
        ("attachment", None),
        ("", None),
    ],
)
def test_parse_content_disposition(header: str, name: str | None) -> None:
    assert parse_content_disposition(header) == name


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Windows\\system.ini", "system.ini"),
        ("/abs/path.txt", "path.txt"),
        ("..", None),
        (".hidden", "hidden"),
        ("a\x00b\nc.txt", "abc.txt"),
        ("", None),
        (None, None),
        ("dir/", None),
        ("x" * 300, "x" * 255),
    ],
)
def test_sanitize_filename(raw: str | None, safe: str | None) -> None:
    assert sanitize_filename(raw) == safe


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("hello.txt", ("hello.txt",)),
        ("sub/dir/a b.txt", ("sub", "dir", "a b.txt")),
        ("..hello", None),  # hidden: "no such file", not a bad name
        (".env", None),
        ("sub/.git/config", None),
        ("x..y", ("x..y",)),
        ("%2e%2e", ("%2e%2e",)),  # already decoded once: taken literally
    ],
)
def test_relative_parts_accepts(name: str, parts: tuple[str, ...] | None) -> None:
    assert relative_parts(name) == parts


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "empty"),
        ("..", "'..'"),
        ("../../../etc/hostname", "'..'"),
        ("sub/../../x", "'..'"),
        ("./a", "'.'"),
        ("/etc/passwd", "relative"),
        ("a//b", "empty component"),
        ("dir/", "empty component"),
        ("a\\..\\b", "backslash"),
        ("a\x00b", "NUL"),
        ("x" * 5000, "longer"),
    ],
)
def test_relative_parts_refuses(name: str, rule: str) -> None:
    with pytest.raises(BadFileName) as caught:
        relative_parts(name)
    assert rule in str(caught.value)
    assert len(str(caught.value)) < 80  # one short line, never the name itself


def test_relative_parts_hidden_when_asked() -> None:
    assert relative_parts(".well-known/x", hidden=True) == (".well-known", "x")
    with pytest.raises(BadFileName):
        relative_parts("..", hidden=True)


_NAME_PIECES = st.sampled_from(["..", ".", "/", "\\", "\x00", "a", "b.txt", "~", "%2F", " ", "é"])


@given(st.lists(_NAME_PIECES, max_size=12).map("".join), st.booleans())
def test_no_accepted_name_leaves_the_root(name: str, hidden: bool) -> None:
    try:
        parts = relative_parts(name, hidden=hidden)
    except BadFileName:
        return
    if parts is None:
        assert not hidden
        return
    assert "/".join(parts) == name
    joined = posixpath.normpath(posixpath.join("/srv/root", *parts))
    assert joined.startswith("/srv/root/")
    assert all(part not in ("", ".", "..") and "\x00" not in part for part in parts)
