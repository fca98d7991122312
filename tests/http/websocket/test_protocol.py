"""The ``rpckit.v1`` WebSocket sub-protocol's pure rules."""

from __future__ import annotations

import json

import pytest
from google.protobuf import any_pb2

from rpckit.errors import Code, RpcError
from rpckit.http.websocket.protocol import (
    MAX_CONTROL_SIZE,
    choose_subprotocol,
    end_frame,
    headers_frame,
    origin_allowed,
    parse_client_control,
    parse_server_control,
    parse_start,
    start_frame,
)


def test_subprotocol_choice() -> None:
    known = ["proto", "json"]
    assert choose_subprotocol(["chat", "rpckit.v1.json", "rpckit.v1.proto"], known) == (
        "rpckit.v1.json"
    )
    assert choose_subprotocol(["rpckit.v1.xml", "rpckit.v2.json"], known) is None
    assert choose_subprotocol([], known) is None


def test_start_round_trip() -> None:
    start = parse_start(
        start_frame([("authorization", "Bearer t"), ("x-n", "1"), ("x-n", "2")], 1.5)
    )
    assert start.headers.get("authorization") == "Bearer t"
    assert start.headers.get_all("x-n") == ["1", "2"]
    assert start.timeout == 1.5
    bare = parse_start('{"type":"start"}')
    assert bare.timeout is None
    assert bare.headers.items() == []


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x00\x01", "must be a text frame"),
        ("hello", "not JSON"),
        ("[1]", "JSON object with a type"),
        ('{"type":"end"}', "must be start, not 'end'"),
        ('{"type":"start","timeout_ms":-1}', "timeout_ms must be an integer"),
        ('{"type":"start","timeout_ms":true}', "timeout_ms must be an integer"),
        ('{"type":"start","headers":{"a":1}}', "'a' must be a string"),
        ('{"type":"start","headers":[]}', "must map names to strings"),
        ("{" + " " * MAX_CONTROL_SIZE + "}", "larger than"),
    ],
)
def test_bad_first_frames(frame: str | bytes, reason: str) -> None:
    with pytest.raises(RpcError, match=reason) as refused:
        parse_start(frame)
    assert refused.value.code is Code.INVALID_ARGUMENT


def test_client_controls() -> None:
    assert parse_client_control('{"type":"end"}').type == "end"
    assert parse_client_control('{"type":"cancel"}').type == "cancel"
    with pytest.raises(RpcError, match="unknown control frame 'start'"):
        parse_client_control('{"type":"start"}')


def test_server_frames_round_trip() -> None:
    kind, headers, error = parse_server_control(headers_frame([("x-a", "1")]))
    assert (kind, headers.get("x-a"), error) == ("headers", "1", None)
    kind, trailers, error = parse_server_control(end_frame(None, [("x-t", "2")]))
    assert (kind, trailers.get("x-t"), error) == ("end", "2", None)
    detail = any_pb2.Any(type_url="type.googleapis.com/google.rpc.ErrorInfo", value=b"\x0a\x01x")
    failed = RpcError(Code.NOT_FOUND, "gone", [detail])
    raw = end_frame(failed, [("x-t", "3")])
    assert json.loads(raw)["error"]["code"] == "not_found"
    kind, trailers, error = parse_server_control(raw)
    assert kind == "end"
    assert error is not None
    assert (error.code, error.message) == (Code.NOT_FOUND, "gone")
    assert error.details[0].value == b"\x0a\x01x"  # type: ignore[attr-defined]
    assert trailers.get("x-t") == "3"
    with pytest.raises(RpcError) as bad:
        parse_server_control("nope")
    assert bad.value.code is Code.INTERNAL


def test_origins() -> None:
    assert origin_allowed(None, "a:1", (), None)  # not a browser
    assert origin_allowed("http://127.0.0.1:1", "127.0.0.1:1", (), None)  # same origin
    assert origin_allowed("http://localhost:1", "localhost:1", (), None)
    assert origin_allowed("https://[::1]", "[::1]:443", (), None, "wss")
    assert not origin_allowed("http://evil.example", "a:1", (), None)
    assert origin_allowed("http://ok.example", "a:1", ["http://ok.example"], None)
    assert origin_allowed("http://x.example", "a:1", ["*"], None)
    assert origin_allowed("https://b.ok.example", "a:1", (), r"https://.*\.ok\.example")
    assert not origin_allowed("https://ok.example.evil", "a:1", (), r"https://.*\.ok\.example")
    assert origin_allowed("HTTPS://OK.example:443", "a:1", ["https://ok.example"], None)


def test_origin_check_does_not_trust_the_host_header() -> None:
    """Hardening 2, item 5: a DNS-rebinding page (its own name resolved to the server) sends
    a Host equal to its Origin; only address or localhost origins count as the server's own,
    with the connection's scheme and the same port."""
    assert not origin_allowed("http://evil.example:8080", "evil.example:8080", (), None)
    assert not origin_allowed("http://a:1", "a:1", (), None)
    assert not origin_allowed("https://127.0.0.1:1", "127.0.0.1:1", (), None, "ws")  # scheme
    assert not origin_allowed("http://127.0.0.1:1", "127.0.0.1:1", (), None, "wss")
    assert not origin_allowed("http://127.0.0.1:2", "127.0.0.1:1", (), None)  # port
    assert not origin_allowed("http://127.0.0.1", "127.0.0.1:8080", (), None)
    assert origin_allowed("http://app.example", "app.example", ["http://app.example"], None)


@pytest.mark.parametrize("depth", [101, 3000, 20_000])
def test_deep_control_frames_are_invalid_argument(depth: int) -> None:
    """Nesting is bounded before json sees the frame (3,000 levels used to raise
    RecursionError out of the parser), as the first frame and after it."""
    deep = "[" * depth + "]" * depth
    for parse, frame in (
        (parse_start, '{"type": "start", "headers": ' + deep + "}"),
        (parse_client_control, '{"type": "end", "x": ' + deep + "}"),
    ):
        with pytest.raises(RpcError) as refused:
            parse(frame)
        assert refused.value.code is Code.INVALID_ARGUMENT
        assert "nested deeper" in refused.value.message or "larger than" in refused.value.message
