"""Request and response metadata: an ordered multi-map of lower-case keys to strings.

Keys ending in ``-bin`` carry binary values; every transport holds them base64-encoded
(as the Connect protocol sends them), so handlers see one representation everywhere.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Iterator, Mapping

__all__ = ["Metadata", "MetadataLike", "decode_bin"]

#: What a Metadata is built from; ``bytes`` values are for ``-bin`` keys.
MetadataLike = Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]]


class Metadata:
    """An ordered multi-map of metadata; keys are case-insensitive and stored lower-case.

    ``md["x"] = "y"`` replaces, ``md["x"]`` reads the first value, ``del md["x"]`` drops all;
    ``add`` appends another value. Iterating yields ``(key, value)`` pairs, not keys.
    """

    __slots__ = ("_items", "_raw", "_skip")

    def __init__(self, items: MetadataLike | None = None) -> None:
        #: Headers not read yet: an ASGI scope's, or a function that gives the pairs.
        self._raw: list[tuple[bytes, bytes]] | Callable[[], MetadataLike | None] | None = None
        self._skip: frozenset[str] = frozenset()
        self._items: list[tuple[str, str]] = []
        if items is not None:
            self.extend(items)

    @classmethod
    def from_asgi(cls, headers: list[tuple[bytes, bytes]]) -> Metadata:
        """The headers of an ASGI scope (names already lower-case, per the ASGI spec).

        Nothing is decoded yet: ``get`` reads the raw headers, and anything else decodes
        them all once. Most calls only ever look up a header or two."""
        return cls._unread(headers)

    @classmethod
    def deferred(cls, source: Callable[[], MetadataLike | None]) -> Metadata:
        """Metadata read from ``source()`` when first used, not before (grpcio's invocation
        metadata, which most calls never look at, is built anew by every read; None: none)."""
        return cls._unread(source)

    @classmethod
    def _unread(
        cls, raw: list[tuple[bytes, bytes]] | Callable[[], MetadataLike | None]
    ) -> Metadata:
        metadata = cls.__new__(cls)
        metadata._raw = raw
        metadata._skip = frozenset()
        return metadata  # ``_items`` is left unset until first used (see __getattr__)

    def __getattr__(self, name: str) -> list[tuple[str, str]]:
        """Only for ``_items`` of headers not decoded yet: decode them now."""
        raw = self._raw if name == "_items" else None
        if raw is None:
            raise AttributeError(name)
        skip = self._skip
        if callable(raw):  # keys lower-cased and -bin bytes encoded as by the constructor
            items = Metadata(raw() or ())._items  # grpcio gives None for no metadata
        else:
            items = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
        if skip:
            items = [(k, v) for k, v in items if k not in skip]
        self._items = items
        self._raw = None
        return items

    def without(self, keys: frozenset[str]) -> Metadata:
        """A copy without the (lower-case) ``keys`` (still undecoded, if this one is)."""
        metadata = Metadata.__new__(Metadata)
        metadata._skip = self._skip | keys if self._skip else keys
        if self._raw is not None:
            metadata._raw = self._raw
        else:
            metadata._raw = None
            metadata._items = [(k, v) for k, v in self._items if k not in keys]
        return metadata

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value for ``key``, or ``default``."""
        key = key.lower()
        raw = self._raw
        if raw is not None and not callable(raw):
            if key in self._skip:
                return default
            try:
                name = key.encode("latin-1")
            except UnicodeEncodeError:
                return default  # no header name can match it
            for raw_key, raw_value in raw:
                if raw_key == name:
                    return raw_value.decode("latin-1")
            return default
        for k, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, key: str) -> list[str]:
        """Every value for ``key``, in order."""
        key = key.lower()
        return [v for k, v in self._items if k == key]

    def get_bytes(self, key: str) -> bytes | None:
        """The first value of a ``-bin`` key, decoded from base64; None if absent or invalid."""
        value = self.get(key)
        if value is None:
            return None
        try:
            return decode_bin(value)
        except (binascii.Error, ValueError):
            return None

    def add(self, key: str, value: str | bytes) -> None:
        """Append a value; bytes (for ``-bin`` keys) are stored base64-encoded."""
        key = key.lower()
        if isinstance(value, bytes):
            if not key.endswith("-bin"):
                raise ValueError(f"binary metadata needs a key ending in -bin, not {key!r}")
            value = base64.b64encode(value).decode("ascii")
        self._items.append((key, value))

    def set(self, key: str, value: str | bytes) -> None:
        """Replace every value of ``key`` with one value."""
        self.remove(key)
        self.add(key, value)

    def remove(self, key: str) -> None:
        """Drop every value of ``key``."""
        key = key.lower()
        self._items = [(k, v) for k, v in self._items if k != key]

    def extend(self, items: MetadataLike) -> None:
        """Append many pairs (or a mapping's items)."""
        pairs = items.items() if isinstance(items, Mapping) else items
        for k, v in pairs:
            self.add(k, v)

    def items(self) -> list[tuple[str, str]]:
        """All pairs, in order."""
        return list(self._items)

    def __getitem__(self, key: str) -> str:
        """``md[key]``: the first value of ``key``; KeyError if it has none."""
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: str | bytes) -> None:
        """``md[key] = value``: the same as ``set`` (replaces every value of ``key``)."""
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        """``del md[key]``: drop every value of ``key``; KeyError if it has none."""
        if key not in self:
            raise KeyError(key)
        self.remove(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Metadata) and self._items == other._items

    def __repr__(self) -> str:
        return f"Metadata({self._items!r})"


def decode_bin(value: str) -> bytes:
    """Decode a ``-bin`` value; padded or unpadded base64, as the Connect protocol allows."""
    return base64.b64decode(value + "=" * (-len(value) % 4))
