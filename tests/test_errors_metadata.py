"""rpckit.errors and rpckit.metadata."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpckit import Code, Metadata, RpcError


def test_sixteen_codes_with_connect_names_and_statuses() -> None:
    assert len(Code) == 17  # OK plus the 16 error codes
    assert Code.CANCELLED.connect_name == "canceled"
    assert Code.NOT_FOUND.connect_name == "not_found"
    assert Code.from_connect_name("resource_exhausted") is Code.RESOURCE_EXHAUSTED
    assert Code.from_connect_name("nonsense") is Code.UNKNOWN
    expected = {
        Code.CANCELLED: 499, Code.UNKNOWN: 500, Code.INVALID_ARGUMENT: 400,
        Code.DEADLINE_EXCEEDED: 504, Code.NOT_FOUND: 404, Code.ALREADY_EXISTS: 409,
        Code.PERMISSION_DENIED: 403, Code.RESOURCE_EXHAUSTED: 429,
        Code.FAILED_PRECONDITION: 400, Code.ABORTED: 409, Code.OUT_OF_RANGE: 400,
        Code.UNIMPLEMENTED: 501, Code.INTERNAL: 500, Code.UNAVAILABLE: 503,
        Code.DATA_LOSS: 500, Code.UNAUTHENTICATED: 401,
    }  # fmt: skip
    assert {code: code.http_status for code in Code if code is not Code.OK} == expected


def test_rpc_error_text() -> None:
    error = RpcError(Code.NOT_FOUND, "no such dog")
    assert str(error) == "not_found: no such dog"
    assert (error.code, error.message, error.details) == (Code.NOT_FOUND, "no such dog", [])


def test_metadata_multi_map() -> None:
    md = Metadata({"X-One": "1"})
    md.add("x-one", "2")
    md.add("trace-bin", b"\x00\xff")
    assert md.get("X-ONE") == "1"
    assert md.get_all("x-one") == ["1", "2"]
    assert md.get("trace-bin") == "AP8="
    assert md.get_bytes("trace-bin") == b"\x00\xff"
    md.set("x-one", "3")
    assert md.get_all("x-one") == ["3"]
    assert "x-one" in md
    assert len(md) == 2
    with pytest.raises(ValueError, match="-bin"):
        md.add("plain", b"bytes")


def test_unknown_status_numbers_are_kept_and_mean_unknown() -> None:
    code = Code(17)
    assert (int(code), code.name, code.known) == (17, "CODE_17", False)
    assert (code.connect_name, code.http_status) == ("unknown", 500)
    assert str(RpcError(code, "from the wire")) == "unknown: from the wire"
    assert Code(-1) == -1
    assert Code(2**32 - 1).connect_name == "unknown"
    assert len(Code) == 17  # the table itself is unchanged
    assert code not in list(Code)
    assert Code(3) is Code.INVALID_ARGUMENT
    assert Code.INVALID_ARGUMENT.known
    bad: Any
    for bad in ("3", 2**40, 1.5, None):
        with pytest.raises(ValueError, match="is not a valid Code"):
            Code(bad)


def test_unknown_status_number_becomes_grpc_unknown() -> None:
    import grpc

    from rpckit.grpc.status import grpc_code

    assert grpc_code(Code(99)) is grpc.StatusCode.UNKNOWN
    assert grpc_code(Code.NOT_FOUND) is grpc.StatusCode.NOT_FOUND


def test_metadata_item_access() -> None:
    md = Metadata([("x-one", "1"), ("x-one", "2")])
    md["X-One"] = "3"  # replaces every value
    assert md.get_all("x-one") == ["3"]
    assert md["x-ONE"] == "3"
    md["trace-bin"] = b"\x00\xff"
    assert md["trace-bin"] == "AP8="
    md.add("x-two", "a")
    md.add("x-two", "b")
    assert md["x-two"] == "a"  # the first value
    del md["X-Two"]
    assert "x-two" not in md
    with pytest.raises(KeyError):
        md["x-two"]
    with pytest.raises(KeyError):
        del md["x-two"]
    with pytest.raises(ValueError, match="-bin"):
        md["plain"] = b"bytes"
    assert md.items() == [("x-one", "3"), ("trace-bin", "AP8=")]


_NAMES = st.sampled_from([b"accept", b"content-type", b"x-a", b"x-b", b"\xe9t\xe9", b"grpc-x"])
_HEADERS = st.lists(st.tuples(_NAMES, st.binary(max_size=6)), max_size=6)
_KEYS = st.sampled_from(["accept", "Content-Type", "x-a", "X-B", "\xe9t\xe9", "missing", "\u2603"])


@settings(max_examples=300, deadline=None)
@given(_HEADERS, st.frozensets(st.sampled_from(["x-a", "accept", "grpc-x"])), _KEYS)
def test_undecoded_asgi_headers_read_like_decoded_ones(
    headers: list[tuple[bytes, bytes]], skip: frozenset[str], key: str
) -> None:
    """``from_asgi`` decodes lazily: lookups before and after decoding, with and without
    ``without``, give what decoding everything up front gives."""
    eager = Metadata([(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers])
    lazy = Metadata.from_asgi(headers)
    filtered = lazy.without(skip)
    assert lazy.get(key) == eager.get(key)
    assert filtered.get(key) == (None if key.lower() in skip else eager.get(key))
    assert filtered.items() == [(k, v) for k, v in eager.items() if k not in skip]
    assert filtered.get(key) == (None if key.lower() in skip else eager.get(key))  # decoded
    assert lazy == eager
    lazy.add("x-new", "1")
    assert lazy.get_all("x-new") == ["1"]
    assert len(lazy) == len(headers) + 1


_PAIRS = st.lists(
    st.tuples(st.sampled_from(["user-agent", "x-a", "X-B", "trace-bin"]), st.text(max_size=6)),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(_PAIRS, st.frozensets(st.sampled_from(["x-a", "user-agent"])), _KEYS)
def test_deferred_metadata_is_read_once_when_first_used(
    pairs: list[tuple[str, str]], skip: frozenset[str], key: str
) -> None:
    """``deferred`` (grpcio's invocation metadata) calls its source only when first used,
    once, and then reads like metadata built up front (``-bin`` bytes base64-encoded)."""
    given = [(k, v.encode() if k == "trace-bin" else v) for k, v in pairs]
    calls: list[int] = []

    def source() -> list[tuple[str, str | bytes]]:
        calls.append(1)
        return given

    eager = Metadata(given)
    lazy = Metadata.deferred(source)
    filtered = Metadata.deferred(source).without(skip)
    assert calls == []
    assert lazy.get(key) == eager.get(key)
    assert lazy.items() == eager.items()
    assert lazy == eager
    assert filtered.items() == [(k, v) for k, v in eager.items() if k not in skip]
    assert calls == [1, 1]  # once for each of the two, however often they were read
    assert Metadata.deferred(lambda: None).items() == []  # grpcio's "no metadata"
