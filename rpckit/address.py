"""The addresses of ``--grpc`` and ``--http``: one parser, so that both flags mean the same.

Accepted forms: ``:PORT`` (loopback, ``127.0.0.1``: a development tool listens only where
the developer is unless told otherwise), ``HOST:PORT`` (a name or an IPv4 address;
``0.0.0.0:PORT`` for every IPv4 interface) and ``[IPV6]:PORT`` (``[::]:PORT`` for every
interface, ``[::1]:PORT`` for IPv6 loopback). Port 0 picks a free port. Unix sockets
(``unix:/path``) are refused: the HTTP servers and the worker supervisor bind TCP only.
Pure: no I/O, no name resolution.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = ["ADDRESS_FORMS", "DEFAULT_HOST", "Address", "AddressError", "parse_address"]

#: What ``:PORT`` means.
DEFAULT_HOST = "127.0.0.1"
#: The accepted forms, as ``--help`` and error messages name them.
ADDRESS_FORMS = ":PORT, HOST:PORT or [IPV6]:PORT"

_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?", re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)


class AddressError(ValueError):
    """An address that is not one of ``ADDRESS_FORMS`` (the message says why, in one line)."""


@dataclass(frozen=True)
class Address:
    """A TCP address to listen on: a host name or IP literal (no brackets) and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        """The canonical ``HOST:PORT`` (``[IPV6]:PORT``), as grpcio and the CLI take it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def with_port(self, port: int) -> Address:
        """The same host with ``port`` (the port a server really bound for port 0)."""
        return Address(self.host, port)


def parse_address(text: str) -> Address:
    """``text`` as an Address; AddressError (one line, naming the problem) otherwise."""
    if text.startswith("unix:"):
        raise AddressError(f"unix sockets are not supported ({text!r}); give {ADDRESS_FORMS}")
    if "://" in text:
        raise AddressError(f"{text!r} is a URL; give {ADDRESS_FORMS}")
    if text.startswith("["):
        host, port = _bracketed(text)
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            hint = f" (did you mean :{text}?)" if _PORT.fullmatch(text) else ""
            raise AddressError(f"no port in {text!r}{hint}; give {ADDRESS_FORMS}")
        if "[" in host or "]" in host:
            raise AddressError(f"misplaced bracket in {text!r}; an IPv6 address is [IPV6]:PORT")
        if ":" in host:
            raise AddressError(f"an IPv6 address goes in brackets: [{host}]:{port or 'PORT'}")
        if host and (len(host) > 253 or not _HOSTNAME.fullmatch(host)):
            raise AddressError(f"{host!r} is not a host name or IP address (in {text!r})")
    return Address(host or DEFAULT_HOST, _port(port, text))


def _bracketed(text: str) -> tuple[str, str]:
    """``[IPV6]:PORT`` as ``(IPV6, PORT)``."""
    inside, closed, rest = text[1:].partition("]")
    if not closed:
        raise AddressError(f"missing ']' in {text!r}; an IPv6 address is [IPV6]:PORT")
    try:
        ipaddress.IPv6Address(inside)
    except ValueError:
        raise AddressError(f"{inside!r} in {text!r} is not an IPv6 address") from None
    if not rest.startswith(":"):
        raise AddressError(f"no port in {text!r}; give [IPV6]:PORT")
    return inside, rest[1:]


def _port(port: str, text: str) -> int:
    if not port:
        raise AddressError(f"no port in {text!r}; give {ADDRESS_FORMS}")
    if not _PORT.fullmatch(port) or int(port) > 65535:
        raise AddressError(f"port {port!r} (in {text!r}) is not a number from 0 to 65535")
    return int(port)
