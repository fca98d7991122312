"""Property tests for every pure wire parser: any input gives a value or an ``RpcError`` with
the right code, never another exception; deframing is linear in its input.

Bounded in CI (``RPCKIT_FUZZ_EXAMPLES``, default 200 per test); set it higher for a long run,
e.g. ``RPCKIT_FUZZ_EXAMPLES=20000 pytest tests/hardening/test_fuzz.py``.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable

import cbor2
import pytest
from google.protobuf import struct_pb2
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.streams.v1.streams_pb2 import Dog
from rpckit.encodings import encodings
from rpckit.errors import Code, RpcError
from rpckit.files import parse_content_disposition, sanitize_filename, truncate_utf8
from rpckit.http.connect.protocol import parse_end_stream
from rpckit.http.rest.framing import deframer_for, parse_accept, sse_event
from rpckit.http.rest.ranges import (
    UNSATISFIABLE,
    if_range_matches,
    not_modified,
    parse_etags,
    parse_http_date,
    parse_range,
    precondition_failed,
)
from rpckit.http.wire import EnvelopeReader, parse_timeout
from rpckit.metadata import Metadata
from rpckit.nesting import MAX_DEPTH, CborScan, check_json_depth
from rpckit.numbers import parse_int, try_int
from rpckit.serving.guard import ambiguous_framing
from rpckit.wellknown import declared_size

EXAMPLES = int(os.environ.get("RPCKIT_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INVALID = {Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED}
SEQUENCES = [
    "application/x-ndjson",
    "application/cbor-seq",
    "application/vnd.msgpack-seq",
    "application/x-protobuf-delimited",
]


def _error(call: Callable[[], object]) -> RpcError | None:
    """The RpcError ``call`` raises, or None; any other exception fails the test."""
    try:
        call()
    except RpcError as error:
        return error
    return None


# Text that looks like numbers: ASCII and other Unicode digits, signs, spaces, long runs.
numberish = st.one_of(
    st.text(alphabet="0123456789+- _²٣\u0660", max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.just("9" * 5000),
    st.text(max_size=20),
)


@FUZZ
@given(numberish)
def test_numbers(text: str) -> None:
    value = try_int(text)
    if value is not None:
        assert 0 <= value <= 2**63 - 1
        assert text.isascii()
        assert text.isdigit()
    error = _error(lambda: parse_int(text, "n", signed=True, minimum=-5, maximum=5))
    if error is not None:
        assert error.code is Code.INVALID_ARGUMENT
        assert "\n" not in error.message


@FUZZ
@given(numberish)
def test_connect_timeout(text: str) -> None:
    error = _error(lambda: parse_timeout(text))
    if error is not None:
        assert error.code is Code.INVALID_ARGUMENT
    else:
        seconds = parse_timeout(text)
        assert seconds is not None
        assert 0 <= seconds < 1e7


@FUZZ
@given(numberish)
def test_declared_size(text: str) -> None:
    size = declared_size(Metadata([("x-content-size", text)]))
    assert size is None or size >= -1


@FUZZ
@given(
    st.one_of(st.text(max_size=40), numberish.map(lambda n: f"bytes={n}-{n}")),
    st.integers(0, 10**6),
)
def test_range(header: str, size: int) -> None:
    span = parse_range(header, size)
    if span is not None and span is not UNSATISFIABLE:
        start, end = span
        assert 0 <= start <= end < size


@FUZZ
@given(st.text(max_size=60), st.text(max_size=30))
def test_conditional_headers(value: str, etag: str) -> None:
    parse_etags(value)
    parse_http_date(value)
    headers = {"if-none-match": value, "if-modified-since": value, "if-match": value}
    not_modified(headers, '"' + etag.replace('"', "") + '"', 1e9)
    precondition_failed(headers, '"x"', 1e9)
    if_range_matches(value, '"x"', 1e9)


@FUZZ
@given(st.text(max_size=80), st.text(max_size=20), st.text(max_size=20))
def test_sse_fields_stay_in_their_event(data: str, id: str, event: str) -> None:
    frame = sse_event(data, id=id, event=event, retry=5)
    assert frame.endswith(b"\n\n")
    assert b"\n\n" not in frame[:-2]  # one event, whatever the fields hold


@FUZZ
@given(st.text(max_size=120))
def test_accept_and_disposition(value: str) -> None:
    for media in parse_accept(value):
        assert 0 <= media.quality <= 1
    name = sanitize_filename(parse_content_disposition(value))
    if name is not None:
        assert "/" not in name
        assert len(name.encode()) <= 255
        assert len(truncate_utf8(name, 255, " (999)").encode()) <= 255


@FUZZ
@given(st.lists(st.tuples(st.text(max_size=10), st.text(max_size=10)), max_size=5))
def test_metadata_and_framing_headers(pairs: list[tuple[str, str]]) -> None:
    metadata = Metadata(pairs)
    for key, _ in pairs:
        assert metadata.get(key) is not None or key != key.lower()
    raw = [(k.encode("utf-8"), v.encode("utf-8")) for k, v in pairs]
    assert ambiguous_framing(raw) == (
        {"content-length", "transfer-encoding"} <= {k.lower() for k, _ in pairs}
    )


@FUZZ
@given(st.binary(max_size=300))
def test_end_stream_message(data: bytes) -> None:
    error, _ = parse_end_stream(data)
    assert error is None or isinstance(error, RpcError)


@FUZZ
@given(st.binary(max_size=400), st.integers(1, 50))
def test_envelopes(data: bytes, piece: int) -> None:
    reader = EnvelopeReader(max_size=100)

    def read() -> None:
        for start in range(0, len(data), piece):
            for flags, message in reader.feed(data[start : start + piece]):
                assert 0 <= flags <= 255
                assert len(message) <= 100
        reader.close()

    error = _error(read)
    assert error is None or error.code in INVALID


@FUZZ
@given(st.sampled_from(SEQUENCES), st.binary(max_size=400), st.integers(1, 64))
def test_deframers(content_type: str, data: bytes, piece: int) -> None:
    deframer = deframer_for(content_type, Dog, encodings, 200)

    def read() -> None:
        for start in range(0, len(data), piece):
            for message in deframer.feed(data[start : start + piece]):
                assert isinstance(message, Dog)
        deframer.close()

    error = _error(read)
    assert error is None or error.code in INVALID, error


@FUZZ
@given(st.sampled_from(["json", "cbor", "msgpack", "proto"]), st.binary(max_size=300))
def test_codecs(name: str, data: bytes) -> None:
    encoding = encodings.get(name)
    assert encoding is not None
    for message_type in (Dog, struct_pb2.Value):
        error = _error(lambda t=message_type: encoding.decode(data, t))  # type: ignore[misc]
        assert error is None or error.code is Code.INVALID_ARGUMENT


# --- nesting: rpckit's own bound, the same on every Python -------------------------------


def _json_nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# One-element arrays nested ``depth`` deep around the number 1, written byte by byte (an
# encoder would recurse as deep as the value).
_NESTED: dict[str, Callable[[int], bytes]] = {
    "json": lambda depth: b"[" * depth + b"1" + b"]" * depth,
    "cbor": lambda depth: b"\x81" * depth + b"\x01",
    "msgpack": lambda depth: b"\x91" * depth + b"\x01",
}


@pytest.mark.parametrize("name", ["json", "cbor", "msgpack"])
def test_nesting_bound_is_exact(name: str) -> None:
    encoding = encodings.get(name)
    assert encoding is not None
    data = _NESTED[name]

    # google.protobuf.Value holds any JSON value (two message levels per array level, so
    # protobuf's own limit of 100 messages allows ~49); past 100, rpckit refuses first.
    encoding.decode(data(40), struct_pb2.Value)
    for depth in (MAX_DEPTH + 1, 100_000):
        with pytest.raises(RpcError) as caught:
            encoding.decode(data(depth), struct_pb2.Value)
        assert caught.value.code is Code.INVALID_ARGUMENT
        assert f"nested deeper than {MAX_DEPTH} levels" in caught.value.message


def test_json_depth_check_ignores_brackets_in_strings() -> None:
    check_json_depth(json.dumps({"a": "[" * 1000}).encode())
    with pytest.raises(RpcError):
        check_json_depth(_json_nested(MAX_DEPTH + 1))


# --- linear deframing: counted work, not timing ------------------------------------------


def test_cbor_item_in_many_pieces_is_decoded_once() -> None:
    item = cbor2.dumps({"name": "x" * 200_000})
    deframer = deframer_for("application/cbor-seq", Dog, encodings, 4 << 20)
    messages: list[Message] = []
    for start in range(0, len(item), 2048):
        messages += deframer.feed(item[start : start + 2048])
    deframer.close()
    assert len(messages) == 1
    assert deframer.decodes == 1  # type: ignore[attr-defined]
    assert deframer.scan.pos == 0  # type: ignore[attr-defined]


class _CountingScan(CborScan):
    """Counts the item headers examined (the scanner's unit of work)."""

    def __init__(self) -> None:
        super().__init__()
        self.work = 0

    def item_end(self, buffer: bytes | bytearray | memoryview) -> int | None:
        before = self.pos
        end = super().item_end(buffer)
        self.work += (self.pos if end is None else end) - before + 1
        return end


@pytest.mark.parametrize("pieces", [1, 64, 4096])
def test_cbor_scan_work_is_linear(pieces: int) -> None:
    item = cbor2.dumps([{"name": "dog", "age": i} for i in range(2000)])
    scan = _CountingScan()
    step = max(1, len(item) // pieces)
    end = None
    for stop in range(step, len(item) + step, step):
        end = scan.item_end(item[: min(stop, len(item))])
    assert end == len(item)
    assert scan.work <= len(item) + 10 * pieces + 1  # a header cut by a piece is re-read


def _envelopes(count: int) -> bytes:
    body = b'{"name":"x"}'
    return struct.pack(">BI", 0, len(body)) * 0 + b"".join(
        struct.pack(">BI", 0, len(body)) + body for _ in range(count)
    )


def test_many_messages_in_one_chunk_cost_linear_copying() -> None:
    """bytearray prefix deletion once per chunk, not per message: the buffer is empty after
    each chunk and every message is produced (work measured as bytes moved)."""
    for count in (1000, 4000):
        reader = EnvelopeReader(max_size=100)
        messages = list(reader.feed(_envelopes(count)))
        assert len(messages) == count
        reader.close()
    lines = deframer_for("application/x-ndjson", Dog, encodings, 100)
    assert len(list(lines.feed(b'{"name":"x"}\n' * 4000))) == 4000
    assert lines.searched == 0  # type: ignore[attr-defined]
