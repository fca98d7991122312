"""``--interceptor`` targets for the cookie and query-parameter credentials tests: the
example's JSON stream (served as SSE to ``EventSource``) behind ``BearerAuth``."""

from __future__ import annotations

from rpckit.interceptors.auth import BearerAuth, static_tokens

__all__ = ["COOKIE", "GUARDED", "QUERY", "TOKEN", "header_cookie_query", "header_only"]

TOKEN = "s3cret-token-value"
COOKIE = "rpckit_token"
QUERY = "access_token"
GUARDED = ["examples.streams.v1.StreamsService/JsonStream"]


def header_cookie_query() -> BearerAuth:
    """The header, the ``rpckit_token`` cookie or the ``access_token`` query parameter."""
    return BearerAuth(static_tokens({TOKEN: "ada"}), methods=GUARDED, cookie=COOKIE, query=QUERY)


def header_only() -> BearerAuth:
    """The default: the ``Authorization`` header alone."""
    return BearerAuth(static_tokens({TOKEN: "ada"}), methods=GUARDED)
