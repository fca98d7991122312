"""The Durable Streams protocol's pure rules: every parser by property, producer decisions,
JSON mode, SSE events and cursors."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpckit.durable import protocol as p

# Real log offsets are printable; eight NULs would read as a segment's start (its hex).
log_offsets = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40).filter(
    lambda text: text != "\x00" * 8
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


T = TypeVar("T")


def _outcome(call: Callable[[], T]) -> tuple[T | None, p.ProtocolError | None]:
    """What ``call`` returns, or the protocol error it raises."""
    try:
        return call(), None
    except p.ProtocolError as error:
        return None, error


# Offsets


segments = st.integers(min_value=0, max_value=2**64 - 1)


@given(segments, log_offsets)
def test_a_log_offset_round_trips_and_parses(segment: int, log_offset: str) -> None:
    offset = p.format_offset(segment, log_offset)
    assert p.parse_position(offset) == p.Position(segment, log_offset)
    assert p.parse_offset([offset]) == offset
    assert offset not in (p.BEGINNING, p.NOW)
    assert not set(offset) & set(",&=?/ ")


@given(segments, log_offsets, segments, log_offsets)
def test_protocol_offsets_keep_the_segment_then_log_order(sa: int, a: str, sb: int, b: str) -> None:
    pa, pb = p.format_offset(sa, a), p.format_offset(sb, b)
    assert (pa < pb) == ((sa, a.encode()) < (sb, b.encode()))
    assert (pa == pb) == ((sa, a) == (sb, b))
    assert pa > p.ZERO_OFFSET
    assert pa > p.format_offset(sa, None)  # a segment's start sorts before its records


def test_the_beginning_is_the_empty_log_position() -> None:
    assert p.ZERO_OFFSET == "0000000000000000_0000000000000000"
    assert p.parse_position(p.ZERO_OFFSET) == p.Position(0, None)
    assert p.parse_offset([]) is None
    assert p.parse_offset(["-1"]) == "-1"
    assert p.parse_offset(["now"]) == "now"


@given(st.text(max_size=40))
def test_parse_offset_accepts_only_what_it_can_read_back(value: str) -> None:
    parsed, error = _outcome(lambda: p.parse_offset([value]))
    if error is not None:
        assert error.status == 400
        assert error.message
        return
    assert parsed == value
    if value not in ("-1", "now"):
        position = p.parse_position(value)  # never raises for an accepted offset
        assert p.format_offset(position.segment, position.log_offset) == value


@pytest.mark.parametrize(
    ("values", "reason"),
    [([p.ZERO_OFFSET, p.ZERO_OFFSET], "more than once"), ([""], "empty"),
     (["0000000000000000_30,30"], "characters"), (["0000000000000000_30 30"], "characters"),
     (["o30"], "not one this server gave"), (["000000000000000_3030"], "not one this server"),
     (["0000000000000000_303"], "not one this server gave"),
     (["0000000000000000_zz"], "not one this server gave"),
     (["9999999999999999_9999999999999999"], "not one this server gave")],
)  # fmt: skip
def test_bad_offsets_are_400_with_a_reason(values: list[str], reason: str) -> None:
    with pytest.raises(p.ProtocolError, match=reason) as raised:
        p.parse_offset(values)
    assert raised.value.status == 400


# Forks


def test_fork_headers_parse() -> None:
    assert p.parse_fork(None, None, None) is None
    assert p.parse_fork("/v1/stream/a", None, None) == p.Fork("/v1/stream/a")
    assert p.parse_fork("http://h:1/v1/stream/a", "-1", "0") == p.Fork("/v1/stream/a")
    fork = p.parse_fork("/v1/stream/a", p.ZERO_OFFSET, "3")
    assert fork == p.Fork("/v1/stream/a", p.ZERO_OFFSET, 3)


@pytest.mark.parametrize(
    ("source", "offset", "sub", "reason"),
    [(None, p.ZERO_OFFSET, None, "need"), (None, None, "0", "need"),
     ("/s", None, "1", "needs"), ("/s", p.ZERO_OFFSET, "-1", "not a non-negative"),
     ("/s", p.ZERO_OFFSET, "05", "not a non-negative"),
     ("/s", p.ZERO_OFFSET, "1.5", "not a non-negative"),
     ("/s", p.ZERO_OFFSET, "+1", "not a non-negative"), ("/s", "o1", None, "not one"),
     (" ", None, None, "empty")],
)  # fmt: skip
def test_bad_fork_headers_are_400(
    source: str | None, offset: str | None, sub: str | None, reason: str
) -> None:
    with pytest.raises(p.ProtocolError, match=reason) as raised:
        p.parse_fork(source, offset, sub)
    assert raised.value.status == 400


def test_a_sub_offset_cuts_bytes_or_messages() -> None:
    assert p.cut_at_sub_offset([b"hello", b"x"], 3, json_mode=False) == [b"hel"]
    assert p.cut_at_sub_offset([b"hello"], 5, json_mode=False) == [b"hello"]
    assert p.cut_at_sub_offset([b"1", b"2", b"3"], 2, json_mode=True) == [b"1", b"2"]
    for following, count, json_mode in [([b"hi"], 3, False), ([], 1, False), ([b"1"], 2, True)]:
        with pytest.raises(p.ProtocolError, match="past") as raised:
            p.cut_at_sub_offset(following, count, json_mode=json_mode)
        assert raised.value.status == 400


# TTL and expiry


@given(st.integers(min_value=0, max_value=10**12))
def test_a_decimal_ttl_parses(seconds: int) -> None:
    assert p.parse_ttl(str(seconds)) == seconds


@given(st.text(max_size=12))
def test_parse_ttl_accepts_exactly_canonical_decimals(value: str) -> None:
    canonical = value.isascii() and value.isdigit() and (value == "0" or value[0] != "0")
    parsed, error = _outcome(lambda: p.parse_ttl(value))
    if error is not None:
        assert error.status == 400
        assert not canonical
        return
    assert canonical
    assert str(parsed) == value


@pytest.mark.parametrize("bad", ["+3600", "03600", "3600.0", "3.6e3", "-1", "", " 1"])
def test_ttl_forms_the_protocol_refuses(bad: str) -> None:
    with pytest.raises(p.ProtocolError, match="Stream-TTL"):
        p.parse_ttl(bad)


@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(9000, 1, 1), timezones=st.just(UTC)
    ),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_an_rfc3339_time_parses_to_its_instant(moment: datetime, offset_minutes: int) -> None:
    moment = moment.replace(microsecond=0)
    zone = timedelta(minutes=offset_minutes)
    local = moment.astimezone(UTC) + zone
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + f"{sign}{hours:02d}:{minutes:02d}"
    assert p.parse_expires_at(text) == moment.timestamp()
    assert p.parse_expires_at(moment.strftime("%Y-%m-%dT%H:%M:%SZ")) == moment.timestamp()


@given(st.text(max_size=30))
def test_parse_expires_at_refuses_with_400(value: str) -> None:
    parsed, error = _outcome(lambda: p.parse_expires_at(value))
    if error is None:
        assert isinstance(parsed, float)
    else:
        assert error.status == 400
        assert "Stream-Expires-At" in error.message


@pytest.mark.parametrize("bad", ["tomorrow", "2025-13-01T00:00:00Z", "2025-01-01", "1735689600"])
def test_expiry_forms_the_protocol_refuses(bad: str) -> None:
    with pytest.raises(p.ProtocolError):
        p.parse_expires_at(bad)


# Producers

integer_text = st.integers(min_value=0, max_value=p.MAX_SAFE_INTEGER).map(str)


@given(st.text(min_size=1).filter(str.strip), integer_text, integer_text)
def test_producer_headers_parse(producer_id: str, epoch: str, seq: str) -> None:
    assert p.parse_producer(producer_id, epoch, seq) == p.Producer(
        producer_id, int(epoch), int(seq)
    )


@given(
    st.none() | st.text(max_size=5),
    st.none() | st.text(max_size=5),
    st.none() | st.text(max_size=5),
)
def test_producer_headers_come_all_or_none_and_valid(
    producer_id: str | None, epoch: str | None, seq: str | None
) -> None:
    parsed, error = _outcome(lambda: p.parse_producer(producer_id, epoch, seq))
    if error is not None:
        assert error.status == 400
        return
    if parsed is None:
        assert (producer_id, epoch, seq) == (None, None, None)
    else:
        assert str(parsed.epoch) == (epoch or "").strip()
        assert str(parsed.seq) == (seq or "").strip()


def test_producer_integers_stop_at_2_to_the_53() -> None:
    with pytest.raises(p.ProtocolError, match="2\\^53"):
        p.parse_producer("a", str(p.MAX_SAFE_INTEGER + 1), "0")
    with pytest.raises(p.ProtocolError, match="together"):
        p.parse_producer("a", "0", None)
    with pytest.raises(p.ProtocolError, match="empty"):
        p.parse_producer(" ", "0", "0")


def test_producer_decisions_follow_the_protocol() -> None:
    state = p.ProducerState(epoch=2, last_seq=5)
    decide = p.decide_producer
    assert decide(None, p.Producer("a", 0, 0)).status == 200
    assert decide(state, p.Producer("a", 2, 6)) == p.ProducerDecision(
        p.Verdict.ACCEPT, p.ProducerState(2, 6)
    )
    assert decide(state, p.Producer("a", 2, 5)).verdict is p.Verdict.DUPLICATE
    assert decide(state, p.Producer("a", 2, 0)).status == 204
    assert decide(state, p.Producer("a", 2, 8)).status == 409
    assert decide(state, p.Producer("a", 1, 9)).status == 403
    assert decide(state, p.Producer("a", 3, 0)).state == p.ProducerState(3, 0)
    assert decide(state, p.Producer("a", 3, 1)).status == 400


@given(
    st.integers(min_value=0, max_value=5),
    st.integers(min_value=0, max_value=20),
    st.integers(min_value=0, max_value=5),
    st.integers(min_value=0, max_value=20),
)
def test_an_accepted_append_always_moves_the_producer_forward(
    epoch: int, last: int, new_epoch: int, seq: int
) -> None:
    state = p.ProducerState(epoch, last)
    decision = p.decide_producer(state, p.Producer("a", new_epoch, seq))
    if decision.verdict is p.Verdict.ACCEPT:
        assert decision.state is not None
        assert (decision.state.epoch, decision.state.last_seq) > (epoch, last)
    else:
        assert decision.state == state  # nothing changes unless accepted


# JSON mode


@given(st.lists(json_values, min_size=1, max_size=5))
def test_a_json_array_is_flattened_one_level(values: list[object]) -> None:
    messages = p.split_json(json.dumps(values).encode(), allow_empty=False)
    assert [json.loads(m) for m in messages] == values
    assert json.loads(p.join_json(messages)) == values


@given(json_values.filter(lambda v: not isinstance(v, list)))
def test_a_json_value_is_one_message(value: object) -> None:
    messages = p.split_json(json.dumps(value).encode(), allow_empty=False)
    assert [json.loads(m) for m in messages] == [value]


def test_json_mode_refusals() -> None:
    with pytest.raises(p.ProtocolError, match="empty JSON array") as empty:
        p.split_json(b"[]", allow_empty=False)
    assert empty.value.status == 400
    assert p.split_json(b"[]", allow_empty=True) == []
    with pytest.raises(p.ProtocolError, match="not valid JSON"):
        p.split_json(b"{nope", allow_empty=False)
    assert p.join_json([]) == b"[]"


# SSE and cursors


def _events(text: str) -> list[tuple[str, str]]:
    """A minimal SSE reader, as a browser's EventSource reads."""
    events = []
    for block in text.split("\n\n"):
        if not block:
            continue
        kind, data = "", []
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                kind = value
            elif field == "data":
                data.append(value)
        events.append((kind, "\n".join(data)))
    return events


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=50))
def test_a_text_data_event_carries_its_text_as_one_event(text: str) -> None:
    events = _events(p.data_event(text.encode(), binary=False).decode())
    normalized = text.replace("\r\n", "\n").replace("\r", "\n")
    assert events == [("data", normalized)]  # a CR or LF can never start another event


@given(st.binary(max_size=100))
def test_a_binary_data_event_is_base64(data: bytes) -> None:
    [(kind, payload)] = _events(p.data_event(data, binary=True).decode())
    assert kind == "data"
    assert base64.b64decode(payload) == data


def test_control_events() -> None:
    [(kind, payload)] = _events(p.control_event("o31", "7", up_to_date=True).decode())
    assert kind == "control"
    assert json.loads(payload) == {"streamNextOffset": "o31", "streamCursor": "7", "upToDate": True}
    closed = json.loads(_events(p.control_event("o31", "7", closed=True).decode())[0][1])
    assert closed == {"streamNextOffset": "o31", "streamClosed": True}


@given(
    st.floats(min_value=p.CURSOR_EPOCH, max_value=p.CURSOR_EPOCH + 10**9),
    st.none() | st.integers(min_value=0, max_value=10**8).map(str) | st.text(max_size=5),
)
def test_cursors_never_go_back(now: float, client: str | None) -> None:
    cursor = int(p.cursor_for(now, client, random.Random(0)))
    interval = int((now - p.CURSOR_EPOCH) // p.CURSOR_INTERVAL)
    assert cursor >= interval
    if client is not None and client.isdigit() and client.isascii():
        assert cursor > int(client) or int(client) < interval


def test_content_types() -> None:
    assert p.normalize_content_type(None) == "application/octet-stream"
    assert p.normalize_content_type("Text/Plain;Charset=UTF-8") == "text/plain; charset=utf-8"
    assert p.is_json("application/json; charset=utf-8")
    assert p.sse_binary("application/octet-stream")
    assert not p.sse_binary("text/plain")
    assert p.parse_bool_header("True")
    assert not p.parse_bool_header(None)
