"""Liveness and readiness over plain HTTP for load balancers, following the gRPC health service.

``HealthProbes`` wraps the bridge (or any ASGI app) and answers two paths itself:

- liveness (default ``/healthz``): 200 while the process serves requests at all, drain included;
- readiness (default ``/readyz``): 200 while the gRPC health service reports ``SERVING`` for the
  server (or for ``?service=NAME``) and no drain has started; 503 otherwise, 404 for a service
  the health service does not know.

Both answer ``GET`` and ``HEAD`` with a small JSON body and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from grpc_health.v1 import health_pb2

from rpckit.http.asgi import Receive, Scope, Send

__all__ = ["DEFAULT_LIVENESS_PATH", "DEFAULT_READINESS_PATH", "HealthProbes", "HealthState"]

DEFAULT_LIVENESS_PATH = "/healthz"
DEFAULT_READINESS_PATH = "/readyz"


class _UnknownService(Exception):
    """The health service has no status for the service asked about."""


class _CheckContext:
    """The one thing ``HealthServicer.Check`` uses its context for: aborting on an unknown name."""

    async def abort(self, code: Any, details: str = "") -> None:
        raise _UnknownService


class HealthState:
    """The process's health: the gRPC health servicer's statuses, plus whether a drain began.

    ``servicer`` is grpcio-health-checking's ``aio.HealthServicer`` (the one the gRPC server
    registers), so a status set there is what the HTTP probes report too.
    """

    def __init__(self, servicer: Any) -> None:
        self.servicer = servicer
        self.draining = False

    async def start_drain(self) -> None:
        """Readiness is false from now on; the gRPC health service says NOT_SERVING."""
        self.draining = True
        await self.servicer.enter_graceful_shutdown()

    async def status(self, service: str = "") -> str | None:
        """The gRPC health status name of ``service`` ("" = the server), None when unknown."""
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            response = await self.servicer.Check(request, _CheckContext())
        except _UnknownService:
            return None
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return name


@dataclass(frozen=True)
class _Answer:
    status: int
    body: dict[str, Any]


class HealthProbes:
    """ASGI wrapper answering the liveness and readiness paths; everything else goes to ``app``."""

    def __init__(
        self,
        app: Any,
        state: HealthState,
        *,
        liveness_path: str = DEFAULT_LIVENESS_PATH,
        readiness_path: str = DEFAULT_READINESS_PATH,
    ) -> None:
        self.app = app
        self.state = state
        self.liveness_path = liveness_path
        self.readiness_path = readiness_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path == self.liveness_path:
            await self._answer(scope, send, _Answer(200, {"status": "alive"}))
        elif path == self.readiness_path:
            await self._answer(scope, send, await self._readiness(scope))
        else:
            await self.app(scope, receive, send)

    async def _readiness(self, scope: Scope) -> _Answer:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        service = query.get("service", [""])[0]
        status = await self.state.status(service)
        if status is None:
            return _Answer(404, {"status": "SERVICE_UNKNOWN", "service": service})
        if self.state.draining:
            return _Answer(503, {"status": "DRAINING"})
        return _Answer(200 if status == "SERVING" else 503, {"status": status})

    async def _answer(self, scope: Scope, send: Send, answer: _Answer) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            answer = _Answer(405, {"status": "METHOD_NOT_ALLOWED"})
        body = json.dumps(answer.body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        if answer.status == 405:
            headers.append((b"allow", b"GET, HEAD"))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )
