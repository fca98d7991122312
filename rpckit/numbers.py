"""Strict integers from the wire: the one parser every header, path and query number uses.

``str.isdigit()`` accepts non-ASCII digits (``²``, ``٣``) and ``int()`` refuses strings
over 4,300 digits with a ``ValueError``; either one let a malformed number reach a 500.
Here a number is ASCII digits only (an optional sign where allowed), at most a bounded
count of characters, inside a range; anything else is ``invalid_argument`` in one line.
No I/O.
"""

from __future__ import annotations

from rpckit.errors import Code, RpcError

__all__ = ["MAX_DIGITS", "parse_int", "try_int"]

#: No number on the wire needs more digits than this (2**64 has 20).
MAX_DIGITS = 20
_DIGITS = frozenset("0123456789")
_SHOWN = 40


def try_int(
    text: str,
    *,
    minimum: int = 0,
    maximum: int = 2**63 - 1,
    signed: bool = False,
    max_digits: int = MAX_DIGITS,
) -> int | None:
    """``text`` as an int when it is a strict decimal in ``minimum..maximum``, else None.

    Strict: ASCII digits only, no spaces, no ``_``, at most ``max_digits`` digits, and a
    leading ``+``/``-`` only when ``signed``.
    """
    digits = text
    if signed and digits[:1] in ("+", "-"):
        digits = digits[1:]
    if not digits or len(digits) > max_digits or not _DIGITS.issuperset(digits):
        return None
    value = int(text)
    if not minimum <= value <= maximum:
        return None
    return value


def parse_int(
    text: str,
    what: str,
    *,
    minimum: int = 0,
    maximum: int = 2**63 - 1,
    signed: bool = False,
    max_digits: int = MAX_DIGITS,
) -> int:
    """``text`` as an int (see ``try_int``); otherwise ``invalid_argument`` naming ``what``."""
    value = try_int(text, minimum=minimum, maximum=maximum, signed=signed, max_digits=max_digits)
    if value is None:
        shown = text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."
        raise RpcError(
            Code.INVALID_ARGUMENT,
            f"{what} must be an integer from {minimum} to {maximum}, not {shown!r}",
        )
    return value
