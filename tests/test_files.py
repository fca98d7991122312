"""rpckit.files: Content-Disposition both ways and upload name sanitising."""

from __future__ import annotations

import pytest

from rpckit.files import content_disposition, parse_content_disposition, sanitize_filename


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
