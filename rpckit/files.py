"""File metadata on the wire: Content-Disposition (RFC 6266) and safe upload names. No I/O."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, unquote

__all__ = [
    "content_disposition",
    "parse_content_disposition",
    "sanitize_filename",
    "truncate_utf8",
]

_PARAM = re.compile(r';\s*([A-Za-z0-9_*.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
#: The longest file name (in UTF-8 bytes) Linux and most file systems accept.
_MAX_NAME = 255


def content_disposition(filename: str | None, disposition: str = "attachment") -> str:
    """A Content-Disposition value with an ASCII ``filename`` and an RFC 5987 ``filename*``."""
    if not filename:
        return disposition
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "_" for c in filename)
    value = f'{disposition}; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


def parse_content_disposition(value: str | None) -> str | None:
    """The file name a Content-Disposition value gives (``filename*`` first), or None."""
    if not value:
        return None
    params: dict[str, str] = {}
    for key, raw in _PARAM.findall(value):
        raw = raw.strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[key.lower()] = raw
    extended = params.get("filename*")
    if extended:
        charset, _, rest = extended.partition("'")
        _lang, _, encoded = rest.partition("'")
        if encoded and charset.lower() in ("utf-8", "iso-8859-1"):
            try:
                return unquote(encoded, encoding=charset.lower(), errors="strict")
            except UnicodeDecodeError:
                pass
    return params.get("filename")


def sanitize_filename(name: str | None) -> str | None:
    """A client-supplied name reduced to a safe base name, or None if nothing safe is left.

    Directory parts (``/`` and ``\\``), control characters and leading dots are dropped, so
    the result can never name a path outside a directory; it is still only a label.
    """
    if not name:
        return None
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    name = name.strip().lstrip(".").strip()
    if not name:
        return None
    return truncate_utf8(name, _MAX_NAME)


def truncate_utf8(name: str, limit: int, keep: str = "") -> str:
    """``name`` cut so that it, plus ``keep`` inserted before its extension, fits in
    ``limit`` UTF-8 bytes (file systems bound names in bytes, not characters).

    ``keep`` is a suffix such as `` (1)``; the extension survives when it is short. The
    cut never splits a character.
    """
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension.encode()) > 16:
        stem, dot, extension = name, "", ""
    tail = (keep + dot + extension).encode()
    room = limit - len(tail)
    if room <= 0:
        return (keep + dot + extension).encode()[:limit].decode(errors="ignore")
    cut = stem.encode()[:room].decode(errors="ignore").rstrip()
    return cut + keep + dot + extension
