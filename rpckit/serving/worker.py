"""One serving process: the gRPC server and the HTTP bridge in one event loop, drained as one.

uvloop runs the loop when it is installed (``rpckit[fast]``). SIGINT or SIGTERM starts the
drain: readiness turns false at once, the listeners stay open for ``drain_delay`` seconds
(so a load balancer sees it and stops sending), then in-flight calls get ``grace`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable, Sequence
from typing import Any

from rpckit.service import Service
from rpckit.serving.options import ServeOptions

__all__ = ["event_loop_factory", "run_process", "serve_process"]

log = logging.getLogger("rpckit")

#: Which side listens where: ``{"gRPC": port, "HTTP": port}``.
Ports = dict[str, int]


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when installed, else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_process(
    services: list[Service],
    options: ServeOptions,
    *,
    reuse_port: bool = False,
    on_ready: Callable[[Ports], None] = lambda ports: None,
) -> None:
    """Serve until SIGINT or SIGTERM, then drain (blocking; runs its own event loop)."""
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=event_loop_factory()) as runner,
    ):
        runner.run(serve_process(services, options, reuse_port=reuse_port, on_ready=on_ready))


async def serve_process(
    services: list[Service],
    options: ServeOptions,
    *,
    reuse_port: bool = False,
    on_ready: Callable[[Ports], None] = lambda ports: None,
) -> None:
    """Start the transports ``options`` name, call ``on_ready``, serve until a signal, drain."""
    from grpc_health.v1 import _async as health_aio
    from grpc_health.v1 import health_pb2

    from rpckit.grpc import GrpcServer
    from rpckit.http import Cors, create_app
    from rpckit.serving.health import HealthProbes, HealthState
    from rpckit.serving.http_server import create_http_server
    from rpckit.serving.interceptors import serve_interceptors
    from rpckit.serving.tls import grpc_credentials

    shutdown_otel = None
    if options.otel:
        from rpckit.interceptors.otel import configure_otlp

        shutdown_otel = configure_otlp()
    interceptors = serve_interceptors(
        options.interceptors, otel=options.otel, access_log=options.access_log
    )
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signalled.set)

    servicer: Any = health_aio.HealthServicer()
    for name in ["", *(s.spec().name for s in services)]:
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health = HealthState(servicer)
    tls = options.tls
    drain = options.drain

    # One stream log per process, shared by the durable methods of both servers and the
    # Durable Streams protocol (--durable-path): a stream started on one is read on all.
    stream_log: Any = None
    durable_calls: Any = None
    durable_meta: Any = None
    if options.durable_path is not None or _has_durable(services):
        if options.workers > 1 and (options.streams or "memory") == "memory":
            # Each worker keeps its own streams: a reader sent to another one gets not_found.
            log.warning(
                "@durable methods with --workers %d and the in-memory log: each worker keeps"
                " its own streams, so a resume may reach another worker (not_found); use"
                " --streams redis://HOST:PORT/DB",
                options.workers,
            )
        from rpckit.durable.calls import DurableCalls
        from rpckit.durable.server import meta_for, method_publisher, open_log
        from rpckit.durable.service import DurableStreams

        stream_log = open_log(options.streams or "memory")
        publish = None
        if options.durable_path is not None and options.http:
            # Durable methods' streams are served by the protocol too, on the same state.
            durable_meta = meta_for(stream_log)
            publish = method_publisher(durable_meta)
        durable_calls = DurableCalls(stream_log, publish)
        services = [*services, DurableStreams(durable_calls)]

    grpc_server = None
    if options.grpc:
        grpc_server = GrpcServer(
            services,
            reuse_port=reuse_port,
            max_message_size=options.bridge.max_message_size,
            credentials=grpc_credentials(tls) if tls is not None else None,
            health_servicer=servicer,
            interceptors=interceptors,
            reflection=options.reflection,
            stream_window=options.grpc_window or None,
            handshake_timeout=options.timeouts.handshake_seconds,
        )
        grpc_server.runner.durable = durable_calls
    http_server = None
    durable: Any = None
    if options.http:
        cors = Cors(origins=options.cors_origins) if options.cors_origins else None
        from rpckit.reflection import reflection_services

        served = list(services)
        if options.reflection:  # reflection over Connect and gRPC-Web too
            served += reflection_services([s.spec().name for s in services])
        bridge = create_app(
            served,
            options=options.bridge,
            static=options.static,
            cors=cors,
            interceptors=interceptors,
        )
        bridge.runner.durable = durable_calls
        front: Any = bridge
        if options.docs:
            from rpckit.tools.docs import DocsPage, find_viewer

            front = DocsPage(bridge, services, find_viewer(), interceptors=interceptors)
        if options.durable_path is not None:
            from rpckit.durable.server import (
                DurableOptions,
                DurableStreamsApp,
                mount_durable,
            )

            durable = DurableStreamsApp(
                stream_log,
                durable_meta,
                prefix=options.durable_path,
                options=DurableOptions(long_poll_seconds=options.durable_long_poll),
            )
            front = mount_durable(front, durable)
        app = HealthProbes(
            front,
            health,
            liveness_path=options.health.liveness,
            readiness_path=options.health.readiness,
        )
        http_server = create_http_server(
            options.server,
            app,
            grace=drain.grace,
            log_level="warning",
            reuse_port=reuse_port,
            tls=tls,
            lifecycle=bridge.lifecycle,  # the front may wrap the bridge: given, not looked for
            timeouts=options.timeouts,
            limits=options.limits,
            h2c=options.h2c,
        )
    try:
        ports: Ports = {}
        if grpc_server is not None and options.grpc:
            ports["gRPC"] = await grpc_server.start(options.grpc)
        if http_server is not None and options.http:
            ports["HTTP"] = await http_server.start(options.http)
        log.info("event loop %s, HTTP server %s", _loop_name(loop), _http_name(options))
        # Everything made so far (modules, services, the servers) lives as long as the
        # process: out of the collector's way, so each collection only walks what calls make.
        gc.freeze()
        on_ready(ports)
        await signalled.wait()
        log.info("draining (delay %.1fs, grace %.1fs)", drain.delay, drain.grace)
        await health.start_drain()
        if drain.delay > 0:
            signalled.clear()  # a second signal ends the delay early
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signalled.wait(), drain.delay)
    finally:
        await asyncio.gather(
            *(s.stop(drain.grace) for s in [grpc_server] if s is not None),
            *(s.stop() for s in [http_server] if s is not None),
        )
        if durable_calls is not None:  # producers left after the grace end ``unavailable``
            await durable_calls.aclose(drain.grace)
        if durable is not None:
            await durable.aclose()
        if shutdown_otel is not None:
            await asyncio.to_thread(shutdown_otel)  # flush the last spans and metrics


def _has_durable(services: Sequence[Any]) -> bool:
    """Whether a served method is ``@durable``."""
    return any(method.durable is not None for s in services for method, _ in s.bind())


def _loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def _http_name(options: ServeOptions) -> str:
    if options.server != "uvicorn":
        return options.server
    try:
        import httptools  # noqa: F401 - uvicorn's "auto" picks it when installed
    except ImportError:
        return "uvicorn (h11)"
    return "uvicorn (httptools)"
