"""Unit tests, free of I/O, for rpckit/http/rest/framing.py and rpckit/http/rest/routes.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import cbor2
import msgpack  # type: ignore[import-untyped]  # msgpack ships no stubs
import pytest
from google.api.httpbody_pb2 import HttpBody
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from google.rpc import status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.streams.v1.streams_pb2 import (
    Dog,
    DownloadFileRequest,
    GetDogRequest,
    ListFilesResponse,
    TextStreamRequest,
)
from rpckit.encodings import EncodingRegistry, JsonEncoding, encodings
from rpckit.errors import Code, RpcError
from rpckit.http.rest.framing import (
    ERROR_SENTINEL,
    KEEP_ALIVE,
    Deframer,
    Framing,
    NotAcceptable,
    UnsupportedMediaType,
    accepted_types,
    deframer_for,
    negotiate_framing,
    negotiate_single,
    negotiate_stream,
    parse_accept,
    request_encoding,
    sse_event,
    varint,
)
from rpckit.http.rest.routes import PathTemplate, bind_request, body_type
from rpckit.v1.stream_pb2 import Bytes, Text

DOGS = [Dog(name="Rex", age=3), Dog(name="Fido"), Dog(name="Bella «b»", age=7)]
FAILURE = RpcError(Code.DATA_LOSS, "disk on fire")

# --- varint --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (16384, b"\x80\x80\x01"),
        (ERROR_SENTINEL, b"\xff\xff\xff\xff\x0f"),
        (2**64 - 1, b"\xff" * 9 + b"\x01"),
    ],
)
def test_varint(value: int, encoded: bytes) -> None:
    assert varint(value) == encoded


def test_varint_matches_protobuf_length_prefix() -> None:
    # a message whose field 1 is a 300-byte string: tag 0x0a, then varint(300)
    data = Dog(name="x" * 300).SerializeToString()
    assert data[:3] == b"\x0a" + varint(300)


# --- sse_event -----------------------------------------------------------------------------


def test_sse_event_data_only() -> None:
    assert sse_event("hello") == b"data: hello\n\n"
    assert sse_event("") == b"data: \n\n"


def test_sse_event_all_fields_in_order() -> None:
    assert sse_event("x", id="7", event="tick", retry=1500) == (
        b"id: 7\nevent: tick\nretry: 1500\ndata: x\n\n"
    )


@pytest.mark.parametrize("text", ["a\nb\n\nc", "a\r\nb\r\n\r\nc"])
def test_sse_event_multi_line_data(text: str) -> None:
    assert sse_event(text) == b"data: a\ndata: b\ndata: \ndata: c\n\n"


def test_sse_event_id_and_event_stay_on_one_line() -> None:
    out = sse_event("x", id="1\r\n2", event="a\nb")
    assert out == b"id: 12\nevent: ab\ndata: x\n\n"


def test_sse_event_non_ascii() -> None:
    assert sse_event("héllo «x»") == "data: héllo «x»\n\n".encode()


def test_sse_event_lone_cr_is_a_line_break() -> None:
    assert b"\r" not in sse_event("a\rb")


# --- negotiate_framing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "content_type", "kind", "encoding"),
    [
        (None, "application/x-ndjson", "ndjson", "json"),
        ("", "application/x-ndjson", "ndjson", "json"),
        ("*/*", "application/x-ndjson", "ndjson", "json"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", "application/x-ndjson", "ndjson", "json"),
        ("application/json", "application/x-ndjson", "ndjson", "json"),
        ("application/jsonl", "application/jsonl", "ndjson", "json"),
        ("text/event-stream", "text/event-stream", "sse", "json"),
        ("Text/Event-Stream", "text/event-stream", "sse", "json"),
        ("application/cbor-seq", "application/cbor-seq", "cbor", "cbor"),
        ("application/vnd.msgpack-seq", "application/vnd.msgpack-seq", "msgpack", "msgpack"),
        (
            "application/x-protobuf-delimited",
            "application/x-protobuf-delimited",
            "delimited",
            "proto",
        ),
        # q-values rank; ties keep the header's order; q=0 and bad q are refusals
        (
            "application/cbor-seq;q=0.5, application/vnd.msgpack-seq",
            "application/vnd.msgpack-seq",
            "msgpack",
            "msgpack",
        ),
        (
            "application/x-protobuf-delimited;q=0.1, application/cbor-seq;q=0.2",
            "application/cbor-seq",
            "cbor",
            "cbor",
        ),
        (
            "application/cbor-seq;q=0.7, text/event-stream;q=0.7",
            "application/cbor-seq",
            "cbor",
            "cbor",
        ),
        ("text/event-stream;q=0, */*", "application/x-ndjson", "ndjson", "json"),
        ("text/event-stream;q=abc", "application/x-ndjson", "ndjson", "json"),
        ("image/png, text/event-stream ; q=0.3", "text/event-stream", "sse", "json"),
    ],
)
def test_negotiate_framing(accept: str | None, content_type: str, kind: str, encoding: str) -> None:
    framing = negotiate_framing(accept, encodings)
    assert (framing.content_type, framing.kind) == (content_type, kind)
    assert framing.encoding is encodings.get(encoding)


def test_negotiate_framing_skips_unregistered_encodings() -> None:
    registry = EncodingRegistry()
    registry.register(JsonEncoding())
    framing = negotiate_framing("application/cbor-seq, text/event-stream;q=0.5", registry)
    assert framing.kind == "sse"
    assert negotiate_framing("application/cbor-seq", registry).kind == "ndjson"


# --- negotiate_stream / negotiate_single / request_encoding ---------------------------------


@pytest.mark.parametrize(
    ("accept", "content_type", "kind"),
    [
        # the common names of MessagePack and CBOR select their sequences on a stream
        ("application/vnd.msgpack", "application/vnd.msgpack-seq", "msgpack"),
        ("application/msgpack", "application/vnd.msgpack-seq", "msgpack"),
        ("application/x-msgpack", "application/vnd.msgpack-seq", "msgpack"),
        ("application/cbor", "application/cbor-seq", "cbor"),
        ("application/x-protobuf", "application/x-protobuf-delimited", "delimited"),
        ("application/ndjson", "application/ndjson", "ndjson"),
        # axios' default and a browser's navigation Accept still get the default
        ("application/json, text/plain, */*", "application/x-ndjson", "ndjson"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", "application/x-ndjson", "ndjson"),
        # a named type beats a wildcard of the same q; the more specific range sets the q
        ("*/*, application/cbor", "application/cbor-seq", "cbor"),
        (
            "application/*;q=0.2, application/msgpack;q=0.9",
            "application/vnd.msgpack-seq",
            "msgpack",
        ),
        ("application/x-ndjson;q=0, application/*", "application/jsonl", "ndjson"),
        ("*", "application/x-ndjson", "ndjson"),
        ("nonsense", "application/x-ndjson", "ndjson"),  # no usable range: as if absent
    ],
)
def test_negotiate_stream_media_types_clients_send(
    accept: str, content_type: str, kind: str
) -> None:
    framing = negotiate_stream(accept, Dog, encodings)
    assert framing is not None
    assert (framing.content_type, framing.kind) == (content_type, kind)


@pytest.mark.parametrize("accept", ["text/html", "image/png, text/csv", "text/event-stream;q=0"])
def test_negotiate_stream_not_acceptable_lists_offers(accept: str) -> None:
    with pytest.raises(NotAcceptable) as caught:
        negotiate_stream(accept, Dog, encodings)
    error = caught.value
    assert (error.http_status, error.code) == (406, Code.INVALID_ARGUMENT)
    assert error.offered == (
        "application/x-ndjson", "text/event-stream", "application/cbor-seq",
        "application/vnd.msgpack-seq", "application/x-protobuf-delimited",
        # Dioxus' framed item types, after rpckit's own
        "application/stream+json", "application/stream+cbor", "application/stream+msgpack",
        "application/stream+postcard",
    )  # fmt: skip
    assert error.message.endswith("this route offers: " + ", ".join(error.offered))
    assert "\n" not in error.message


def test_negotiate_stream_offers_only_registered_encodings() -> None:
    registry = EncodingRegistry()
    registry.register(JsonEncoding())
    with pytest.raises(NotAcceptable) as caught:
        negotiate_stream("application/msgpack", Dog, registry)
    assert caught.value.offered == (
        "application/x-ndjson", "text/event-stream", "application/stream+json",
    )  # fmt: skip


def test_negotiate_stream_text_and_raw_outputs() -> None:
    for accept in (None, "*/*", "text/plain", "text/*", "text/plain, application/x-ndjson"):
        assert negotiate_stream(accept, Text, encodings) is None  # raw text
    framing = negotiate_stream("application/x-ndjson, text/plain;q=0.5", Text, encodings)
    assert framing is not None
    assert framing.kind == "ndjson"
    with pytest.raises(NotAcceptable) as caught:
        negotiate_stream("text/html", Text, encodings)
    assert caught.value.offered[0] == "text/plain"
    # bytes and files carry the handler's own content type: never refused
    assert negotiate_stream("text/html", Bytes, encodings) is None
    assert negotiate_stream("text/html", HttpBody, encodings) is None


@pytest.mark.parametrize(
    ("accept", "codec", "content_type"),
    [
        (None, "json", "application/json"),
        ("*/*", "json", "application/json"),
        ("application/vnd.msgpack", "msgpack", "application/vnd.msgpack"),
        ("application/x-msgpack", "msgpack", "application/x-msgpack"),
        ("application/msgpack", "msgpack", "application/msgpack"),
        ("application/cbor;q=0.9, application/json;q=0.8", "cbor", "application/cbor"),
        ("application/x-protobuf", "proto", "application/x-protobuf"),
        ("application/*", "json", "application/json"),
    ],
)
def test_negotiate_single(accept: str | None, codec: str, content_type: str) -> None:
    chosen = negotiate_single(accept, encodings)
    assert chosen.encoding is encodings.get(codec)
    assert chosen.content_type == content_type


def test_negotiate_single_not_acceptable() -> None:
    with pytest.raises(NotAcceptable) as caught:
        negotiate_single("text/html, image/*", encodings)
    assert caught.value.http_status == 406
    assert caught.value.offered == (
        "application/json", "application/proto", "application/cbor", "application/msgpack",
        "application/postcard",
    )  # fmt: skip


def test_request_encoding_knows_the_common_names() -> None:
    assert request_encoding(None, encodings) is encodings.get("json")
    assert request_encoding("application/json; charset=utf-8", encodings).name == "json"
    for media in ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack"):
        assert request_encoding(media, encodings).name == "msgpack"
    assert request_encoding("application/x-protobuf", encodings).name == "proto"
    with pytest.raises(UnsupportedMediaType) as caught:
        request_encoding("text/csv", encodings)
    assert (caught.value.http_status, caught.value.code) == (415, Code.UNIMPLEMENTED)
    assert "unsupported request content type 'text/csv'; accepted: application/json" in str(
        caught.value
    )


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [("application/msgpack", "msgpack"), ("application/x-msgpack", "msgpack"),
     ("application/vnd.msgpack", "msgpack"), ("application/cbor", "cbor")],
)  # fmt: skip
def test_deframer_for_common_names(content_type: str, kind: str) -> None:
    item = {"name": "Rex", "age": 3}
    data = msgpack.packb(item) if kind == "msgpack" else cbor2.dumps(item)
    assert _feed_all(_deframer(content_type), iter([data, data])) == [DOGS[0], DOGS[0]]


_ACCEPT_TEXT = st.text(
    alphabet=st.sampled_from(list("abcx/*;=q,. 0123456789-+_\t\"é")), max_size=60
) | st.lists(
    st.sampled_from(
        ["application/msgpack", "text/event-stream", "*/*", "text/*", "application/*",
         "text/plain", "application/cbor", "text/html", ";q=0", ";q=0.5", ";q=1.0", ";q=x"]
    ),
    max_size=6,
).map(", ".join)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(accept=_ACCEPT_TEXT, output=st.sampled_from([Dog, Text, Bytes]))
def test_negotiation_never_fails_otherwise(accept: str, output: type[Message]) -> None:
    ranges = parse_accept(accept)
    assert all(0 <= r.quality <= 1 for r in ranges)
    outcome: Framing | NotAcceptable | None
    try:
        outcome = negotiate_stream(accept, output, encodings)
    except NotAcceptable as error:
        outcome = error
    if isinstance(outcome, NotAcceptable):
        assert outcome.offered
        assert output is not Bytes
    else:
        assert outcome is None or outcome.kind in ("ndjson", "sse", "cbor", "msgpack", "delimited")
    single: object
    try:
        single = negotiate_single(accept, encodings).encoding
    except NotAcceptable as error:
        single = error.http_status
    assert single == 406 or single in [encodings.get(name) for name in encodings.names()]


def test_accepted_types_sees_sse() -> None:
    assert "text/event-stream" in accepted_types("text/event-stream")
    assert "text/event-stream" in accepted_types("application/json, text/event-stream;q=0.1")
    assert "text/event-stream" not in accepted_types("text/event-stream;q=0")
    assert "text/event-stream" not in accepted_types("*/*")
    assert accepted_types(None) == []


# --- Framing.item / error / end ------------------------------------------------------------


def _framing(accept: str) -> Framing:
    return negotiate_framing(accept, encodings)


def test_ndjson_framing() -> None:
    framing = _framing("application/x-ndjson")
    assert framing.item(DOGS[0]) == b'{"name":"Rex","age":3}\n'
    assert framing.error(FAILURE) == b'{"error":{"code":"data_loss","message":"disk on fire"}}\n'
    assert framing.end() == b""


def test_sse_framing() -> None:
    framing = _framing("text/event-stream")
    assert framing.item(DOGS[0]) == b'data: {"name":"Rex","age":3}\n\n'
    assert framing.item(Text(text="ignored"), text="a\nb") == b"data: a\ndata: b\n\n"
    assert framing.error(FAILURE) == (
        b'event: error\ndata: {"code":"data_loss","message":"disk on fire"}\n\n'
    )
    assert framing.end() == b"event: end\ndata: \n\n"
    assert KEEP_ALIVE == b": keep-alive\n\n"


def test_cbor_framing() -> None:
    framing = _framing("application/cbor-seq")
    assert cbor2.loads(framing.item(DOGS[0])) == {"name": "Rex", "age": 3}
    error = framing.error(FAILURE)
    assert error is not None
    assert cbor2.loads(error) == {"error": {"code": "data_loss", "message": "disk on fire"}}
    assert framing.end() == b""


def test_msgpack_framing() -> None:
    framing = _framing("application/vnd.msgpack-seq")
    assert msgpack.unpackb(framing.item(DOGS[0]), raw=False) == {"name": "Rex", "age": 3}
    error = framing.error(FAILURE)
    assert error is not None
    assert msgpack.unpackb(error, raw=False) == {
        "error": {"code": "data_loss", "message": "disk on fire"}
    }
    assert framing.end() == b""


def test_delimited_framing() -> None:
    framing = _framing("application/x-protobuf-delimited")
    data = DOGS[0].SerializeToString()
    assert framing.item(DOGS[0]) == varint(len(data)) + data
    assert framing.item(Dog()) == b"\x00"
    error = framing.error(FAILURE)
    assert error is not None
    status = status_pb2.Status(code=15, message="disk on fire").SerializeToString()
    assert error == b"\xff\xff\xff\xff\x0f" + varint(len(status)) + status
    assert framing.end() == b""


def test_raw_framing_has_no_error_record() -> None:
    framing = Framing("text/plain; charset=utf-8", "raw")
    assert framing.error(FAILURE) is None
    assert framing.end() == b""


def test_error_record_without_message() -> None:
    framing = _framing("application/x-ndjson")
    assert framing.error(RpcError(Code.INTERNAL, "")) == b'{"error":{"code":"internal"}}\n'


# --- Deframers ------------------------------------------------------------------------------

MAX = 1024


def _bodies() -> dict[str, bytes]:
    trees = [{"name": d.name, **({"age": d.age} if d.age else {})} for d in DOGS]
    return {
        "application/x-ndjson": b"".join(json.dumps(t).encode() + b"\n" for t in trees),
        "application/cbor-seq": b"".join(cbor2.dumps(t) for t in trees),
        "application/vnd.msgpack-seq": b"".join(msgpack.packb(t) for t in trees),
        "application/x-protobuf-delimited": b"".join(
            varint(d.ByteSize()) + d.SerializeToString() for d in DOGS
        ),
    }


BODIES = _bodies()


def _deframer(content_type: str | None, max_size: int = MAX) -> Deframer:
    return deframer_for(content_type, Dog, encodings, max_size)


def _feed_all(deframer: Deframer, chunks: Iterator[bytes]) -> list[Message]:
    out: list[Message] = []
    for chunk in chunks:
        out.extend(deframer.feed(chunk))
    deframer.close()
    return out


def _bytewise(data: bytes) -> Iterator[bytes]:
    return (data[i : i + 1] for i in range(len(data)))


@pytest.mark.parametrize("content_type", list(BODIES))
@pytest.mark.parametrize("split", ["one chunk", "byte by byte"])
def test_deframer_round_trip(content_type: str, split: str) -> None:
    body = BODIES[content_type]
    chunks = iter([body]) if split == "one chunk" else _bytewise(body)
    assert _feed_all(_deframer(content_type), chunks) == DOGS


@pytest.mark.parametrize("content_type", list(BODIES))
def test_deframer_yields_items_as_soon_as_complete(content_type: str) -> None:
    body = BODIES[content_type]
    deframer = _deframer(content_type)
    seen: list[int] = []  # how many messages had come out after each byte
    count = 0
    for byte in _bytewise(body):
        count += len(list(deframer.feed(byte)))
        seen.append(count)
    deframer.close()
    assert count == len(DOGS)
    assert seen[-1] == len(DOGS)
    assert seen.count(len(DOGS)) == 1  # the last message came out with the very last byte


@pytest.mark.parametrize(
    "content_type",
    [None, "application/x-ndjson; charset=utf-8", "APPLICATION/JSONL"],
)
def test_deframer_ndjson_variants(content_type: str | None) -> None:
    body = BODIES["application/x-ndjson"]
    assert _feed_all(_deframer(content_type), iter([body])) == DOGS


def test_ndjson_blank_lines_and_crlf() -> None:
    body = b'\n{"name":"Rex","age":3}\r\n\n  \n{"name":"Fido"}\n'
    assert _feed_all(_deframer(None), iter([body])) == DOGS[:2]


def test_ndjson_ignores_unknown_fields() -> None:
    # JsonEncoding.decode documents that unknown fields are ignored
    assert _feed_all(_deframer(None), iter([b'{"name":"Rex","nom":1}\n'])) == [Dog(name="Rex")]


def test_empty_bodies() -> None:
    for content_type in BODIES:
        assert _feed_all(_deframer(content_type), iter([b""])) == []


@pytest.mark.parametrize(
    ("content_type", "body", "code", "needle"),
    [
        ("application/x-ndjson", b'{"name":"Rex"}', Code.INVALID_ARGUMENT, "no newline"),
        ("application/x-ndjson", b'{"name":"Re', Code.INVALID_ARGUMENT, "json"),
        ("application/x-ndjson", b"{bad}\n", Code.INVALID_ARGUMENT, "json"),
        ("application/x-protobuf-delimited", varint(10) + b"abc", Code.INVALID_ARGUMENT, "inside"),
        ("application/x-protobuf-delimited", b"\x80\x80", Code.INVALID_ARGUMENT, "inside"),
        ("application/x-protobuf-delimited", b"\x80" * 11, Code.INVALID_ARGUMENT, "varint"),
        ("application/x-protobuf-delimited", b"\x02\xff\xff", Code.INVALID_ARGUMENT, "proto"),
        ("application/cbor-seq", cbor2.dumps({"name": "Rex"})[:-1], Code.INVALID_ARGUMENT, "item"),
        ("application/cbor-seq", cbor2.dumps([1, 2]), Code.INVALID_ARGUMENT, "cbor"),
        ("application/cbor-seq", b"\xff", Code.INVALID_ARGUMENT, "cbor"),
        (
            "application/vnd.msgpack-seq",
            msgpack.packb({"name": "Rex"})[:-1],
            Code.INVALID_ARGUMENT,
            "item",
        ),
        ("application/vnd.msgpack-seq", b"\xc1", Code.INVALID_ARGUMENT, "msgpack"),
    ],
)
@pytest.mark.parametrize("split", ["one chunk", "byte by byte"])
def test_deframer_rejects(
    content_type: str, body: bytes, code: Code, needle: str, split: str
) -> None:
    chunks = iter([body]) if split == "one chunk" else _bytewise(body)
    with pytest.raises(RpcError) as caught:
        _feed_all(_deframer(content_type), chunks)
    assert caught.value.code is code
    assert needle in caught.value.message.lower()
    assert "\n" not in caught.value.message


def _big_body(content_type: str) -> bytes:
    dog = Dog(name="x" * 100)
    tree = {"name": dog.name}
    bodies: dict[str, bytes] = {
        "application/x-ndjson": json.dumps(tree).encode() + b"\n",
        "application/cbor-seq": cbor2.dumps(tree),
        "application/vnd.msgpack-seq": msgpack.packb(tree),
        "application/x-protobuf-delimited": varint(dog.ByteSize()) + dog.SerializeToString(),
    }
    return bodies[content_type]


@pytest.mark.parametrize(
    "content_type",
    ["application/x-ndjson", "application/cbor-seq", "application/x-protobuf-delimited"],
)
def test_deframer_oversized_item_byte_by_byte(content_type: str) -> None:
    with pytest.raises(RpcError) as caught:
        _feed_all(_deframer(content_type, max_size=50), _bytewise(_big_body(content_type)))
    assert caught.value.code is Code.RESOURCE_EXHAUSTED


def test_delimited_oversized_length_fails_before_the_body() -> None:
    deframer = _deframer("application/x-protobuf-delimited", max_size=50)
    with pytest.raises(RpcError) as caught:
        list(deframer.feed(varint(51)))
    assert caught.value.code is Code.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("content_type", ["application/x-ndjson", "application/cbor-seq"])
def test_deframer_oversized_item_one_chunk(content_type: str) -> None:
    with pytest.raises(RpcError) as caught:
        _feed_all(_deframer(content_type, max_size=50), iter([_big_body(content_type)]))
    assert caught.value.code is Code.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("split", ["one chunk", "byte by byte"])
def test_msgpack_oversized_item_is_resource_exhausted(split: str) -> None:
    body = _big_body("application/vnd.msgpack-seq")
    chunks = iter([body]) if split == "one chunk" else _bytewise(body)
    with pytest.raises(RpcError) as caught:
        _feed_all(_deframer("application/vnd.msgpack-seq", max_size=50), chunks)
    assert caught.value.code is Code.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("content_type", ["text/csv", "text/event-stream", "application/json"])
def test_deframer_for_unsupported_types(content_type: str) -> None:
    with pytest.raises(RpcError) as caught:
        _deframer(content_type)
    assert caught.value.code is Code.UNIMPLEMENTED
    assert "unsupported request stream type" in caught.value.message
    assert "application/x-ndjson" in caught.value.message


def test_deframer_for_unregistered_encoding() -> None:
    registry = EncodingRegistry()
    registry.register(JsonEncoding())
    with pytest.raises(RpcError) as caught:
        deframer_for("application/cbor-seq", Dog, registry, MAX)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert "cbor" in caught.value.message


# --- PathTemplate --------------------------------------------------------------------------


def test_template_plain_variable() -> None:
    template = PathTemplate.compile("/api/dogs/{index}")
    assert template.fields == ("index",)
    assert template.match("/api/dogs/3") == {"index": "3"}
    assert template.match("/api/dogs/") is None
    assert template.match("/api/dogs/3/4") is None
    assert template.match("/api/dogs/3/") is None
    assert template.match("/api/dogsX3") is None


def test_template_percent_decoding() -> None:
    template = PathTemplate.compile("/api/files/{name}")
    assert template.match("/api/files/r%C3%A9sum%C3%A9%20x.txt") == {"name": "résumé x.txt"}
    # an encoded slash stays inside one segment, decoded only after matching
    assert template.match("/api/files/..%2Fsecret.txt") == {"name": "../secret.txt"}
    assert template.match("/api/files/../secret.txt") is None


def test_template_no_variables() -> None:
    template = PathTemplate.compile("/api/files")
    assert template.fields == ()
    assert template.match("/api/files") == {}
    assert template.match("/api/files/") is None
    assert template.match("/api/filesx") is None


def test_template_variable_with_segments() -> None:
    template = PathTemplate.compile("/v1/{name=shelves/*}/books/{book_id}")
    assert template.fields == ("name", "book_id")
    assert template.match("/v1/shelves/s1/books/b2") == {"name": "shelves/s1", "book_id": "b2"}
    assert template.match("/v1/shelves/s1/x/books/b2") is None
    assert template.match("/v1/racks/s1/books/b2") is None


def test_template_double_wildcard() -> None:
    template = PathTemplate.compile("/v1/{path=files/**}")
    assert template.match("/v1/files/a/b/c.txt") == {"path": "files/a/b/c.txt"}
    assert template.match("/v1/files/a") == {"path": "files/a"}
    assert template.match("/v1/files/") is None
    literal = PathTemplate.compile("/static/**")
    assert literal.fields == ()
    assert literal.match("/static/js/app.js") == {}


def test_template_verb() -> None:
    template = PathTemplate.compile("/api/dogs:adopt")
    assert template.match("/api/dogs:adopt") == {}
    assert template.match("/api/dogs") is None
    assert template.match("/api/dogs:adoptx") is None
    assert template.match("/api/dogsXadopt") is None
    with_var = PathTemplate.compile("/v1/{name=shelves/*}:publish")
    assert with_var.match("/v1/shelves/s1:publish") == {"name": "shelves/s1"}
    assert with_var.match("/v1/shelves/s1") is None
    nested = PathTemplate.compile("/v1/{book.name}:read")
    assert nested.fields == ("book.name",)
    assert nested.match("/v1/b%3A1:read") == {"book.name": "b:1"}


def test_template_must_start_with_slash() -> None:
    with pytest.raises(ValueError, match="must start with"):
        PathTemplate.compile("api/dogs")


# --- bind_request --------------------------------------------------------------------------


def _kitchen_sink() -> type[Message]:
    """A message with one field of every kind bind_request converts."""
    file = descriptor_pb2.FileDescriptorProto(
        name="rpckit_tests/sink.proto", package="rpckit_tests", syntax="proto3"
    )
    file.enum_type.add(name="Color").value.extend(
        [
            descriptor_pb2.EnumValueDescriptorProto(name="COLOR_UNSPECIFIED", number=0),
            descriptor_pb2.EnumValueDescriptorProto(name="RED", number=1),
            descriptor_pb2.EnumValueDescriptorProto(name="GREEN", number=2),
        ]
    )
    F = descriptor_pb2.FieldDescriptorProto
    inner = file.message_type.add(name="Inner")
    inner.field.add(name="label", number=1, type=F.TYPE_STRING, json_name="label")
    inner.field.add(name="depth", number=2, type=F.TYPE_INT32, json_name="depth")
    inner.field.add(
        name="child", number=3, type=F.TYPE_MESSAGE, type_name=".rpckit_tests.Inner",
        json_name="child",
    )  # fmt: skip
    sink = file.message_type.add(name="Sink")
    scalars = [
        ("i32", F.TYPE_INT32), ("i64", F.TYPE_INT64), ("u32", F.TYPE_UINT32),
        ("u64", F.TYPE_UINT64), ("s32", F.TYPE_SINT32), ("fx32", F.TYPE_FIXED32),
        ("sfx64", F.TYPE_SFIXED64), ("flag", F.TYPE_BOOL), ("ratio", F.TYPE_DOUBLE),
        ("small", F.TYPE_FLOAT), ("blob", F.TYPE_BYTES), ("camel_case_name", F.TYPE_STRING),
    ]  # fmt: skip
    for number, (name, kind) in enumerate(scalars, start=1):
        json_name = "camelCaseName" if name == "camel_case_name" else name
        sink.field.add(name=name, number=number, type=kind, json_name=json_name)
    sink.field.add(
        name="color", number=20, type=F.TYPE_ENUM, type_name=".rpckit_tests.Color",
        json_name="color",
    )  # fmt: skip
    sink.field.add(
        name="tags", number=21, type=F.TYPE_STRING, label=F.LABEL_REPEATED, json_name="tags"
    )
    sink.field.add(
        name="nums", number=22, type=F.TYPE_INT32, label=F.LABEL_REPEATED, json_name="nums"
    )
    sink.field.add(
        name="inner", number=23, type=F.TYPE_MESSAGE, type_name=".rpckit_tests.Inner",
        json_name="inner",
    )  # fmt: skip
    sink.field.add(
        name="inners", number=24, type=F.TYPE_MESSAGE, type_name=".rpckit_tests.Inner",
        label=F.LABEL_REPEATED, json_name="inners",
    )  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("rpckit_tests.Sink"))


SINK = _kitchen_sink()


def _bind(query: list[tuple[str, str]], path: dict[str, str] | None = None) -> Message:
    return bind_request(SINK, path_params=path or {}, query=query)


def _rejects(query: list[tuple[str, str]], *needles: str) -> None:
    with pytest.raises(RpcError) as caught:
        _bind(query)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert "\n" not in caught.value.message
    for needle in needles:
        assert needle in caught.value.message


def _get(message: Message, name: str) -> object:
    return getattr(message, name)


@pytest.mark.parametrize(
    ("field", "raw", "value"),
    [
        ("i32", "-2147483648", -(2**31)),
        ("i32", "2147483647", 2**31 - 1),
        ("i32", "+7", 7),
        ("i32", " 7 ", 7),
        ("i64", "-9223372036854775808", -(2**63)),
        ("u32", "4294967295", 2**32 - 1),
        ("u64", "18446744073709551615", 2**64 - 1),
        ("s32", "-5", -5),
        ("fx32", "0", 0),
        ("sfx64", "-1", -1),
        ("flag", "true", True),
        ("flag", "TRUE", True),
        ("flag", "1", True),
        ("flag", "false", False),
        ("flag", "0", False),
        ("ratio", "2.5", 2.5),
        ("ratio", "-1e3", -1000.0),
        ("small", "0.5", 0.5),
        ("color", "GREEN", 2),
        ("color", "1", 1),
        ("camel_case_name", "x y", "x y"),
        ("camelCaseName", "héllo", "héllo"),
    ],
)
def test_bind_scalars(field: str, raw: str, value: object) -> None:
    message = _bind([(field, raw)])
    attribute = "camel_case_name" if field == "camelCaseName" else field
    assert _get(message, attribute) == value


@pytest.mark.parametrize(
    ("field", "raw", "expected"),
    [
        ("i32", "2147483648", "a 32-bit integer"),
        ("i32", "-2147483649", "a 32-bit integer"),
        ("i32", "1.5", "a 32-bit integer"),
        ("i32", "abc", "a 32-bit integer"),
        ("i32", "", "a 32-bit integer"),
        ("i64", "9223372036854775808", "a 64-bit integer"),
        ("u32", "-1", "an unsigned 32-bit integer"),
        ("u32", "4294967296", "an unsigned 32-bit integer"),
        ("u64", "-1", "an unsigned 64-bit integer"),
        ("u64", "18446744073709551616", "an unsigned 64-bit integer"),
        ("fx32", "-3", "an unsigned 32-bit integer"),
        ("flag", "yes", "true or false"),
        ("ratio", "fast", "a number"),
        ("color", "PURPLE", "one of COLOR_UNSPECIFIED, RED, GREEN"),
        ("color", "7", "one of"),
    ],
)
def test_bind_rejects_bad_values(field: str, raw: str, expected: str) -> None:
    _rejects([(field, raw)], f"query parameter {field!r}", expected, repr(raw))


def test_bind_long_values_are_shortened_in_errors() -> None:
    with pytest.raises(RpcError) as caught:
        _bind([("i32", "9" * 100)])
    assert "9" * 100 not in caught.value.message
    assert "..." in caught.value.message


def test_bind_bytes_base64_both_alphabets() -> None:
    data = bytes(range(250, 256)) + b"\x00?>"
    for encoded in (
        base64.b64encode(data).decode(),
        base64.urlsafe_b64encode(data).decode(),
        base64.urlsafe_b64encode(data).decode().rstrip("="),
    ):
        assert _get(_bind([("blob", encoded)]), "blob") == data


@pytest.mark.parametrize("raw", ["!!!", "ab$cd", "a b=c"])
def test_bind_rejects_bad_base64(raw: str) -> None:
    _rejects([("blob", raw)], "query parameter 'blob'", "base64")


def test_bind_repeated() -> None:
    message = _bind([("tags", "a"), ("nums", "1"), ("tags", "b"), ("nums", "-2")])
    assert list(_get(message, "tags")) == ["a", "b"]  # type: ignore[call-overload]
    assert list(_get(message, "nums")) == [1, -2]  # type: ignore[call-overload]


def test_bind_nested() -> None:
    message = _bind([("inner.label", "x"), ("inner.depth", "3"), ("inner.child.label", "y")])
    inner = _get(message, "inner")
    assert isinstance(inner, Message)
    assert (_get(inner, "label"), _get(inner, "depth")) == ("x", 3)
    assert _get(_get(inner, "child"), "label") == "y"  # type: ignore[arg-type]


def test_bind_unknown_and_message_fields() -> None:
    _rejects([("bogus", "1")], "unknown query parameter 'bogus'")
    _rejects([("inner.bogus", "1")], "unknown query parameter 'inner.bogus'")
    _rejects([("i32.x", "1")], "'i32.x'", "i32 is not a message")
    _rejects([("inners.label", "1")], "inners is not a message")
    _rejects([("inner", "x")], "query parameter 'inner'", "a message field cannot be set")


def test_bind_path_variables_win_over_query() -> None:
    message = bind_request(
        DownloadFileRequest, path_params={"name": "path.txt"}, query=[("name", "query.txt")]
    )
    assert message.name == "path.txt"
    with pytest.raises(RpcError) as caught:
        bind_request(GetDogRequest, path_params={"index": "x"}, query=[])
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert caught.value.message.startswith("path variable 'index'")


def test_bind_example_requests() -> None:
    request = bind_request(TextStreamRequest, path_params={}, query=[("intervalMs", "10")])
    assert request.HasField("interval_ms")
    assert not request.HasField("start")
    assert request.interval_ms == 10
    assert bind_request(TextStreamRequest, path_params={}, query=[]) == TextStreamRequest()


def test_bind_body() -> None:
    body = Dog(name="Rex", age=3)
    assert bind_request(Dog, path_params={}, query=[("age", "4")], body=body, body_field="*") == (
        Dog(name="Rex", age=4)
    )
    inner_type = body_type(SINK, "inner")
    inner = inner_type()
    setattr(inner, "label", "from body")  # noqa: B010  # dynamic message class
    message = bind_request(SINK, path_params={}, query=[], body=inner, body_field="inner")
    assert _get(_get(message, "inner"), "label") == "from body"  # type: ignore[arg-type]
    assert body_type(Dog, "*") is Dog
    assert body_type(Dog, "") is Dog
    with pytest.raises(ValueError, match="not a message field"):
        body_type(Dog, "name")
    with pytest.raises(ValueError, match="not a message field"):
        body_type(ListFilesResponse, "nope")
