"""Schemathesis hooks (``SCHEMATHESIS_HOOKS``): a request stream as NDJSON, one line per
generated item, so client-streaming routes are exercised too."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> bytes:
    """One generated message as a one-line stream."""
    return json.dumps(value).encode() + b"\n"
