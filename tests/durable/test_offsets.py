"""The Redis log's offsets: entry ids as strings that sort in the ids' order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpckit.durable.log import START
from rpckit.durable.redis import decode_offset, encode_offset

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
IDS = st.tuples(U64, U64)


@given(IDS)
def test_round_trip(entry: tuple[int, int]) -> None:
    offset = encode_offset(f"{entry[0]}-{entry[1]}".encode())
    assert decode_offset(offset) == entry
    assert offset > START


@given(IDS, IDS)
def test_string_order_is_id_order(a: tuple[int, int], b: tuple[int, int]) -> None:
    oa, ob = encode_offset(f"{a[0]}-{a[1]}"), encode_offset(f"{b[0]}-{b[1]}")
    assert (oa < ob) == (a < b)
    assert (oa == ob) == (a == b)


def test_ids_that_do_not_sort_as_strings() -> None:
    assert "9-0" > "10-0"  # why the encoding exists
    assert encode_offset("9-0") < encode_offset("10-0")
    assert encode_offset("10-9") < encode_offset("10-10")


@pytest.mark.parametrize("bad", ["", "-1", "12-3", "x" * 16 + "-" + "0" * 16, "0" * 33])
def test_malformed_offsets(bad: str) -> None:
    with pytest.raises(ValueError, match="malformed offset"):
        decode_offset(bad)
