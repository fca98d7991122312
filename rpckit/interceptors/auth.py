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
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

from rpckit.errors import Code, RpcError
from rpckit.interceptors import Interceptor
from rpckit.service import MethodSpec

if TYPE_CHECKING:
    from rpckit.context import Context

__all__ = ["ApiKeyAuth", "BearerAuth", "MethodSelector", "Verify", "static_tokens"]

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
    the whole header value as the token.
    """

    def __init__(
        self,
        verify: Verify,
        *,
        methods: MethodSelector | None = None,
        header: str = "authorization",
        scheme: str | None = "Bearer",
    ) -> None:
        self.verify = verify
        self.header = header.lower()
        self.scheme = scheme
        self._select = _selector(methods)
        self._selected: dict[str, bool] = {}

    def protects(self, method: MethodSpec[Any, Any]) -> bool:
        """Whether calls to ``method`` need credentials (remembered per method)."""
        selected = self._selected.get(method.path)
        if selected is None:
            selected = self._selected[method.path] = bool(self._select(method))
        return selected

    def token(self, ctx: Context) -> str | None:
        """The credentials the call carries, or None without (or with a malformed) header."""
        value = ctx.request_headers.get(self.header)
        if value is None:
            return None
        if self.scheme is None:
            return value.strip() or None
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != self.scheme.lower():
            return None
        return token.strip() or None

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
        return f"{self.header}: {self.scheme} <token>" if self.scheme else f"{self.header}"

    def _unauthenticated(self, ctx: Context, message: str) -> RpcError:
        if ctx.transport == "http" and self.scheme is not None:
            ctx.response_headers.set("www-authenticate", self.scheme)  # RFC 9110 11.6.1
        return RpcError(Code.UNAUTHENTICATED, message)


class ApiKeyAuth(BearerAuth):
    """``BearerAuth`` reading a bare key from ``x-api-key`` (or ``header``)."""

    def __init__(
        self,
        verify: Verify,
        *,
        methods: MethodSelector | None = None,
        header: str = "x-api-key",
    ) -> None:
        super().__init__(verify, methods=methods, header=header, scheme=None)
