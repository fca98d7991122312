"""``--interceptor tests.serving.auth_all:everything``: every call (reflection over Connect
included) needs ``Authorization: Bearer test-token``."""

from __future__ import annotations

from rpckit.interceptors.auth import BearerAuth, static_tokens


def everything() -> BearerAuth:
    """A bearer-token check on every method."""
    return BearerAuth(static_tokens({"test-token": "tester"}))
