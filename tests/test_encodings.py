"""Message encodings: round trips, the JSON mapping, malformed input and the registry."""

from __future__ import annotations

import json

import cbor2
import msgpack  # type: ignore[import-untyped]
import pytest
from google.api.httpbody_pb2 import HttpBody
from google.protobuf import any_pb2, json_format, timestamp_pb2, wrappers_pb2
from google.protobuf.message import Message

from examples.streams.v1.streams_pb2 import (
    Dog,
    DownloadRequest,
    TextStreamRequest,
    UploadSummary,
)
from rpckit import encodings as encodings_module
from rpckit.encodings import (
    CborEncoding,
    Encoding,
    EncodingRegistry,
    JsonEncoding,
    MsgPackEncoding,
    ProtoEncoding,
    connect_codec,
    encodings,
)
from rpckit.errors import Code, RpcError
from rpckit.v1.stream_pb2 import Bytes

BUILT_IN = ["proto", "json", "cbor", "msgpack", "postcard"]


def any_of(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


MESSAGES: list[Message] = [
    Dog(name="Dog 1", age=1),
    Dog(name="Hund \u00e9 \U0001f415", age=2**32 - 1),
    DownloadRequest(),
    Dog(),
    TextStreamRequest(start=0),
    TextStreamRequest(start=5, interval_ms=250),
    TextStreamRequest(interval_ms=10),
    UploadSummary(size=2**64 - 1, sha256="ab" * 32, filename="f.bin"),
    Bytes(data=bytes(range(256))),
    Bytes(data=b""),
    HttpBody(content_type="text/plain", data=b"\x00\xffhi", extensions=[any_of(Dog(age=2))]),
]


def get_encoding(name: str) -> Encoding:
    encoding = encodings.get(name)
    assert encoding is not None
    return encoding


def assert_invalid(encoding: Encoding, data: bytes, message_type: type[Message]) -> str:
    """Decoding fails with INVALID_ARGUMENT and a short one-line reason, which is returned."""
    with pytest.raises(RpcError) as caught:
        encoding.decode(data, message_type)
    error = caught.value
    assert type(error) is RpcError
    assert error.code is Code.INVALID_ARGUMENT
    assert error.message.startswith(f"invalid {encoding.name}: ")
    assert "\n" not in error.message
    assert "Traceback" not in error.message
    assert len(error.message) <= 200
    return error.message


# Round trips and the JSON mapping.


@pytest.mark.parametrize("name", BUILT_IN)
@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(name: str, message: Message) -> None:
    encoding = get_encoding(name)
    if name == "postcard" and type(message).DESCRIPTOR.full_name == "google.api.HttpBody":
        # HttpBody.extensions holds Any, which Postcard cannot carry: refused, clearly.
        with pytest.raises(RpcError, match=r"Postcard cannot carry google\.protobuf\.Any"):
            encoding.encode(message)
        return
    data = encoding.encode(message)
    assert isinstance(data, bytes)
    decoded = encoding.decode(data, type(message))
    assert decoded == message
    assert decoded.ListFields() == message.ListFields()


@pytest.mark.parametrize("name", BUILT_IN)
def test_optional_presence_survives(name: str) -> None:
    encoding = get_encoding(name)
    assert encoding.decode(encoding.encode(TextStreamRequest(start=0)), TextStreamRequest).HasField(
        "start"
    )
    assert not encoding.decode(encoding.encode(TextStreamRequest()), TextStreamRequest).HasField(
        "start"
    )


def test_json_is_compact_camel_case_utf8() -> None:
    encoding = get_encoding("json")
    assert encoding.encode(Dog(name="Dog 1", age=1)) == b'{"name":"Dog 1","age":1}'
    assert encoding.encode(DownloadRequest()) == b"{}"
    assert encoding.encode(TextStreamRequest(start=0, interval_ms=5)) == (
        b'{"start":0,"intervalMs":5}'
    )
    assert encoding.encode(Dog(name="\u00e9\U0001f415")) == '{"name":"\u00e9\U0001f415"}'.encode()
    assert encoding.encode(UploadSummary(size=2**64 - 1)) == b'{"size":"18446744073709551615"}'
    assert encoding.encode(Bytes(data=b"\x00\xff")) == b'{"data":"AP8="}'


def test_json_matches_protobuf_json_format() -> None:
    for message in MESSAGES:
        expected = json.loads(json_format.MessageToJson(message))
        assert json.loads(get_encoding("json").encode(message)) == expected


def test_json_accepts_both_names_and_ignores_unknown_fields() -> None:
    encoding = get_encoding("json")
    for data in (b'{"intervalMs":7}', b'{"interval_ms":7}', b'{"intervalMs":7,"newField":[1]}'):
        assert encoding.decode(data, TextStreamRequest) == TextStreamRequest(interval_ms=7)
    assert encoding.decode(b' {"size": "42"} ', UploadSummary).size == 42
    assert encoding.decode(b'{"size": 42}', UploadSummary).size == 42


def test_json_well_known_types_at_top_level() -> None:
    encoding = get_encoding("json")
    assert encoding.encode(wrappers_pb2.StringValue(value="hi")) == b'"hi"'
    assert encoding.decode(b'"hi"', wrappers_pb2.StringValue).value == "hi"
    stamp = encoding.decode(b'"2024-01-02T03:04:05Z"', timestamp_pb2.Timestamp)
    assert stamp.seconds == 1704164645
    assert get_encoding("cbor").decode(cbor2.dumps("hi"), wrappers_pb2.StringValue).value == "hi"


@pytest.mark.parametrize("name", ["cbor", "msgpack"])
@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_binary_encodings_hold_the_json_tree(name: str, message: Message) -> None:
    data = get_encoding(name).encode(message)
    tree = cbor2.loads(data) if name == "cbor" else msgpack.unpackb(data)
    assert tree == json.loads(get_encoding("json").encode(message))


def test_binary_encodings_accept_original_field_names() -> None:
    tree = {"interval_ms": 3, "unknown": {"x": [1, 2]}}
    expected = TextStreamRequest(interval_ms=3)
    assert get_encoding("cbor").decode(cbor2.dumps(tree), TextStreamRequest) == expected
    assert get_encoding("msgpack").decode(msgpack.packb(tree), TextStreamRequest) == expected


def test_content_types() -> None:
    expected = {
        "proto": ("application/proto", "application/x-protobuf-delimited"),
        "json": ("application/json", "application/x-ndjson"),
        "cbor": ("application/cbor", "application/cbor-seq"),
        "msgpack": ("application/msgpack", "application/vnd.msgpack-seq"),
    }
    for name, (single, stream) in expected.items():
        encoding = get_encoding(name)
        assert (encoding.name, encoding.content_type, encoding.stream_content_type) == (
            name,
            single,
            stream,
        )


# Malformed input.


@pytest.mark.parametrize(
    "data",
    [b"\xff", b"\x08", b"\x08\x80", b"\x0a\x05ab", b"\x0a\x01\xff", b"\x0f"],
    ids=["bad-tag", "missing-varint", "truncated-varint", "short-string", "bad-utf8", "end-group"],
)
def test_proto_malformed(data: bytes) -> None:
    assert_invalid(get_encoding("proto"), data, Dog)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"{",
        b"[1, 2]",
        b'"a string"',
        b"null",
        b"42",
        b"{} {}",
        b'{"age": "abc"}',
        b'{"age": 1.5}',
        b'{"name": 5}',
        b'{"name": ["x"]}',
        b'{"age": NaN}',
        b'{"name": "\xff"}',
        b"\xef\xbb\xbf{}",
        '{"name": "x"}'.encode("utf-16"),
        b'{"age": "' + b"9" * 1000 + b'"}',
    ],
)
def test_json_malformed(data: bytes) -> None:
    assert_invalid(get_encoding("json"), data, Dog)


def test_json_malformed_messages_are_helpful() -> None:
    encoding = get_encoding("json")
    assert assert_invalid(encoding, b"", Dog).startswith("invalid json: Expecting value")
    assert assert_invalid(encoding, b"[1]", Dog) == "invalid json: expected an object, got array"
    assert "NaN" in assert_invalid(encoding, b'{"age": NaN}', Dog)
    assert "utf-8" in assert_invalid(encoding, b"\xff", Dog)
    assert_invalid(encoding, b'{"size": "-1"}', UploadSummary)
    assert_invalid(encoding, b'"not a time"', timestamp_pb2.Timestamp)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        b"\xa1\x64name",
        cbor2.dumps(["not", "a", "map"]),
        cbor2.dumps("text"),
        cbor2.dumps({"name": "x"}) + b"\x00",
        cbor2.dumps({"name": b"raw bytes"}),
        cbor2.dumps({1: "int key"}),
        cbor2.dumps({"age": "abc"}),
        cbor2.dumps({"name": cbor2.CBORTag(1, 0)}),
        b"\xa2\x64name\x61a\x64name\x61b",
        b"\xa1\x64name\x62\xff\xfe",
    ],
    ids=[
        "empty",
        "break",
        "truncated",
        "array",
        "string",
        "trailing",
        "bytes",
        "int-key",
        "wrong-type",
        "tag",
        "duplicate-key",
        "bad-utf8",
    ],
)
def test_cbor_malformed(data: bytes) -> None:
    assert_invalid(get_encoding("cbor"), data, Dog)


def test_cbor_native_bytes_are_not_guessed_at() -> None:
    assert_invalid(get_encoding("cbor"), cbor2.dumps({"data": b"\x00\x01"}), Bytes)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x81\xa4name",
        msgpack.packb([1, 2]),
        msgpack.packb({"name": "x"}) + b"\x01",
        msgpack.packb({"name": b"raw"}),
        msgpack.packb({"data": b"\x00\x01"}),
        msgpack.packb({"age": "abc"}),
        b"\x81\xa4name\xa2\xff\xfe",
        msgpack.packb({"age": msgpack.ExtType(1, b"x")}),
    ],
    ids=[
        "empty",
        "unused-byte",
        "truncated",
        "array",
        "trailing",
        "bin-value",
        "bin-for-bytes",
        "wrong-type",
        "bad-utf8",
        "ext-type",
    ],
)
def test_msgpack_malformed(data: bytes) -> None:
    assert_invalid(get_encoding("msgpack"), data, Bytes if b"data" in data else Dog)


def test_msgpack_int_keys_rejected() -> None:
    assert_invalid(get_encoding("msgpack"), b"\x81\x01\xa1x", Dog)


def test_deep_nesting_is_invalid_not_a_crash() -> None:
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    for name, data in (
        ("json", deep),
        ("cbor", b"\xa1\x61a" * 5000 + b"\x01"),
        ("msgpack", b"\x81\xa1a" * 5000 + b"\x01"),
    ):
        assert_invalid(get_encoding(name), data, Dog)


# The registry.


class ReversedJsonEncoding:
    """A user codec for the tests: the JSON encoding's bytes, back to front."""

    name = "rjson"
    content_type = "application/x-reversed-json"
    stream_content_type = "application/x-reversed-json-seq"

    def encode(self, message: Message) -> bytes:
        return JsonEncoding().encode(message)[::-1]

    def decode(self, data: bytes, message_type: type[encodings_module.M]) -> encodings_module.M:
        return JsonEncoding().decode(data[::-1], message_type)


def test_default_registry() -> None:
    assert encodings.names() == BUILT_IN
    assert isinstance(encodings.get("proto"), ProtoEncoding)
    assert isinstance(encodings.get("json"), JsonEncoding)
    assert isinstance(encodings.get("cbor"), CborEncoding)
    assert isinstance(encodings.get("msgpack"), MsgPackEncoding)
    assert encodings.get("xml") is None
    assert encodings_module.get("json") is encodings.get("json")


def test_register_custom_encoding() -> None:
    registry = encodings.copy()
    custom: Encoding = ReversedJsonEncoding()
    registry.register(custom)
    assert registry.names() == [*BUILT_IN, "rjson"]
    assert registry.get("rjson") is custom
    assert registry.by_content_type("Application/X-Reversed-JSON; v=1") is custom
    data = custom.encode(Dog(name="Rex", age=3))
    assert data == b'{"name":"Rex","age":3}'[::-1]
    assert custom.decode(data, Dog) == Dog(name="Rex", age=3)
    assert encodings.get("rjson") is None  # the copy is independent


def test_duplicate_names_need_replace() -> None:
    registry = EncodingRegistry()
    registry.register(JsonEncoding())
    with pytest.raises(ValueError, match="json"):
        registry.register(JsonEncoding())
    replacement = JsonEncoding()
    registry.register(replacement, replace=True)
    assert registry.get("json") is replacement
    assert registry.names() == ["json"]


def test_module_level_register_acts_on_default_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    default = encodings.copy()
    monkeypatch.setattr(encodings_module, "encodings", default)
    custom = ReversedJsonEncoding()
    encodings_module.register(custom)
    assert encodings_module.get("rjson") is custom
    assert default.get("rjson") is custom
    with pytest.raises(ValueError, match="rjson"):
        encodings_module.register(ReversedJsonEncoding())
    encodings_module.register(ReversedJsonEncoding(), replace=True)
    assert encodings_module.get("rjson") is not custom


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", "json"),
        ("application/json; charset=utf-8", "json"),
        ("APPLICATION/JSON;charset=UTF-8", "json"),
        (" application/proto ", "proto"),
        ("application/cbor", "cbor"),
        ("application/msgpack", "msgpack"),
        ("application/connect+json", None),
        ("application/x-ndjson", None),
        ("text/plain", None),
        ("", None),
    ],
)
def test_by_content_type(content_type: str, expected: str | None) -> None:
    found = encodings.by_content_type(content_type)
    assert (found.name if found is not None else None) == expected


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", ("json", False)),
        ("application/proto", ("proto", False)),
        ("application/json; charset=utf-8", ("json", False)),
        ("application/connect+proto", ("proto", True)),
        ("application/connect+json; charset=utf-8", ("json", True)),
        ("Application/Connect+CBOR", ("cbor", True)),
        ("application/connect+", None),
        ("application/", None),
        ("text/plain", None),
        ("", None),
    ],
)
def test_connect_codec(content_type: str, expected: tuple[str, bool] | None) -> None:
    assert connect_codec(content_type) == expected
