"""File metadata on the wire: Content-Disposition (RFC 6266), safe upload names, and the
check of an untrusted name to be looked up under a root directory. No I/O."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, unquote

__all__ = [
    "BadFileName",
    "content_disposition",
    "parse_content_disposition",
    "relative_parts",
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


#: The longest untrusted relative name (in characters) ``relative_parts`` looks at.
MAX_RELATIVE_NAME = 4096


class BadFileName(ValueError):
    """An untrusted file name that could name something outside its root; the message says
    which rule it broke and never repeats the name."""


def relative_parts(name: str, *, hidden: bool = False) -> tuple[str, ...] | None:
    """The components of an untrusted name relative to a root directory (``a/b.txt`` ->
    ``("a", "b.txt")``).

    Raises BadFileName for a name that is empty, too long, absolute, or has NUL, a
    backslash (a separator elsewhere), or an empty, ``.`` or ``..`` component: joined to a
    root, what is left can only name something under it (symlinks aside: the caller resolves
    and checks those). A component starting with ``.`` (``.env``, ``.git``) gives None
    ("no such file") unless ``hidden``.
    """
    if not name:
        raise BadFileName("file name is empty")
    if len(name) > MAX_RELATIVE_NAME:
        raise BadFileName(f"file name is longer than {MAX_RELATIVE_NAME} characters")
    if "\0" in name:
        raise BadFileName("file name contains NUL")
    if "\\" in name:
        raise BadFileName("file name contains a backslash")
    if name.startswith("/"):
        raise BadFileName("file name must be relative, not start with '/'")
    parts = tuple(name.split("/"))
    if "" in parts:
        raise BadFileName("file name has an empty component ('//' or a trailing '/')")
    if "." in parts or ".." in parts:
        raise BadFileName("file name has a '.' or '..' component")
    if not hidden and any(part.startswith(".") for part in parts):
        return None
    return parts
