"""rpckit/http/rest/routes.py, free of I/O: http.proto escaping, well-known types in URLs,
rule checks at start-up, ``body`` and ``response_body`` fields, and property tests."""

from __future__ import annotations

import json
import re
import string
from typing import Any

import cbor2
import msgpack  # type: ignore[import-untyped]  # msgpack ships no stubs
import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    field_mask_pb2,
    message_factory,
    timestamp_pb2,
    wrappers_pb2,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.streams.server import StreamsExample
from rpckit.encodings import encodings
from rpckit.errors import Code, RpcError
from rpckit.http.rest.framing import NotAcceptable
from rpckit.http.rest.routes import (
    PathTemplate,
    bind_request,
    decode_body,
    encode_response_body,
    response_item,
    validate_rules,
)
from rpckit.service import HttpRule, MethodKind, MethodSpec

# --- a request with well-known-type fields -------------------------------------------------


def _messages() -> tuple[Any, Any]:  # dynamic classes: attributes unknown to mypy
    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="rpckit_tests/routes_wkt.proto",
        package="rpckit_tests.routes",
        syntax="proto3",
        dependency=[
            "google/protobuf/timestamp.proto",
            "google/protobuf/duration.proto",
            "google/protobuf/field_mask.proto",
            "google/protobuf/wrappers.proto",
        ],
    )
    book = file.message_type.add(name="Book")
    book.field.add(name="title", number=1, type=F.TYPE_STRING, json_name="title")
    book.field.add(name="shelf", number=2, type=F.TYPE_STRING, json_name="shelf")
    request = file.message_type.add(name="Request")
    fields: list[tuple[str, str, int, str]] = [
        ("name", "name", F.TYPE_STRING, ""),
        ("since", "since", F.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
        ("wait", "wait", F.TYPE_MESSAGE, ".google.protobuf.Duration"),
        ("update_mask", "updateMask", F.TYPE_MESSAGE, ".google.protobuf.FieldMask"),
        ("limit", "limit", F.TYPE_MESSAGE, ".google.protobuf.Int32Value"),
        ("big", "big", F.TYPE_MESSAGE, ".google.protobuf.UInt64Value"),
        ("flag", "flag", F.TYPE_MESSAGE, ".google.protobuf.BoolValue"),
        ("label", "label", F.TYPE_MESSAGE, ".google.protobuf.StringValue"),
        ("blob", "blob", F.TYPE_MESSAGE, ".google.protobuf.BytesValue"),
        ("ratio", "ratio", F.TYPE_MESSAGE, ".google.protobuf.FloatValue"),
        ("book", "book", F.TYPE_MESSAGE, ".rpckit_tests.routes.Book"),
        ("count", "count", F.TYPE_INT32, ""),
        ("small", "small", F.TYPE_FLOAT, ""),
    ]
    number = 0
    for number, (name, json_name, kind, type_name) in enumerate(fields, start=1):
        field = request.field.add(name=name, number=number, type=kind, json_name=json_name)
        if type_name:
            field.type_name = type_name
    repeated = [
        ("times", ".google.protobuf.Timestamp"),
        ("sizes", ".google.protobuf.Int64Value"),
        ("books", ".rpckit_tests.routes.Book"),
    ]
    for offset, (name, type_name) in enumerate(repeated, start=number + 1):
        request.field.add(
            name=name, number=offset, type=F.TYPE_MESSAGE, type_name=type_name,
            label=F.LABEL_REPEATED, json_name=name,
        )  # fmt: skip
    request.field.add(
        name="tags", number=40, type=F.TYPE_STRING, label=F.LABEL_REPEATED, json_name="tags"
    )
    pool = descriptor_pool.Default()
    pool.Add(file)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("rpckit_tests.routes.Request")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("rpckit_tests.routes.Book")),
    )


REQUEST, BOOK = _messages()


def _bind(query: list[tuple[str, str]], path: dict[str, str] | None = None) -> Any:
    return bind_request(REQUEST, path_params=path or {}, query=query)


def _rejected(query: list[tuple[str, str]]) -> RpcError:
    with pytest.raises(RpcError) as caught:
        _bind(query)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert "\n" not in caught.value.message
    return caught.value


# --- item 9: http.proto escaping ------------------------------------------------------------


def test_multi_segment_variable_keeps_encoded_slash() -> None:
    template = PathTemplate.compile("/v1/{name=shelves/*}/items")
    assert template.match("/v1/shelves/a%2Fb/items") == {"name": "shelves/a%2Fb"}
    assert template.match("/v1/shelves/a%2fb%20c/items") == {"name": "shelves/a%2fb c"}
    rest = PathTemplate.compile("/files/{path=**}")
    assert rest.match("/files/a/b%2Fc/d%C3%A9") == {"path": "a/b%2Fc/dé"}


def test_single_segment_variable_is_fully_decoded() -> None:
    template = PathTemplate.compile("/v1/{name}/items")
    assert template.match("/v1/a%2Fb%3F%23/items") == {"name": "a/b?#"}
    assert template.match("/v1/a/b/items") is None
    # bytes that are not UTF-8 cannot become a string field
    params = template.match("/v1/%FF/items")
    assert params is not None
    with pytest.raises(RpcError) as caught:
        bind_request(REQUEST, path_params=params, query=[])
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert "UTF-8" in caught.value.message


def test_double_wildcard_matches_zero_or_more_segments() -> None:
    template = PathTemplate.compile("/v1/{name=shelves/**}")
    assert template.match("/v1/shelves") == {"name": "shelves"}
    assert template.match("/v1/shelves/a/b") == {"name": "shelves/a/b"}
    optional = PathTemplate.compile("/v1/{rest=**}")
    assert optional.match("/v1") == {}
    assert optional.match("/v1/x/y") == {"rest": "x/y"}


def test_escaped_unreserved_characters_match_literals() -> None:
    template = PathTemplate.compile("/v1/books/{name}:publish")
    assert template.match("/%761/books/%41b:publish") == {"name": "Ab"}
    assert template.match("/v1/books/x") is None


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("/v1/{a}/{a}", "a field is bound twice"),
        ("/v1/**/x", "'**' must be the last segment"),
        ("/v1/{a=**}/x", "'**' must be the last segment"),
        ("/v1/{a", "unclosed '{'"),
        ("/v1/{a{b}}", "a variable cannot contain another variable"),
        ("/v1//x", "empty path segment"),
        ("/v1/x{a}", "a variable must be a whole segment"),
        ("/v1/{1a}", "invalid field path '1a'"),
        ("/v1/x:", "invalid verb"),
    ],
)
def test_invalid_templates(template: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)) as caught:
        PathTemplate.compile(template)
    assert str(caught.value).startswith(f"invalid path template {template!r}: ")


# --- item 5: well-known types in query and path ---------------------------------------------


def test_query_well_known_types_in_their_json_forms() -> None:
    request = _bind(
        [
            ("since", "2026-01-01T00:00:00Z"),
            ("wait", "1.5s"),
            ("updateMask", "title,authorName"),
            ("update_mask", "shelf.display_name"),
            ("limit", "5"),
            ("big", "18446744073709551615"),
            ("flag", "true"),
            ("label", "x y"),
            ("blob", "AP8"),
            ("ratio", "0.5"),
        ]
    )
    assert request.since == timestamp_pb2.Timestamp(seconds=1767225600)
    assert request.wait == duration_pb2.Duration(seconds=1, nanos=500_000_000)
    assert request.update_mask == field_mask_pb2.FieldMask(
        paths=["title", "author_name", "shelf.display_name"]
    )
    assert request.limit == wrappers_pb2.Int32Value(value=5)
    assert request.HasField("limit")
    assert request.big.value == 2**64 - 1
    assert (request.flag.value, request.label.value, request.blob.value) == (True, "x y", b"\0\xff")
    assert request.ratio.value == 0.5


def test_zero_wrapper_is_present() -> None:
    request = _bind([("limit", "0")])
    assert request.HasField("limit")
    assert request.limit.value == 0


def test_repeated_well_known_types() -> None:
    request = _bind(
        [("times", "2026-01-01T00:00:00Z"), ("times", "1970-01-01T00:00:01.5Z"),
         ("sizes", "1"), ("sizes", "-2")]
    )  # fmt: skip
    assert [t.ToJsonString() for t in request.times] == [
        "2026-01-01T00:00:00Z",
        "1970-01-01T00:00:01.500Z",
    ]
    assert [s.value for s in request.sizes] == [1, -2]


def test_well_known_types_in_path_variables() -> None:
    template = PathTemplate.compile("/v1/logs/{since}/{wait}")
    params = template.match("/v1/logs/2026-01-01T00%3A00%3A00Z/2s")
    assert params is not None
    request = bind_request(REQUEST, path_params=params, query=[])
    assert request.since.seconds == 1767225600
    assert request.wait.seconds == 2


def test_dotted_form_still_works() -> None:
    assert list(_bind([("update_mask.paths", "title")]).update_mask.paths) == ["title"]
    assert _bind([("limit.value", "3")]).limit.value == 3


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("since", "yesterday", "an RFC 3339 timestamp like 2026-01-01T00:00:00Z"),
        ("since", "2026-13-01T00:00:00Z", "an RFC 3339 timestamp"),
        ("wait", "1.5", "a duration in seconds like 1.5s"),
        ("wait", "99999999999999s", "a duration"),
        ("updateMask", "a,,b", "field paths like title,author.displayName"),
        ("updateMask", "a b", "field paths"),
        ("limit", "2147483648", "a 32-bit integer"),
        ("limit", "five", "a 32-bit integer"),
        ("big", "-1", "an unsigned 64-bit integer"),
        ("flag", "maybe", "true or false"),
        ("blob", "!!", "base64"),
        ("ratio", "1e39", "a 32-bit float"),
        ("small", "1e39", "a 32-bit float"),
        ("small", "1_0", "a number"),
        ("count", "٣", "a 32-bit integer"),  # a non-ASCII digit
        ("times", "nope", "an RFC 3339 timestamp"),
        ("sizes", "x", "a 64-bit integer"),
    ],
)
def test_bad_well_known_values_are_invalid_argument(key: str, value: str, expected: str) -> None:
    error = _rejected([(key, value)])
    assert error.message.startswith(f"query parameter {key!r}: expected {expected}")


def test_message_and_map_fields_are_refused() -> None:
    assert "a message field cannot be set" in _rejected([("book", "x")]).message
    assert "a message field cannot be set" in _rejected([("books", "x")]).message


# --- item 8: rules checked at start-up ------------------------------------------------------


def _method(
    name: str, *rules: HttpRule, kind: MethodKind = MethodKind.UNARY
) -> MethodSpec[Any, Any]:
    return MethodSpec("test.Library", name, name.lower(), kind, REQUEST, REQUEST, http=rules)


def test_valid_rules_pass() -> None:
    validate_rules(
        [
            _method("Get", HttpRule("GET", "/v1/{name=shelves/*}"),
                    HttpRule("GET", "/v1/at/{since}/{limit}")),
            _method("Update", HttpRule("PATCH", "/v1/{name}", body="book", response_body="book")),
            _method("Tags", HttpRule("POST", "/v1/tags", body="tags", response_body="tags")),
            _method("All", HttpRule("POST", "/v1/all", body="*")),
            _method("Watch", HttpRule("GET", "/v1/watch", response_body="book"),
                    kind=MethodKind.SERVER_STREAM),
        ]
    )  # fmt: skip
    validate_rules(StreamsExample.spec().methods)  # the example's own rules


@pytest.mark.parametrize(
    ("rule", "kind", "message"),
    [
        (HttpRule("GET", "/v1/{nope}"), MethodKind.UNARY,
         "test.Library.M (GET /v1/{nope}): path variable {nope}: "
         "rpckit_tests.routes.Request has no field 'nope'"),
        (HttpRule("GET", "/v1/{tags}"), MethodKind.UNARY,
         "path variable {tags}: tags is repeated field; path variables bind single values"),
        (HttpRule("GET", "/v1/{book}"), MethodKind.UNARY,
         "path variable {book}: book is a message (rpckit_tests.routes.Book); path variables"),
        (HttpRule("GET", "/v1/{count.x}"), MethodKind.UNARY, "count is a scalar, not a message"),
        (HttpRule("GET", "/v1/{books.title}"), MethodKind.UNARY,
         "books is repeated, not a message"),
        (HttpRule("POST", "/v1/x", body="nope"), MethodKind.UNARY,
         "body 'nope': rpckit_tests.routes.Request has no such field"),
        (HttpRule("POST", "/v1/x", body="book.title"), MethodKind.UNARY, "has no such field"),
        (HttpRule("POST", "/v1/{name}", body="name"), MethodKind.UNARY,
         "body 'name' is also bound by the path"),
        (HttpRule("GET", "/v1/x", body="*"), MethodKind.UNARY, "a GET route cannot have a body"),
        (HttpRule("GET", "/v1/x", response_body="nope"), MethodKind.UNARY,
         "response_body 'nope': rpckit_tests.routes.Request has no such field"),
        (HttpRule("GET", "/v1/x", response_body="tags"), MethodKind.SERVER_STREAM,
         "response_body 'tags' is repeated; a stream's response_body must be a message field"),
        (HttpRule("GET", "/v1/{a=**}/x"), MethodKind.UNARY,
         "test.Library.M: invalid path template '/v1/{a=**}/x': '**' must be the last segment"),
    ],
)  # fmt: skip
def test_bad_rules_are_one_line_value_errors(
    rule: HttpRule, kind: MethodKind, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        validate_rules([_method("M", rule, kind=kind)])
    assert "\n" not in str(caught.value)


def test_aip_134_update_path_field_inside_the_body_wins() -> None:
    """Issue 16: ``{book.shelf}`` with body ``book`` (AIP-134's Update) is accepted
    and binds as http.proto says: the body, then the path over it."""
    validate_rules(
        [_method("Update", HttpRule("PATCH", "/v1/{book.shelf=shelves/*}", body="book"))]
    )
    json_codec = encodings.get("json")
    assert json_codec is not None
    body = decode_body(b'{"title":"T","shelf":"shelves/body"}', json_codec, REQUEST, "book")
    request = bind_request(
        REQUEST, path_params={"book.shelf": "shelves/path"}, query=(), body=body, body_field="*"
    )
    assert (request.book.title, request.book.shelf) == ("T", "shelves/path")
    # body "*": a field bound by the path is the path's too
    whole = decode_body(b'{"name":"body","count":3}', json_codec, REQUEST, "*")
    request = bind_request(
        REQUEST, path_params={"name": "path"}, query=(), body=whole, body_field="*"
    )
    assert (request.name, request.count) == ("path", 3)


def test_duplicate_routes_across_services_name_both() -> None:
    first = _method("Get", HttpRule("GET", "/v1/{name}"))
    second = MethodSpec(
        "other.Shelves", "Fetch", "fetch", MethodKind.UNARY, REQUEST, REQUEST,
        http=(HttpRule("GET", "/v1/{label}"),),
    )  # fmt: skip
    expected = "route GET /v1/{label} is declared by both test.Library.Get and other.Shelves.Fetch"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        validate_rules([first, second])
    # another verb on the same template is a different route
    validate_rules([first, _method("Put", HttpRule("PUT", "/v1/{name}", body="*"))])


# --- item 8: body and response_body ---------------------------------------------------------


def test_decode_body_into_fields_of_every_kind() -> None:
    json_codec = encodings.get("json")
    assert json_codec is not None
    whole = decode_body(b'{"name":"n","tags":["a"]}', json_codec, REQUEST, "*")
    assert (whole.name, list(whole.tags)) == ("n", ["a"])
    book = decode_body(b'{"title":"T"}', json_codec, REQUEST, "book")
    assert book.book.title == "T"
    tags = decode_body(b'["a","b"]', json_codec, REQUEST, "tags")
    assert list(tags.tags) == ["a", "b"]
    books = decode_body(b'[{"title":"x"}]', json_codec, REQUEST, "books")
    assert [b.title for b in books.books] == ["x"]
    count = decode_body(b"7", json_codec, REQUEST, "count")
    assert count.count == 7
    since = decode_body(b'"2026-01-01T00:00:00Z"', json_codec, REQUEST, "since")
    assert since.since.seconds == 1767225600
    for codec, data in (("cbor", cbor2.dumps(["c"])), ("msgpack", msgpack.packb(["m"]))):
        encoding = encodings.get(codec)
        assert encoding is not None
        assert list(decode_body(data, encoding, REQUEST, "tags").tags) == [data[-1:].decode()]
    merged = bind_request(REQUEST, path_params={"name": "p"}, query=[], body=tags, body_field="*")
    assert (merged.name, list(merged.tags)) == ("p", ["a", "b"])


@pytest.mark.parametrize(
    ("data", "codec", "field", "needle"),
    [
        (b'"x"', "json", "tags", "invalid json"),
        (b'["a"], "name": "injected"', "json", "tags", "invalid json: Extra data"),
        (b"[1,", "json", "tags", "invalid json"),
        (b"NaN", "json", "count", "NaN is not valid JSON"),
        (b"\x0a", "proto", "tags", "send it as JSON, CBOR or MessagePack"),
    ],
)
def test_decode_body_rejects_bad_bodies(data: bytes, codec: str, field: str, needle: str) -> None:
    encoding = encodings.get(codec)
    assert encoding is not None
    with pytest.raises(RpcError) as caught:
        decode_body(data, encoding, REQUEST, field)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert needle in caught.value.message


def test_encode_response_body() -> None:
    response = REQUEST(name="n", tags=["a", "b"], book=BOOK(title="T"))
    json_codec, cbor_codec, proto = (encodings.get(n) for n in ("json", "cbor", "proto"))
    assert json_codec is not None
    assert cbor_codec is not None
    assert proto is not None
    assert encode_response_body(response, "", json_codec) == json_codec.encode(response)
    assert encode_response_body(response, "tags", json_codec) == b'["a","b"]'
    assert encode_response_body(response, "book", json_codec) == b'{"title":"T"}'
    assert encode_response_body(response, "book", proto) == BOOK(title="T").SerializeToString()
    assert encode_response_body(response, "count", json_codec) == b"0"  # default, not absent
    assert json.loads(encode_response_body(REQUEST(), "books", json_codec)) == []
    assert cbor2.loads(encode_response_body(response, "tags", cbor_codec)) == ["a", "b"]
    with pytest.raises(NotAcceptable) as caught:
        encode_response_body(response, "tags", proto)
    assert caught.value.http_status == 406
    assert response_item(response, "book") == BOOK(title="T")
    assert response_item(response, "") is response


# --- property tests: any input gives a value or the right error -------------------------------

_PATH_CHARS = string.ascii_letters[:6] + string.digits[:3] + "/%:.-_~{}*=2Ff"


@settings(max_examples=200, deadline=None)
@given(template=st.text(alphabet=_PATH_CHARS, max_size=30), path=st.text(max_size=40))
def test_templates_compile_or_refuse_and_match_anything(template: str, path: str) -> None:
    try:
        compiled = PathTemplate.compile("/" + template)
    except ValueError as exc:
        refusal = str(exc)
    else:
        refusal = ""
    if refusal:
        assert refusal.startswith("invalid path template")
        assert "\n" not in refusal
        return
    result = compiled.match("/" + path)
    assert result is None or set(result) <= set(compiled.fields)


_KEYS = st.sampled_from(
    ["name", "since", "wait", "updateMask", "update_mask", "limit", "big", "flag", "label",
     "blob", "ratio", "count", "small", "times", "sizes", "tags", "book", "book.title",
     "books", "update_mask.paths", "nope", "count.x", "limit.value"]
)  # fmt: skip
_VALUES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["1.5s", "2026-01-01T00:00:00Z", "-0", "1e308", "NaN", "-Infinity",
                     "title,b.c", "99999999999999999999", "true", "AP8=", "\udcff"]),
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(query=st.lists(st.tuples(_KEYS, _VALUES), max_size=5))
def test_query_binding_gives_a_message_or_invalid_argument(query: list[tuple[str, str]]) -> None:
    try:
        outcome: Any = _bind(query)
    except RpcError as error:
        outcome = error
    if isinstance(outcome, RpcError):
        assert outcome.code is Code.INVALID_ARGUMENT
        assert "\n" not in outcome.message
    else:
        assert isinstance(outcome, REQUEST)
        outcome.SerializeToString()  # whatever was bound is a valid message


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=40) | st.text(max_size=30).map(str.encode),
    codec=st.sampled_from(["json", "cbor", "msgpack", "proto"]),
    field=st.sampled_from(["*", "tags", "book", "count", "since", "books"]),
)
def test_decode_body_gives_a_message_or_invalid_argument(
    data: bytes, codec: str, field: str
) -> None:
    encoding = encodings.get(codec)
    assert encoding is not None
    try:
        outcome: Any = decode_body(data, encoding, REQUEST, field)
    except RpcError as error:
        outcome = error.code
    assert outcome is Code.INVALID_ARGUMENT or isinstance(outcome, REQUEST)
