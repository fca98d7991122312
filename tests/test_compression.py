"""Content codings: round trips, bounded decompression of zip bombs, malformed data, negotiation."""

from __future__ import annotations

import importlib.util
import os
import time
import tracemalloc
import zlib
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from rpckit import compression as compression_module
from rpckit.compression import (
    IDENTITY,
    BrotliCompression,
    Compression,
    CompressionRegistry,
    GzipCompression,
    compressions,
    negotiate,
)
from rpckit.errors import Code, RpcError

MiB = 1 << 20
PACKAGES = {"gzip": "zlib", "br": "brotli", "zstd": "zstandard"}


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


@pytest.fixture(params=["gzip", "br", "zstd"])
def coding(request: pytest.FixtureRequest) -> Compression:
    """Each built-in coding; br and zstd are skipped when their package is missing."""
    name: str = request.param
    pytest.importorskip(PACKAGES[name])
    found = compressions.get(name)
    assert found is not None
    return found


def zip_bomb(name: str, size: int = 100 * MiB) -> bytes:
    """``size`` zero bytes compressed, built a MiB at a time so the test never holds them all."""
    step: Callable[[bytes], bytes]
    finish: Callable[[], bytes]
    encoder: Any
    if name == "gzip":
        encoder = zlib.compressobj(9, wbits=31)
        step, finish = encoder.compress, encoder.flush
    elif name == "br":
        encoder = pytest.importorskip("brotli").Compressor(quality=5)
        step, finish = encoder.process, encoder.finish
    else:
        encoder = pytest.importorskip("zstandard").ZstdCompressor().compressobj()
        step, finish = encoder.compress, encoder.flush
    zeros = bytes(MiB)
    return b"".join(step(zeros) for _ in range(size // MiB)) + finish()


def assert_error(code: Code, call: Callable[[], object]) -> str:
    """The call fails with ``code`` and a one-line message, which is returned."""
    with pytest.raises(RpcError) as caught:
        call()
    assert caught.value.code is code
    assert "\n" not in caught.value.message
    assert len(caught.value.message) <= 200
    return caught.value.message


SAMPLES = [
    b"",
    b"x",
    b"hello, world " * 1000,
    os.urandom(MiB),
    os.urandom(200_000) + bytes(3 * MiB),
]


@pytest.mark.parametrize("data", SAMPLES, ids=["empty", "byte", "text", "random", "mixed"])
def test_round_trip(coding: Compression, data: bytes) -> None:
    compressed = coding.compress(data)
    assert coding.decompress(compressed, len(data)) == data
    assert coding.decompress(compressed, 4 * MiB) == data


def test_compresses(coding: Compression) -> None:
    data = b"hello, world " * 1000
    assert len(coding.compress(data)) < len(data) // 10


def test_limit_is_exact(coding: Compression) -> None:
    data = b"abc" * 10_000
    compressed = coding.compress(data)
    assert coding.decompress(compressed, len(data)) == data
    message = assert_error(
        Code.RESOURCE_EXHAUSTED, lambda: coding.decompress(compressed, len(data) - 1)
    )
    assert message == f"decompressed message larger than {len(data) - 1} bytes"


def test_concatenated_frames(coding: Compression) -> None:
    first, second = b"first " * 1000, os.urandom(5000)
    joined = coding.compress(first) + coding.compress(second)
    if coding.name == "br":
        # The brotli format has no concatenated streams: trailing data is an error, not ignored.
        assert_error(Code.INVALID_ARGUMENT, lambda: coding.decompress(joined, MiB))
        return
    assert coding.decompress(joined, MiB) == first + second


def test_zip_bomb_stops_early_with_bounded_memory(coding: Compression) -> None:
    bomb = zip_bomb(coding.name)
    assert len(bomb) < MiB
    tracemalloc.start()
    try:
        started = time.perf_counter()
        message = assert_error(Code.RESOURCE_EXHAUSTED, lambda: coding.decompress(bomb, 4 * MiB))
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message == f"decompressed message larger than {4 * MiB} bytes"
    assert peak < 20 * MiB, f"peak {peak / MiB:.1f} MiB"
    assert elapsed < 2


def test_malformed(coding: Compression) -> None:
    compressed = coding.compress(b"hello, world " * 1000)
    for bad in (
        b"not compressed at all",
        b"\x00" * 64,
        compressed[:-5],
        compressed[: len(compressed) // 2],
        compressed + b"trailing garbage",
    ):
        with pytest.raises(RpcError) as caught:
            coding.decompress(bad, MiB)
        assert caught.value.code is Code.INVALID_ARGUMENT
        assert caught.value.message.startswith(f"invalid {coding.name} data: ")
        assert "\n" not in caught.value.message


def test_gzip_errors_name_the_cause() -> None:
    gzip = GzipCompression()
    data = gzip.compress(b"x" * 100)
    assert gzip.decompress(data, 100) == b"x" * 100
    truncated = assert_error(Code.INVALID_ARGUMENT, lambda: gzip.decompress(data[:-3], 100))
    assert truncated == "invalid gzip data: truncated stream"
    header = assert_error(Code.INVALID_ARGUMENT, lambda: gzip.decompress(b"garbage", 100))
    assert header.startswith("invalid gzip data: Error -3")


def test_identity() -> None:
    assert compressions.get("identity") is IDENTITY
    assert compressions.get("IDENTITY") is IDENTITY
    assert "identity" not in compressions.names()
    assert IDENTITY.compress(b"abc") == b"abc"
    assert IDENTITY.decompress(b"abc", 3) == b"abc"
    assert_error(Code.RESOURCE_EXHAUSTED, lambda: IDENTITY.decompress(b"abcd", 3))


def test_default_names_in_preference_order() -> None:
    expected = [
        name
        for name, package in (("zstd", "zstandard"), ("br", "brotli"), ("gzip", "zlib"))
        if installed(package)
    ]
    assert compressions.names() == expected
    assert compression_module.names() == expected
    assert compression_module.get("gzip") is compressions.get("gzip")
    assert compression_module.get("deflate") is None


def test_brotli_without_output_limit_api() -> None:
    """brotli < 1.2 has no ``output_buffer_limit``: input goes in small pieces instead."""
    brotli: Any = pytest.importorskip("brotli")

    class OldDecompressor:
        def __init__(self) -> None:
            self._inner = brotli.Decompressor()

        def process(self, data: bytes) -> bytes:
            out: bytes = self._inner.process(data)
            return out

        def is_finished(self) -> bool:
            done: bool = self._inner.is_finished()
            return done

    old: Any = SimpleNamespace(
        Decompressor=OldDecompressor, compress=brotli.compress, error=brotli.error
    )
    coding = BrotliCompression(old)
    data = os.urandom(10_000) + b"abc" * 10_000
    assert coding.decompress(coding.compress(data), len(data)) == data
    assert_error(Code.INVALID_ARGUMENT, lambda: coding.decompress(coding.compress(data)[:-4], MiB))
    assert_error(Code.RESOURCE_EXHAUSTED, lambda: coding.decompress(zip_bomb("br"), 4 * MiB))


# Registry and negotiation.


class FlipCompression:
    """A made-up coding for registry tests."""

    name = "x-flip"

    def compress(self, data: bytes) -> bytes:
        return bytes(b ^ 0xFF for b in data)

    def decompress(self, data: bytes, max_size: int) -> bytes:
        if len(data) > max_size:
            raise RpcError(Code.RESOURCE_EXHAUSTED, "too large")
        return bytes(b ^ 0xFF for b in data)


def registry_of(*codings: Compression) -> CompressionRegistry:
    registry = CompressionRegistry()
    for each in codings:
        registry.register(each)
    return registry


def test_registry_register_and_copy() -> None:
    registry = compressions.copy()
    custom: Compression = FlipCompression()
    registry.register(custom)
    assert registry.names()[-1] == "x-flip"
    assert registry.get("x-flip") is custom
    assert compressions.get("x-flip") is None
    with pytest.raises(ValueError, match="x-flip"):
        registry.register(FlipCompression())
    registry.register(FlipCompression(), replace=True)
    assert registry.get("x-flip") is not custom


def test_negotiate_keeps_client_order() -> None:
    gzip, flip = GzipCompression(), FlipCompression()
    registry = registry_of(flip, gzip)
    assert negotiate("gzip, x-flip", registry) is gzip
    assert negotiate("x-flip, gzip", registry) is flip
    assert negotiate("x-flip;q=0.1, gzip;q=1.0", registry) is flip
    assert negotiate("br, GZIP", registry) is gzip
    assert negotiate("  deflate ,, gzip ", registry) is gzip
    assert negotiate("x-flip;q=0, gzip", registry) is gzip
    assert negotiate("*", registry) is flip


@pytest.mark.parametrize(
    "header", [None, "", "identity", "identity, gzip", "deflate, compress", "gzip;q=0", ","]
)
def test_negotiate_nothing(header: str | None) -> None:
    assert negotiate(header, registry_of(GzipCompression())) is None


def test_negotiate_default_registry() -> None:
    gzip = compressions.get("gzip")
    assert negotiate("gzip, br") is gzip
    expected = compressions.get("br") if installed("brotli") else gzip
    assert negotiate("br;q=0.9, gzip") is expected


def test_gzip_is_linear_in_many_empty_members(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hardening 2, item 6: 4 MiB of empty gzip members used to cost quadratic time (each
    member's inflater got, and zlib copied, all of the rest). Counted, not timed: the bytes
    handed to the inflaters stay within a small multiple of the input."""
    import zlib

    member = zlib.compress(b"", 6, wbits=31)
    data = member * (4 * 1024 * 1024 // len(member)) + zlib.compress(b"end", 6, wbits=31)
    fed = [0]
    real = zlib.decompressobj

    class Counting:
        def __init__(self, wbits: int) -> None:
            self.inner = real(wbits=wbits)

        def decompress(self, piece: bytes, max_length: int = 0) -> bytes:
            fed[0] += len(piece)
            return self.inner.decompress(piece, max_length)

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

    monkeypatch.setattr(zlib, "decompressobj", Counting)
    assert GzipCompression().decompress(data, 16) == b"end"
    assert fed[0] <= 4 * len(data), (fed[0], len(data))
