"""Content codings for Connect and plain HTTP bodies: gzip always, br and zstd when installed.

Decompression is incremental and bounded: output beyond ``max_size`` stops it with
RESOURCE_EXHAUSTED before a zip bomb is inflated, and malformed or truncated input is
INVALID_ARGUMENT. ``br`` needs the ``brotli`` package and ``zstd`` the ``zstandard`` package;
neither is a dependency, so each coding is registered only when its package imports.
An empty body decompresses to an empty body, since clients may skip compressing it.
"""

from __future__ import annotations

import importlib
import threading
import zlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol

from rpckit.errors import Code, RpcError

__all__ = [
    "IDENTITY",
    "BrotliCompression",
    "Compression",
    "CompressionRegistry",
    "GzipCompression",
    "IdentityCompression",
    "ZstdCompression",
    "compressions",
    "get",
    "names",
    "negotiate",
]

_MAX_REASON = 200


class Compression(Protocol):
    """One content coding: a name and a bounded compress/decompress pair."""

    name: str

    def compress(self, data: bytes) -> bytes:
        """The compressed form of ``data``."""
        ...

    def decompress(self, data: bytes, max_size: int) -> bytes:
        """The original bytes; RESOURCE_EXHAUSTED past ``max_size``, INVALID_ARGUMENT if bad."""
        ...


def too_large(max_size: int) -> RpcError:
    """The error for output that would exceed the size limit."""
    return RpcError(Code.RESOURCE_EXHAUSTED, f"decompressed message larger than {max_size} bytes")


def malformed(name: str, error: BaseException | str) -> RpcError:
    """The error for compressed input that cannot be decoded, with a one-line reason."""
    reason = " ".join(str(error).split()) or type(error).__name__
    text = f"invalid {name} data: {reason}"
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 3] + "..."
    return RpcError(Code.INVALID_ARGUMENT, text)


class _Output:
    """Collects decompressed chunks and fails as soon as they pass the limit."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.size = 0
        self.parts: list[bytes] = []

    @property
    def room(self) -> int:
        """How many more bytes may come, plus one to detect going over."""
        return self.max_size + 1 - self.size

    def add(self, chunk: bytes) -> None:
        """Keeps a chunk, or raises RESOURCE_EXHAUSTED if the total is now too large."""
        self.size += len(chunk)
        if self.size > self.max_size:
            raise too_large(self.max_size)
        if chunk:
            self.parts.append(chunk)

    def result(self) -> bytes:
        """All the chunks as one bytes object."""
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)


class IdentityCompression:
    """No coding at all; still enforces the size limit."""

    name = "identity"

    def compress(self, data: bytes) -> bytes:
        """The data unchanged."""
        return data

    def decompress(self, data: bytes, max_size: int) -> bytes:
        """The data unchanged, if it fits."""
        if len(data) > max_size:
            raise too_large(max_size)
        return data


class GzipCompression:
    """gzip (RFC 1952) via zlib, inflated with ``max_length`` so output stays bounded."""

    name = "gzip"

    def __init__(self, level: int = 6) -> None:
        self.level = level

    def compress(self, data: bytes) -> bytes:
        """One gzip member."""
        return zlib.compress(data, self.level, wbits=31)

    def decompress(self, data: bytes, max_size: int) -> bytes:
        """Inflates one or more concatenated gzip members, in time linear in the input.

        zlib copies the input left over after a member (``unused_data``), so feeding it all
        of the rest would cost quadratic time on many small members (4 MiB of empty members:
        12 s inside the event loop). Each member is fed pieces that start small and double
        up to ``_GZIP_PIECE``, so what zlib copies per member is at most about twice the
        member itself, plus a small constant."""
        output = _Output(max_size)
        view = memoryview(data)
        offset, end = 0, len(view)
        try:
            while offset < end:
                inflater = zlib.decompressobj(wbits=31)
                piece_size = _GZIP_FIRST_PIECE
                while not inflater.eof:
                    pending: bytes | memoryview = inflater.unconsumed_tail
                    if not pending:
                        if offset >= end:
                            raise malformed(self.name, "truncated stream")
                        pending = view[offset : offset + piece_size]
                        offset += len(pending)
                        piece_size = min(piece_size * 2, _GZIP_PIECE)
                    output.add(inflater.decompress(pending, output.room))
                # What the member left of the last piece is the next member's start.
                offset -= len(inflater.unused_data)
        except zlib.error as exc:
            raise malformed(self.name, exc) from None
        return output.result()


#: The first and the largest piece of input fed to the inflater at a time (gzip).
_GZIP_FIRST_PIECE = 64
_GZIP_PIECE = 64 * 1024


def _optional(module: str) -> ModuleType | None:
    """An optional compression package, or None when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


class BrotliCompression:
    """Brotli (RFC 7932) via the optional ``brotli`` package."""

    name = "br"

    def __init__(self, brotli: ModuleType, quality: int = 5) -> None:
        self._brotli = brotli
        self.quality = quality
        # brotli >= 1.2 can cap each step's output. Older versions are fed 16 bytes at a time,
        # which bounds each step only by a metablock (up to 16 MiB out of a few bytes in).
        self._bounded = hasattr(brotli.Decompressor, "can_accept_more_data")

    def compress(self, data: bytes) -> bytes:
        """One brotli stream at a quality suited to compressing on the fly."""
        compressed: bytes = self._brotli.compress(data, quality=self.quality)
        return compressed

    def decompress(self, data: bytes, max_size: int) -> bytes:
        """Decodes one brotli stream, stopping once output passes ``max_size``."""
        output = _Output(max_size)
        if not data:
            return b""
        decoder: Any = self._brotli.Decompressor()
        try:
            if self._bounded:
                output.add(decoder.process(data, output_buffer_limit=output.room))
                while not decoder.is_finished():
                    if decoder.can_accept_more_data():
                        raise malformed(self.name, "truncated stream")
                    output.add(decoder.process(b"", output_buffer_limit=output.room))
            else:
                _feed(decoder.process, data, 16, output)
                if not decoder.is_finished():
                    raise malformed(self.name, "truncated stream")
        except self._brotli.error as exc:
            raise malformed(self.name, exc) from None
        return output.result()


def _feed(step: Callable[[bytes], bytes], data: bytes, size: int, output: _Output) -> None:
    """Passes ``data`` to a decoder in ``size``-byte pieces, checking the output after each."""
    view = memoryview(data)
    for start in range(0, len(data), size):
        output.add(step(bytes(view[start : start + size])))


class ZstdCompression:
    """Zstandard (RFC 8878) via the optional ``zstandard`` package."""

    name = "zstd"
    # A zstd block (at most 128 KiB out) takes at least 4 bytes in, so each input byte
    # yields at most 32 KiB: input is fed in pieces sized to the room left.
    _MAX_RATIO = 32 * 1024

    def __init__(self, zstandard: ModuleType, level: int = 3) -> None:
        self._zstd = zstandard
        self.level = level
        # zstandard's (de)compressor contexts are not thread-safe and cost ~20 us to make.
        self._local = threading.local()

    def _contexts(self) -> tuple[Any, Any]:
        """This thread's compressor and decompressor, made on first use."""
        contexts: tuple[Any, Any] | None = getattr(self._local, "contexts", None)
        if contexts is None:
            contexts = (
                self._zstd.ZstdCompressor(level=self.level),
                self._zstd.ZstdDecompressor(),
            )
            self._local.contexts = contexts
        return contexts

    def compress(self, data: bytes) -> bytes:
        """One zstd frame (with its content size)."""
        compressed: bytes = self._contexts()[0].compress(data)
        return compressed

    def decompress(self, data: bytes, max_size: int) -> bytes:
        """Decodes one or more concatenated zstd frames, in bounded pieces."""
        output = _Output(max_size)
        view = memoryview(data)
        position = 0
        decompressor = self._contexts()[1]
        try:
            while position < len(data):
                decoder: Any = decompressor.decompressobj()
                while not decoder.eof:
                    if position >= len(data):
                        raise malformed(self.name, "truncated stream")
                    size = max(128, output.room // self._MAX_RATIO)
                    output.add(decoder.decompress(bytes(view[position : position + size])))
                    position += size
                # Bytes fed past the end of a frame start the next one.
                position = min(position, len(data)) - len(decoder.unused_data)
        except self._zstd.ZstdError as exc:
            raise malformed(self.name, exc) from None
        return output.result()


class CompressionRegistry:
    """Content codings by name, in order of preference; ``identity`` is always known."""

    def __init__(self) -> None:
        self._by_name: dict[str, Compression] = {}

    def register(self, compression: Compression, *, replace: bool = False) -> None:
        """Adds a coding after the others; a taken name is a ValueError unless ``replace``."""
        if compression.name in self._by_name and not replace:
            raise ValueError(f"a compression named {compression.name!r} is already registered")
        self._by_name[compression.name] = compression

    def get(self, name: str) -> Compression | None:
        """The coding with this (case-insensitive) name, ``identity`` included, or None."""
        name = name.strip().lower()
        if name == IDENTITY.name:
            return IDENTITY
        return self._by_name.get(name)

    def names(self) -> list[str]:
        """The registered codings, most preferred first (for ``Accept-Encoding`` headers)."""
        return list(self._by_name)

    def copy(self) -> CompressionRegistry:
        """An independent registry with the same codings."""
        clone = CompressionRegistry()
        clone._by_name = dict(self._by_name)
        return clone


IDENTITY = IdentityCompression()

compressions = CompressionRegistry()
_zstandard = _optional("zstandard")
if _zstandard is not None:
    compressions.register(ZstdCompression(_zstandard))
_brotli = _optional("brotli")
if _brotli is not None:
    compressions.register(BrotliCompression(_brotli))
compressions.register(GzipCompression())


def get(name: str) -> Compression | None:
    """The default registry's coding with this name, or None."""
    return compressions.get(name)


def names() -> list[str]:
    """The default registry's codings, most preferred first."""
    return compressions.names()


def negotiate(
    accept_encoding: str | None, registry: CompressionRegistry = compressions
) -> Compression | None:
    """The first supported coding in an ordered accept list; None for identity or no match.

    q-values do not reorder the list (Connect sends it in preference order), but ``q=0``
    still means "not this one"; ``*`` stands for the registry's most preferred coding.
    """
    if not accept_encoding:
        return None
    for item in accept_encoding.split(","):
        token, *params = (part.strip() for part in item.split(";"))
        if not token or any(_is_q_zero(param) for param in params):
            continue
        if token == "*":
            preferred = registry.names()
            return registry.get(preferred[0]) if preferred else None
        compression = registry.get(token)
        if compression is not None:
            return None if compression.name == IDENTITY.name else compression
    return None


def _is_q_zero(param: str) -> bool:
    """Whether an Accept-Encoding parameter is ``q=0`` (that coding refused)."""
    key, _, value = param.partition("=")
    if key.strip().lower() != "q":
        return False
    try:
        return float(value) == 0
    except ValueError:
        return False
