"""The one address parser behind ``--grpc`` and ``--http``: examples, odd inputs (hypothesis),
and the argparse error both flags give."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpckit.address import Address, AddressError, parse_address
from rpckit.cli import main


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":50051", Address("127.0.0.1", 50051)),
        (":0", Address("127.0.0.1", 0)),
        ("localhost:8080", Address("localhost", 8080)),
        ("0.0.0.0:8080", Address("0.0.0.0", 8080)),
        ("[::]:8080", Address("::", 8080)),
        ("[::1]:65535", Address("::1", 65535)),
        ("my-host.example:1", Address("my-host.example", 1)),
    ],
)
def test_forms(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


def test_canonical_text() -> None:
    assert str(parse_address(":8080")) == "127.0.0.1:8080"
    assert str(parse_address("[::1]:80")) == "[::1]:80"
    assert str(parse_address("[::1]:0").with_port(4)) == "[::1]:4"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no port in ''"),
        ("localhost", "no port in 'localhost'"),
        ("8080", "did you mean :8080?"),
        ("localhost:", "no port in 'localhost:'"),
        (":65536", "not a number from 0 to 65535"),
        (":-1", "not a number from 0 to 65535"),
        (":\uff18\uff10", "not a number from 0 to 65535"),  # fullwidth (non-ASCII) digits
        ("::1:80", "an IPv6 address goes in brackets: [::1]:80"),
        ("[::1:80", "missing ']'"),
        ("[::1]80", "no port in '[::1]80'"),
        ("[nope]:80", "'nope' in '[nope]:80' is not an IPv6 address"),
        ("[]:80", "is not an IPv6 address"),
        ("::1]:80", "misplaced bracket"),
        ("bad host:80", "is not a host name or IP address"),
        ("unix:/tmp/s", "unix sockets are not supported"),
        ("http://localhost:8080", "is a URL"),
    ],
)
def test_mistakes(text: str, reason: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address(text)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


@given(st.text(max_size=40))
def test_any_text_parses_or_says_why(text: str) -> None:
    try:
        address = parse_address(text)
    except AddressError as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert "\n" not in message
        return
    assert 0 <= address.port <= 65535
    assert address.host
    assert parse_address(str(address)) == address  # the canonical form means the same


@given(
    st.one_of(st.just(""), st.sampled_from(["localhost", "0.0.0.0", "[::]", "[::1]"])),
    st.integers(min_value=-10, max_value=70000),
)
def test_ports(host: str, port: int) -> None:
    text = f"{host}:{port}"
    if 0 <= port <= 65535:
        assert parse_address(text).port == port
    else:
        with pytest.raises(AddressError, match="not a number from 0 to 65535"):
            parse_address(text)


@pytest.mark.parametrize("flag", ["--grpc", "--http"])
@pytest.mark.parametrize("text", ["", "localhost", ":99999", "[::1:80", "unix:/tmp/s"])
def test_both_flags_give_one_argparse_error(
    capsys: pytest.CaptureFixture[str], flag: str, text: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "greeter:Greeter", flag, text])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"rpckit serve: error: argument {flag}: "), error
    assert _reason(text) in error


def _reason(text: str) -> str:
    with pytest.raises(AddressError) as caught:
        parse_address(text)
    return str(caught.value)
