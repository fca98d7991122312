"""The ``rpckit.v1`` WebSocket sub-protocol's rules, free of I/O (documented in README.md,
"WebSocket transport").

One call per WebSocket, at the method's path (``/<package>.<Service>/<Method>``). The
sub-protocol name picks the message encoding: ``rpckit.v1.json``, ``rpckit.v1.proto`` (or any
registered encoding: ``rpckit.v1.<name>``). Binary frames carry one encoded message each;
text frames carry JSON control objects with a ``type``:

- client: ``start`` (first frame: ``headers``, ``timeout_ms``), ``end`` (half-close),
  ``cancel``;
- server: ``headers`` (before the first message), ``end`` (the final status as a Connect
  ``error`` object, absent on success, and ``trailers``); the server then closes with 1000.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rpckit.errors import Code, RpcError
from rpckit.http.wire import error_from_json, error_json, metadata_json
from rpckit.metadata import Metadata
from rpckit.nesting import check_json_depth

__all__ = [
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "MAX_CONTROL_SIZE",
    "PREFIX",
    "Control",
    "Start",
    "choose_subprotocol",
    "end_frame",
    "headers_frame",
    "origin_allowed",
    "parse_client_control",
    "parse_server_control",
    "parse_start",
    "start_frame",
    "subprotocol",
]

#: Sub-protocol names are ``rpckit.v1.<encoding>``.
PREFIX = "rpckit.v1."
#: The largest ``timeout_ms`` accepted (about 115 days, like Connect's 10 digits).
MAX_TIMEOUT_MS = 9_999_999_999
#: Control frames are small; a larger text frame is refused before it is parsed.
MAX_CONTROL_SIZE = 64 * 1024
#: WebSocket close codes used by the server.
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009


def subprotocol(encoding: str) -> str:
    """The sub-protocol name for an encoding."""
    return PREFIX + encoding


def choose_subprotocol(offered: Sequence[str], encodings: Iterable[str]) -> str | None:
    """The first offered ``rpckit.v1.<encoding>`` whose encoding is registered, or None."""
    known = set(encodings)
    for name in offered:
        name = name.strip()
        if name.startswith(PREFIX) and name[len(PREFIX) :] in known:
            return name
    return None


@dataclass(frozen=True, slots=True)
class Start:
    """The client's first frame: the call's headers and its timeout in seconds."""

    headers: Metadata
    timeout: float | None


@dataclass(frozen=True, slots=True)
class Control:
    """A control frame after ``start``: ``end`` (half-close) or ``cancel``."""

    type: str


def _object(text: str, what: str) -> dict[str, Any]:
    if len(text) > MAX_CONTROL_SIZE:
        raise RpcError(Code.INVALID_ARGUMENT, f"{what} is larger than {MAX_CONTROL_SIZE} bytes")
    # The same nesting bound as every codec, checked before json sees the text: 3,000 levels
    # fit in 64 KiB and would reach the interpreter's recursion limit.
    try:
        check_json_depth(text.encode("utf-8", "surrogatepass"))
    except RpcError as error:
        raise RpcError(Code.INVALID_ARGUMENT, f"{what}: {error.message}") from None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise RpcError(Code.INVALID_ARGUMENT, f"{what} is not JSON") from None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise RpcError(Code.INVALID_ARGUMENT, f"{what} must be a JSON object with a type")
    return value


def _metadata(value: Any, what: str) -> Metadata:
    metadata = Metadata()
    if value is None:
        return metadata
    if not isinstance(value, dict):
        raise RpcError(Code.INVALID_ARGUMENT, f"{what} must map names to strings")
    for key, values in value.items():
        for item in values if isinstance(values, list) else [values]:
            if not isinstance(item, str):
                raise RpcError(Code.INVALID_ARGUMENT, f"{what}: {key!r} must be a string")
            metadata.add(str(key), item)
    return metadata


def parse_start(frame: str | bytes | None) -> Start:
    """The first client frame, which must be a ``start`` control frame."""
    if not isinstance(frame, str):
        raise RpcError(
            Code.INVALID_ARGUMENT, 'the first frame must be a text frame {"type": "start"}'
        )
    value = _object(frame, "the first frame")
    if value["type"] != "start":
        raise RpcError(
            Code.INVALID_ARGUMENT, f"the first frame must be start, not {value['type']!r}"
        )
    timeout_ms = value.get("timeout_ms")
    if timeout_ms is not None and (
        isinstance(timeout_ms, bool)
        or not isinstance(timeout_ms, int)
        or not 0 <= timeout_ms <= MAX_TIMEOUT_MS
    ):
        raise RpcError(
            Code.INVALID_ARGUMENT,
            f"timeout_ms must be an integer from 0 to {MAX_TIMEOUT_MS}, not {timeout_ms!r}",
        )
    headers = _metadata(value.get("headers"), "headers")
    return Start(headers, None if timeout_ms is None else timeout_ms / 1000)


def parse_client_control(frame: str) -> Control:
    """A client control frame after ``start``: ``end`` or ``cancel``."""
    value = _object(frame, "a control frame")
    if value["type"] not in ("end", "cancel"):
        raise RpcError(
            Code.INVALID_ARGUMENT,
            f"unknown control frame {value['type']!r}; expected end or cancel",
        )
    return Control(value["type"])


def start_frame(headers: Iterable[tuple[str, str]], timeout: float | None) -> str:
    """The client's ``start`` frame."""
    body: dict[str, Any] = {"type": "start"}
    metadata = metadata_json(headers)
    if metadata:
        body["headers"] = metadata
    if timeout is not None:
        body["timeout_ms"] = max(0, min(MAX_TIMEOUT_MS, round(timeout * 1000)))
    return json.dumps(body, separators=(",", ":"))


def headers_frame(headers: Iterable[tuple[str, str]]) -> str:
    """The server's ``headers`` frame."""
    return json.dumps({"type": "headers", "headers": metadata_json(headers)}, separators=(",", ":"))


def end_frame(error: RpcError | None, trailers: Iterable[tuple[str, str]]) -> str:
    """The server's final ``end`` frame: the error (None on success) and the trailers."""
    body: dict[str, Any] = {"type": "end"}
    pairs = list(trailers)
    if error is not None:
        body["error"] = error_json(error)
        pairs += error.metadata
    if pairs:
        body["trailers"] = metadata_json(pairs)
    return json.dumps(body, separators=(",", ":"))


def parse_server_control(frame: str) -> tuple[str, Metadata, RpcError | None]:
    """A server control frame: its type (``headers``/``end``), the metadata it carries and,
    for ``end``, the error (None on success)."""
    try:
        value = _object(frame, "a server control frame")
    except RpcError as bad:
        raise RpcError(Code.INTERNAL, bad.message) from None
    kind = value["type"]
    if kind == "headers":
        return kind, _metadata(value.get("headers"), "headers"), None
    if kind == "end":
        trailers = _metadata(value.get("trailers"), "trailers")
        raw = value.get("error")
        error = None
        if raw is not None:
            error = error_from_json(raw)
            error.metadata = trailers.items()
        return kind, trailers, error
    raise RpcError(Code.INTERNAL, f"unknown server control frame {kind!r}")


def origin_allowed(
    origin: str | None,
    host: str | None,
    origins: Sequence[str],
    origin_regex: str | None,
    scheme: str = "ws",
) -> bool:
    """Whether a WebSocket from ``origin`` may connect: no Origin (not a browser), one the CORS
    settings allow (``--cors-origin``: exact origins or ``*``; ``origin_regex``), or the
    server's own origin when its Host names it by address or ``localhost``.

    The Host header cannot vouch for a name: a DNS-rebinding page (``http://evil.example``
    resolved to this server) sends ``Host: evil.example`` and ``Origin: http://evil.example``
    alike. Only an IP literal or ``localhost`` (which browsers never resolve through DNS) in
    both, with the same port and the scheme of the connection (``ws`` for ``http``, ``wss``
    for ``https``), makes a page the server's own; any other page must be allowed by name.
    """
    if origin is None:
        return True
    if "*" in origins or _normal_origin(origin) in {_normal_origin(o) for o in origins}:
        return True
    if origin_regex is not None and re.fullmatch(origin_regex, origin) is not None:
        return True
    return host is not None and _own_origin(origin, host, scheme)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _normal_origin(origin: str) -> str:
    """``scheme://host:port`` lower-cased, the scheme's default port written out."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    except ValueError:
        return origin
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{port}"


def _own_origin(origin: str, host: str, scheme: str) -> bool:
    web = "https" if scheme in ("wss", "https") else "http"
    try:
        parts = urlsplit(origin.strip())
        served = urlsplit(f"{web}://{host.strip()}")
        origin_port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
        host_port = served.port or _DEFAULT_PORTS[web]
    except ValueError:
        return False
    name = (parts.hostname or "").lower()
    return (
        parts.scheme.lower() == web
        and name == (served.hostname or "").lower()
        and origin_port == host_port
        and _not_rebindable(name)
    )


def _not_rebindable(name: str) -> bool:
    """An IP literal or ``localhost``: names no DNS answer can point elsewhere."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
