"""The ``rpckit`` command: ``generate`` code from .proto files, ``serve`` a service."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from rpckit.service import Service

__all__ = ["load_services", "main"]

log = logging.getLogger("rpckit")


def load_services(target: str, argv: Sequence[str] = ()) -> list[Service]:
    """Import ``MODULE:ATTR``: a Service, a list of them, or a factory given the extra args."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"rpckit: expected MODULE:ATTR, got {target!r}")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    module = importlib.import_module(module_name)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"rpckit: {module_name} has no attribute {attr!r}") from None
    if isinstance(obj, type) and issubclass(obj, Service):
        obj = obj()
    elif callable(obj) and not isinstance(obj, Service):
        obj = obj(list(argv))
    elif argv:
        raise SystemExit(f"rpckit: unrecognised arguments: {' '.join(argv)}")
    services = obj if isinstance(obj, list | tuple) else [obj]
    for service in services:
        if not isinstance(service, Service):
            raise SystemExit(f"rpckit: {target} gave {type(service).__name__}, not a Service")
    return list(services)


async def serve(
    services: list[Service],
    *,
    grpc_address: str | None,
    http_address: str | None = None,
    grace: float = 5.0,
    static: Path | None = None,
    cors_origins: Sequence[str] = (),
) -> None:
    """Run the transports in one event loop until SIGINT or SIGTERM, then shut down.

    In-flight calls get ``grace`` seconds to finish before they are cancelled.
    """
    from rpckit.grpc import GrpcServer
    from rpckit.http import Cors, create_app
    from rpckit.http.serve import HttpServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    grpc_server = GrpcServer(services) if grpc_address else None
    http_server = None
    if http_address:
        cors = Cors(origins=cors_origins) if cors_origins else None
        app = create_app(services, static=static, cors=cors)
        http_server = HttpServer(app, grace=grace)
    try:
        if grpc_server is not None and grpc_address:
            port = await grpc_server.start(grpc_address)
            _announce("gRPC", grpc_address, port)
        if http_server is not None and http_address:
            port = await http_server.start(http_address)
            _announce("HTTP", http_address, port)
        await stop.wait()
        log.info("shutting down (grace %.1fs)", grace)
    finally:
        await asyncio.gather(
            *(s.stop(grace) for s in [grpc_server] if s is not None),
            *(s.stop() for s in [http_server] if s is not None),
        )


def _announce(name: str, address: str, port: int) -> None:
    host = address.rpartition(":")[0] or "127.0.0.1"
    print(f"rpckit: {name} listening on {host}:{port}", flush=True)


def _generate(args: argparse.Namespace) -> int:
    from rpckit.codegen import run_protoc

    proto_paths = [Path(p) for p in args.proto_path]
    protos: list[str] = list(args.protos)
    if not protos:
        for root in proto_paths:
            protos += sorted(str(p.relative_to(root)) for p in root.rglob("*.proto"))
    if not protos:
        print("rpckit generate: no .proto files found", file=sys.stderr)
        return 1
    written = run_protoc(
        protos, proto_paths=proto_paths, out=Path(args.out), grpc_python=args.grpc_python
    )
    for path in written:
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rpckit`` command."""
    parser = argparse.ArgumentParser(prog="rpckit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="generate Python code from .proto files")
    gen.add_argument("protos", nargs="*", help="files relative to a -I path (default: all)")
    gen.add_argument("-I", "--proto-path", action="append", default=None, help="default: protos")
    gen.add_argument("--out", default=".", help="output directory (default: .)")
    gen.add_argument(
        "--grpc-python", action="store_true", help="also write grpcio's *_pb2_grpc.py stubs"
    )

    srv = commands.add_parser("serve", help="serve MODULE:ATTR on gRPC and/or HTTP/1.1")
    srv.add_argument("target", help="MODULE:ATTR: a Service, a list, or a factory(argv)")
    srv.add_argument("--grpc", metavar="HOST:PORT", help="gRPC address, e.g. 127.0.0.1:50051")
    srv.add_argument("--http", metavar="HOST:PORT", help="HTTP/1.1 address, e.g. 127.0.0.1:8080")
    srv.add_argument("--static", type=Path, help="directory served at / on the HTTP side")
    srv.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let pages on ORIGIN (or *) call the HTTP bridge; repeatable",
    )
    srv.add_argument("--grace", type=float, default=5.0, help="shutdown grace in seconds")
    srv.add_argument("--log-level", default="info")

    args, extra = parser.parse_known_args(argv)
    if args.command == "generate":
        if extra:
            parser.error(f"unrecognised arguments: {' '.join(extra)}")
        args.proto_path = args.proto_path or ["protos"]
        return _generate(args)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not args.grpc and not args.http:
        parser.error("serve needs --grpc HOST:PORT and/or --http HOST:PORT")
    if args.static is not None and not args.static.is_dir():
        parser.error(f"--static {args.static} is not a directory")
    services = load_services(args.target, extra)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                serve(
                    services,
                    grpc_address=args.grpc,
                    http_address=args.http,
                    grace=args.grace,
                    static=args.static,
                    cors_origins=args.cors_origin,
                )
            )
    except OSError as exc:
        print(f"rpckit: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
