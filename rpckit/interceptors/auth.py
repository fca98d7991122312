"""Bearer-token and API-key authentication, the same on every transport.

``BearerAuth(verify)`` reads ``Authorization: Bearer <token>`` (HTTP header or gRPC
metadata alike), ``ApiKeyAuth(verify)`` reads ``x-api-key: <key>``; both call
``verify(token, ctx)`` (plain or ``async``) before the handler runs:

- no credentials, or ``verify`` returns None: ``unauthenticated``;
- ``verify`` raises ``PermissionError``: ``permission_denied`` (its text, if any, is the
  message: the token is good but may not call this method);
- ``verify`` raises ``RpcError``: that error, as raised;
- anything else ``verify`` returns is the principal, put on ``ctx.principal``.

``methods`` limits the check to some methods: full names (``"pkg.Svc/Method"``, a leading
``/`` optional) or a predicate on the ``MethodSpec``; other methods pass untouched.

Browsers cannot put a header on an ``EventSource`` (or a plain link): ``cookie="name"`` and
``query="name"`` (opt-in) also take the bare token from that cookie or query parameter
when the header is absent. A cookie is sent cross-site too (set it ``SameSite=Strict`` or
``Lax``); a URL lands in logs and history (short-lived tokens). The plain routes leave the
query parameter out of the request message; rpckit's access log never prints the query.
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import parse_qsl

from rpckit.errors import Code, RpcError
from rpckit.interceptors import Interceptor
from rpckit.service import MethodSpec

if TYPE_CHECKING:
    from rpckit.context import Context

__all__ = [
    "ApiKeyAuth", "BearerAuth", "Credentials", "MethodSelector", "Verify", "static_tokens",
]  # fmt: skip

#: ``verify(token, ctx) -> principal | None``, plain or ``async``.
Verify: TypeAlias = Callable[[str, "Context"], Any | Awaitable[Any]]
#: Which methods to protect: full names, or a predicate on the method.
MethodSelector: TypeAlias = Collection[str] | Callable[[MethodSpec[Any, Any]], bool]


def static_tokens(tokens: Mapping[str, Any]) -> Callable[[str, Context], Any]:
    """A ``verify`` for a fixed table ``{token: principal}``, compared in constant time."""
    table = [(token.encode(), principal) for token, principal in tokens.items()]

    def verify(token: str, ctx: Context) -> Any:
        given = token.encode()
        found = None
        for known, principal in table:  # no early exit: timing says nothing about a match
            if hmac.compare_digest(known, given):
                found = principal
        return found

    return verify


@dataclass(frozen=True)
class Credentials:
    """Where a call's token is looked for, in this order: the header (or gRPC metadata key,
    the token after ``scheme``; ``scheme=None`` takes the whole value), then the cookie,
    then the query parameter (both opt-in, None: not read; a bare token)."""

    header: str = "authorization"
    scheme: str | None = "Bearer"
    cookie: str | None = None
    query: str | None = None

    def from_header(self, value: str | None) -> str | None:
        """The token in a header value, or None without one (or with another scheme)."""
        if value is None:
            return None
        if self.scheme is None:
            return value.strip() or None
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != self.scheme.lower():
            return None
        return token.strip() or None

    def from_cookies(self, headers: Collection[str]) -> str | None:
        """The value of the ``cookie`` named cookie in ``Cookie`` header values."""
        if self.cookie is None:
            return None
        for header in headers:
            for pair in header.split(";"):
                name, sep, value = pair.partition("=")
                if sep and name.strip() == self.cookie:
                    token = value.strip()
                    if len(token) >= 2 and token[0] == token[-1] == '"':
                        token = token[1:-1]  # RFC 6265 allows a quoted cookie value
                    return token or None
        return None

    def from_query(self, query: bytes) -> str | None:
        """The first value of the ``query`` parameter in a raw query string."""
        if self.query is None or not query:
            return None
        text = query.decode("latin-1")
        for name, value in parse_qsl(text, keep_blank_values=True, errors="replace"):
            if name == self.query:
                return value or None
        return None


def _selector(methods: MethodSelector | None) -> Callable[[MethodSpec[Any, Any]], bool]:
    if methods is None:
        return lambda method: True
    if callable(methods):
        return methods
    names = {name.lstrip("/") for name in methods}
    return lambda method: method.path[1:] in names


class BearerAuth(Interceptor):
    """Rejects calls without a valid token before their handler runs.

    ``header`` is the header (or metadata key) holding the credentials and ``scheme`` the
    word before the token (``Bearer``, matched case-insensitively); ``scheme=None`` takes
    the whole header value as the token. ``cookie`` and ``query`` name a cookie and a query
    parameter also read (for browsers' ``EventSource``), when the header is absent.
    """

    #: The prefix of this interceptor's OpenAPI security scheme names.
    scheme_prefix = "bearer"

    def __init__(
        self,
        verify: Verify,
        *,
        methods: MethodSelector | None = None,
        header: str = "authorization",
        scheme: str | None = "Bearer",
        cookie: str | None = None,
        query: str | None = None,
    ) -> None:
        self.verify = verify
        #: Where the token is looked for (frozen).
        self.credentials = Credentials(header.lower(), scheme, cookie, query)
        self.query_parameters = frozenset([query] if query else [])
        self._select = _selector(methods)
        self._selected: dict[str, bool] = {}

    @property
    def header(self) -> str:
        """The header (or metadata key) holding the token."""
        return self.credentials.header

    @property
    def scheme(self) -> str | None:
        """The word before the token in the header (None: the whole value is the token)."""
        return self.credentials.scheme

    def protects(self, method: MethodSpec[Any, Any]) -> bool:
        """Whether calls to ``method`` need credentials (remembered per method)."""
        selected = self._selected.get(method.path)
        if selected is None:
            selected = self._selected[method.path] = bool(self._select(method))
        return selected

    def token(self, ctx: Context) -> str | None:
        """The credentials the call carries (header, then cookie, then query parameter), or
        None without any (a malformed header counts as none)."""
        where = self.credentials
        token = where.from_header(ctx.request_headers.get(where.header))
        if token is None and where.cookie is not None:
            token = where.from_cookies(ctx.request_headers.get_all("cookie"))
        if token is None and where.query is not None:
            token = where.from_query(ctx.query)
        return token

    def security_schemes(self) -> dict[str, dict[str, Any]]:
        """The OpenAPI security schemes this interceptor accepts, any one of them enough."""
        where = self.credentials
        prefix = self.scheme_prefix
        schemes: dict[str, dict[str, Any]] = {}
        if where.header == "authorization" and where.scheme is not None:
            schemes[f"{prefix}Auth"] = {"type": "http", "scheme": where.scheme.lower()}
        else:
            header: dict[str, Any] = {"type": "apiKey", "in": "header", "name": where.header}
            if where.scheme is not None:
                header["description"] = f"the header's value is `{where.scheme} <token>`"
            schemes[f"{prefix}Auth"] = header
        if where.cookie is not None:
            schemes[f"{prefix}Cookie"] = {"type": "apiKey", "in": "cookie", "name": where.cookie}
        if where.query is not None:
            schemes[f"{prefix}Query"] = {"type": "apiKey", "in": "query", "name": where.query}
        return schemes

    async def on_start(self, ctx: Context) -> None:
        if not self.protects(ctx.method):
            return
        token = self.token(ctx)
        if token is None:
            raise self._unauthenticated(ctx, f"missing credentials: send {self._expected()}")
        try:
            principal = self.verify(token, ctx)
            if inspect.isawaitable(principal):
                principal = await principal
        except PermissionError as exc:
            raise RpcError(Code.PERMISSION_DENIED, str(exc) or "permission denied") from None
        if principal is None:
            raise self._unauthenticated(ctx, "invalid credentials")
        ctx.principal = principal

    def _expected(self) -> str:
        where = self.credentials
        expected = f"{where.header}: {where.scheme} <token>" if where.scheme else where.header
        if where.cookie is not None:
            expected += f" (or the cookie {where.cookie})"
        if where.query is not None:
            expected += f" (or the query parameter {where.query})"
        return expected

    def _unauthenticated(self, ctx: Context, message: str) -> RpcError:
        if ctx.transport == "http" and self.scheme is not None:
            ctx.response_headers.set("www-authenticate", self.scheme)  # RFC 9110 11.6.1
        return RpcError(Code.UNAUTHENTICATED, message)


class ApiKeyAuth(BearerAuth):
    """``BearerAuth`` reading a bare key from ``x-api-key`` (or ``header``), and from the
    ``cookie`` and ``query`` parameter when they are named."""

    scheme_prefix = "apiKey"

    def __init__(
        self,
        verify: Verify,
        *,
        methods: MethodSelector | None = None,
        header: str = "x-api-key",
        cookie: str | None = None,
        query: str | None = None,
    ) -> None:
        super().__init__(
            verify, methods=methods, header=header, scheme=None, cookie=cookie, query=query
        )
