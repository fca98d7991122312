"""The settings of one HTTP bridge, as one frozen object every endpoint reads.

``BridgeOptions`` holds how the bridge speaks (which encodings and compressions, how large a
message may be, when to compress, how strict Connect is, how often an idle SSE stream gets a
comment); who may call it (``Cors``), what it serves besides the methods (``static``) and
what runs around every call (interceptors) are ``create_app``'s other arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from rpckit.limits import DEFAULT_MAX_MESSAGE_SIZE

if TYPE_CHECKING:
    from rpckit.compression import CompressionRegistry
    from rpckit.encodings import EncodingRegistry

__all__ = [
    "DEFAULT_COMPRESS_MIN_BYTES",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_SSE_KEEP_ALIVE",
    "BridgeOptions",
]

#: Responses smaller than this many bytes are not worth compressing.
DEFAULT_COMPRESS_MIN_BYTES = 1024
#: Seconds of silence after which an SSE stream gets a keep-alive comment.
DEFAULT_SSE_KEEP_ALIVE = 15.0


def _global_encodings() -> EncodingRegistry:
    from rpckit.encodings import encodings

    return encodings


def _global_compressions() -> CompressionRegistry:
    from rpckit.compression import compressions

    return compressions


@dataclass(frozen=True)
class BridgeOptions:
    """Settings every endpoint of one HTTP bridge shares (``create_app(options=...)``).

    The defaults are ``rpckit serve``'s; a worker process receives a copy in which the
    process-wide ``encodings``/``compressions`` registries stay the process-wide ones (so
    encodings its own imports register are seen), other registries travel by value.
    """

    #: Codecs by name and content type (``rpckit.encodings``).
    encodings: EncodingRegistry = field(default_factory=_global_encodings)
    #: Compressions by name (``rpckit.compression``).
    compressions: CompressionRegistry = field(default_factory=_global_compressions)
    #: Bytes one request or response message may have (``--max-message-size``).
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    #: Responses smaller than this are not compressed unless the handler asked for it.
    compress_min_bytes: int = DEFAULT_COMPRESS_MIN_BYTES
    #: Refuse Connect requests without ``Connect-Protocol-Version: 1`` (the spec allows both).
    require_protocol_version: bool = False
    #: Seconds of silence after which an SSE response gets a ``: keep-alive`` comment, so
    #: that proxies and browsers do not give up on a stream waiting for its first event.
    sse_keep_alive: float = DEFAULT_SSE_KEEP_ALIVE

    def __post_init__(self) -> None:
        if self.max_message_size < 1:
            raise ValueError(f"max_message_size must be positive, not {self.max_message_size}")
        if self.compress_min_bytes < 0:
            raise ValueError(
                f"compress_min_bytes must not be negative, not {self.compress_min_bytes}"
            )
        if not self.sse_keep_alive > 0:
            raise ValueError(f"sse_keep_alive must be positive seconds, not {self.sse_keep_alive}")

    def __reduce__(self) -> tuple[Any, ...]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if values["encodings"] is _global_encodings():
            del values["encodings"]
        if values["compressions"] is _global_compressions():
            del values["compressions"]
        return (_rebuild, (values,))


def _rebuild(values: dict[str, Any]) -> BridgeOptions:
    """Unpickle ``BridgeOptions``: a missing registry is this process's global one."""
    return BridgeOptions(**values)
