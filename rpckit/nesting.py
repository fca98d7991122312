"""How deep an encoded value nests, found before any decoder sees it. No I/O.

rpckit bounds nesting itself, on every codec, rather than relying on a decoder's recursion
limit (which moves between Python versions: 3.13's json no longer raises RecursionError on
5,000 levels). ``MAX_DEPTH`` matches protobuf's own recursion limit for the binary format.
``CborScan`` also finds where each item of a CBOR sequence ends, incrementally, so that a
sequence arriving in pieces is scanned once (linear), not re-decoded per piece.
"""

from __future__ import annotations

import re
from itertools import accumulate

from rpckit.errors import Code, RpcError, message_too_large

__all__ = ["MAX_DEPTH", "CborScan", "check_json_depth", "too_deep"]

#: The deepest nesting of objects/arrays (maps/arrays in CBOR and MsgPack) rpckit decodes.
MAX_DEPTH = 100

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def too_deep(kind: str, limit: int = MAX_DEPTH) -> RpcError:
    """The one-line error for a value nested deeper than ``limit``."""
    return RpcError(Code.INVALID_ARGUMENT, f"invalid {kind}: nested deeper than {limit} levels")


def check_json_depth(data: bytes, limit: int = MAX_DEPTH) -> None:
    """Raise ``too_deep`` if JSON text nests objects/arrays deeper than ``limit``.

    Cheap for ordinary messages: the exact scan (strings removed, brackets counted) only
    runs when the text holds more opening brackets than the limit.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    if brackets and max(accumulate(_STEP[b] for b in brackets)) > limit:
        raise too_deep("json", limit)


def _invalid_cbor(reason: str) -> RpcError:
    return RpcError(Code.INVALID_ARGUMENT, f"invalid cbor: {reason}")


class CborScan:
    """Walks CBOR item headers (RFC 8949) to find where one item ends, resumably.

    ``item_end(buffer)`` continues from where the previous call stopped, so feeding an item
    in n pieces costs O(item), not O(item * n). Nesting deeper than ``max_depth`` and byte
    strings longer than ``max_size`` are refused from their headers alone.
    """

    __slots__ = ("max_depth", "max_size", "pos", "stack")

    def __init__(self, max_depth: int = MAX_DEPTH, max_size: int | None = None) -> None:
        self.max_depth = max_depth
        self.max_size = max_size
        #: Where scanning resumes, as an offset into the caller's buffer.
        self.pos = 0
        #: Items still expected by each open container (-1: indefinite, until a break).
        self.stack: list[int] = []

    def shift(self, consumed: int) -> None:
        """The caller dropped ``consumed`` bytes from the front of its buffer."""
        self.pos -= consumed

    def item_end(self, buffer: bytes | bytearray | memoryview) -> int | None:
        """The offset just past the item being scanned, or None if it is not complete yet."""
        pos, stack, size = self.pos, self.stack, len(buffer)
        while pos < size:
            initial = buffer[pos]
            major, extra = initial >> 5, initial & 0x1F
            if extra < 24:
                argument, header = extra, 1
            elif extra < 28:
                header = 1 + (1 << (extra - 24))
                if pos + header > size:
                    break
                argument = int.from_bytes(buffer[pos + 1 : pos + header], "big")
            elif extra == 31 and major in (2, 3, 4, 5, 7):
                argument, header = -1, 1
            else:
                raise _invalid_cbor(f"reserved additional information {extra}")
            if major in (2, 3) and argument >= 0:
                if self.max_size is not None and argument > self.max_size:
                    raise message_too_large(self.max_size)
                if pos + header + argument > size:
                    break
                pos += header + argument
                complete = _child_done(stack)
            elif major == 7 and argument == -1:  # a break ends an indefinite container
                if not stack or stack[-1] != -1:
                    raise _invalid_cbor("unexpected break")
                stack.pop()
                pos += header
                complete = _child_done(stack)
            elif major in (2, 3, 4, 5, 6):
                pos += header
                count = -1 if argument == -1 else argument * 2 if major == 5 else argument
                if major == 6:
                    count = 1  # a tag wraps exactly one item
                if count == 0:
                    complete = _child_done(stack)
                else:
                    stack.append(count)
                    if len(stack) > self.max_depth:
                        raise too_deep("cbor", self.max_depth)
                    continue
            else:  # integers, simple values, floats
                pos += header
                complete = _child_done(stack)
            if complete:
                self.pos = pos
                return pos
        self.pos = pos
        return None


def _child_done(stack: list[int]) -> bool:
    """One item finished inside ``stack``'s innermost container; True when the top-level
    item is complete (containers that thereby fill up are closed too)."""
    while stack:
        if stack[-1] < 0:
            return False
        stack[-1] -= 1
        if stack[-1]:
            return False
        stack.pop()
    return True
