"""The ``rpckit`` command: ``generate`` code from .proto files, ``serve`` a service."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rpckit.http.options import (
    DEFAULT_COMPRESS_MIN_BYTES,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_SSE_KEEP_ALIVE,
)
from rpckit.limits import DEFAULT_GRPC_STREAM_WINDOW
from rpckit.serving.options import (
    DEFAULT_BACKLOG,
    FILE_RESERVE,
    ServeOptions,
    parse_workers,
)
from rpckit.serving.target import load_services

__all__ = ["build_parser", "main", "serve_flags", "serve_options"]

log = logging.getLogger("rpckit")

SERVE_DESCRIPTION = """\
Serve MODULE:ATTR (a Service, a list of them, or a factory given the extra arguments)
on gRPC (--grpc) and/or the HTTP/1.1 bridge (--http: Connect, gRPC-Web, REST routes,
WebSocket).

Addresses (the same forms for --grpc and --http):
  :PORT          127.0.0.1 only (loopback: the safe default for development)
  HOST:PORT      a host name or IPv4 address; 0.0.0.0:PORT listens on every IPv4 interface
  [IPV6]:PORT    [::]:PORT listens on every interface, [::1]:PORT on IPv6 loopback
Port 0 picks a free port (the chosen one is printed). Unix sockets are not supported.
"""


def serve(options: ServeOptions) -> int:
    """Serve ``options.target`` until SIGINT or SIGTERM, then drain; returns the exit status.

    One worker runs in this process; more run as supervised processes sharing the ports.
    """
    from rpckit.serving.supervisor import WorkerFailed, supervise
    from rpckit.serving.tls import TlsError, check_tls
    from rpckit.serving.worker import run_process

    try:
        if options.tls is not None:
            check_tls(options.tls)
        _check_interceptors(options)
        if options.server == "granian":
            try:
                import granian  # noqa: F401 - serving imports it later, in the workers too
            except ImportError:
                raise SystemExit(
                    "rpckit: --server granian needs granian: pip install 'rpckit[fast]'"
                ) from None
        if options.docs:
            from rpckit.tools.docs import ViewerMissing, find_viewer

            try:
                find_viewer()
            except ViewerMissing as exc:
                raise SystemExit(f"rpckit: {exc}") from None
        if options.workers > 1 or options.split_transports:
            supervise(options, lambda name, address: _announce(name, address, None))
            return 0
        services = load_services(options.target, options.target_args)

        def ready(ports: dict[str, int]) -> None:
            for name, address in (("gRPC", options.grpc), ("HTTP", options.http)):
                if address and name in ports:
                    _announce(name, address, ports[name])

        run_process(services, options, on_ready=ready)
    except (OSError, TlsError, WorkerFailed) as exc:
        print(f"rpckit: {exc}", file=sys.stderr)
        return 1
    return 0


def _check_interceptors(options: ServeOptions) -> None:
    """Fail early, in one line, on an ``--interceptor`` or ``--otel`` that cannot work."""
    from rpckit.serving.interceptors import load_interceptors

    load_interceptors(options.interceptors)
    if options.otel:
        try:
            from rpckit.interceptors.otel import otlp_exporters
        except ImportError:
            raise SystemExit("rpckit: --otel needs `pip install rpckit[otel]`") from None
        try:
            otlp_exporters()
        except ValueError as exc:
            raise SystemExit(f"rpckit: --otel: {exc}") from None


def _announce(name: str, address: str, port: int | None) -> None:
    from rpckit.address import parse_address

    bound = parse_address(address)
    print(f"rpckit: {name} listening on {bound.with_port(port or bound.port)}", flush=True)


def _generate(args: argparse.Namespace) -> int:
    from rpckit.codegen import run_protoc
    from rpckit.codegen.protoc import ProtocError, bundled_include_paths, import_clashes

    proto_paths = [Path(p) for p in args.proto_path]
    protos: list[str] = list(args.protos)
    if not protos:
        # Only the user's own files: a vendored copy of an installed proto (google/api/...)
        # is left to the installed package, whose module it would otherwise shadow.
        installed = bundled_include_paths()[:2]
        for root in proto_paths:
            found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.proto"))
            protos += [p for p in found if not any((d / p).is_file() for d in installed)]
    if not protos:
        print("rpckit generate: no .proto files found", file=sys.stderr)
        return 1
    # --ts alone writes only TypeScript; --out (default .) adds the Python modules.
    out = Path(args.out or ".") if args.out is not None or args.ts is None else None
    try:
        written = []
        if out is not None:
            written = run_protoc(
                protos, proto_paths=proto_paths, out=out, grpc_python=args.grpc_python
            )
        if args.ts is not None:
            from rpckit.codegen.typescript import run_typescript

            written_ts = run_typescript(protos, proto_paths=proto_paths, out=Path(args.ts))
        else:
            written_ts = []
    except ProtocError:
        return 1  # protoc has printed its diagnostics
    except ValueError as exc:
        print(f"rpckit generate: {exc}", file=sys.stderr)
        return 1
    for path in [*written, *written_ts]:
        print(path)
    for warning in import_clashes(written, out) if out is not None else []:
        print(f"rpckit generate: {warning}", file=sys.stderr)
    return 0


def _protos_path(args: argparse.Namespace) -> int:
    from rpckit.codegen.protoc import bundled_include_paths, link_includes

    paths = link_includes(Path(args.link)) if args.link else bundled_include_paths()
    for path in paths:
        print(path)
    return 0


def _openapi(args: argparse.Namespace) -> int:
    from rpckit.tools.openapi import document_from_protos
    from rpckit.tools.schema import SchemaError

    paths = [Path(p) for p in args.proto_path or ["protos"]]
    try:
        text = json.dumps(document_from_protos(paths, args.protos, title=args.title), indent=2)
    except (SchemaError, ValueError) as exc:
        print(f"rpckit openapi: {exc}", file=sys.stderr)
        return 1
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``rpckit`` command's parser, every subcommand included."""
    from rpckit import __version__

    parser = argparse.ArgumentParser(prog="rpckit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"rpckit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="generate Python code from .proto files")
    gen.add_argument("protos", nargs="*", help="files relative to a -I path (default: all)")
    gen.add_argument("-I", "--proto-path", action="append", default=None, help="default: protos")
    gen.add_argument(
        "--out", default=None, help="Python output directory (default: ., none with --ts alone)"
    )
    gen.add_argument(
        "--ts", metavar="DIR", help="write a typed TypeScript client (ES modules) into DIR"
    )
    gen.add_argument(
        "--grpc-python", action="store_true", help="also write grpcio's *_pb2_grpc.py stubs"
    )
    inc = commands.add_parser(
        "protos-path", help="print the include dirs of google/api, google/protobuf and rpckit"
    )
    inc.add_argument(
        "--link", metavar="DIR", help="symlink google/* and rpckit protos into DIR (for buf)"
    )

    from rpckit.tools import call as call_tool

    call_tool.add_parser(commands)
    api = commands.add_parser("openapi", help="write the OpenAPI 3.1 document of the HTTP routes")
    api.add_argument("protos", nargs="*", help="files relative to a -I path (default: all)")
    api.add_argument("-I", "--proto-path", action="append", default=None, help="default: protos")
    api.add_argument("-o", "--out", type=Path, help="output file (default: stdout)")
    api.add_argument("--title", default="rpckit API", help="info.title")

    srv = commands.add_parser(
        "serve",
        help="serve MODULE:ATTR on gRPC and/or HTTP/1.1",
        description=SERVE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    srv.add_argument(
        "target",
        help="MODULE:ATTR (or path/FILE.py:ATTR under the current directory): "
        "a Service, a list, or a factory(argv)",
    )
    srv.add_argument("--grpc", metavar="ADDRESS", type=_address, help="gRPC address, e.g. :50051")
    srv.add_argument(
        "--http", metavar="ADDRESS", type=_address, help="HTTP/1.1 address, e.g. :8080"
    )
    srv.add_argument("--static", type=Path, help="directory served at / on the HTTP side")
    srv.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let pages on ORIGIN (or *) call the HTTP bridge; repeatable",
    )
    srv.add_argument("--grace", type=float, default=5.0, help="shutdown grace in seconds")
    srv.add_argument(
        "--docs", action="store_true", help="serve /docs (Swagger UI) and /docs/openapi.json"
    )
    srv.add_argument(
        "--durable-path",
        metavar="PATH",
        help="serve the Durable Streams protocol under PATH on the HTTP side, e.g. /v1/stream",
    )
    srv.add_argument(
        "--streams",
        metavar="LOG",
        help="the stream log: memory (this process) or redis://HOST:PORT/DB",
    )
    srv.add_argument(
        "--durable-long-poll",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="how long a Durable Streams long-poll waits for data (default 20)",
    )
    srv.add_argument(
        "--reload",
        action="store_true",
        help="restart on .py/.proto changes under the current directory (regenerates code)",
    )
    _add_production_flags(srv)
    _add_grpc_flags(srv)
    _add_interceptor_flags(srv)
    srv.add_argument("--log-level", default="info")

    _plain_help(parser)
    return parser


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub: argparse.ArgumentParser = action.choices[name]
            return sub
    raise KeyError(name)


def serve_flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every ``rpckit serve`` argument by its ``SERVE_FLAGS`` key: the first option string
    (``--access-log`` for ``--[no-]access-log``), or the name of a positional argument."""
    serve = _subcommand(parser, "serve")
    return {
        action.option_strings[0] if action.option_strings else action.dest: action
        for action in serve._actions
        if not isinstance(action, argparse._HelpAction)
    }


def serve_options(
    parser: argparse.ArgumentParser, args: argparse.Namespace, extra: Sequence[str]
) -> ServeOptions:
    """``ServeOptions`` for parsed ``rpckit serve`` arguments, field by field as
    ``SERVE_FLAGS`` says (no flag is copied by hand)."""
    values: dict[str, Any] = {
        flag: getattr(args, action.dest) for flag, action in serve_flags(parser).items()
    }
    return ServeOptions.from_flags(values, tuple(extra))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rpckit`` command."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # grpc core logs through its own C logger straight to stderr (a bind error is a line of
    # its own before rpckit's); rpckit reports such errors itself. Before grpc is imported,
    # and inherited by workers and the --reload child. GRPC_VERBOSITY set by the user wins.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    if args.command == "generate":
        if extra:
            parser.error(f"unrecognised arguments: {' '.join(extra)}")
        args.proto_path = args.proto_path or ["protos"]
        return _generate(args)
    if args.command == "protos-path":
        if extra:
            parser.error(f"unrecognised arguments: {' '.join(extra)}")
        return _protos_path(args)
    if args.command in ("call", "openapi"):
        if extra:
            parser.error(f"unrecognised arguments: {' '.join(extra)}")
        if args.command == "openapi":
            return _openapi(args)
        from rpckit.tools import call as call_tool

        return call_tool.main(args)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not args.grpc and not args.http:
        parser.error("serve needs --grpc HOST:PORT and/or --http HOST:PORT")
    if args.static is not None and not args.static.is_dir():
        parser.error(f"--static {args.static} is not a directory")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    if args.h2c and args.server != "granian":
        parser.error("--h2c needs --server granian (uvicorn speaks HTTP/1.1 only)")
    if args.durable_path is not None:
        if not args.http:
            parser.error("--durable-path needs --http")
        redis_streams = (args.streams or "memory").startswith(("redis://", "rediss://"))
        if args.workers > 1 and not redis_streams:
            # Each worker would hold its own streams: only Redis shares them (log and state).
            parser.error(
                "--durable-path with --workers needs --streams redis://HOST:PORT/DB "
                "(memory streams live in one process)"
            )
    if args.streams is not None:
        from rpckit.durable.server import check_streams

        problem = check_streams(args.streams)
        if problem:
            parser.error(problem)
    options = serve_options(parser, args, extra)
    if options.reload:
        from rpckit.serving.reload import serve_with_reload

        return serve_with_reload(options, list(argv if argv is not None else sys.argv[1:]))
    return serve(options)


def _add_interceptor_flags(srv: argparse.ArgumentParser) -> None:
    """The serve flags for what runs around every call: interceptors, access log, OTel."""
    srv.add_argument(
        "--interceptor",
        action="append",
        default=[],
        metavar="MODULE:ATTR",
        help="a server interceptor (instance, class or factory) around every call; repeatable",
    )
    srv.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log one line per call on rpckit.access at INFO (default: on)",
    )
    srv.add_argument(
        "--otel",
        action="store_true",
        help="OpenTelemetry spans and metrics over OTLP, per OTEL_* (needs rpckit[otel])",
    )


def _add_production_flags(srv: argparse.ArgumentParser) -> None:
    """The serve flags for production: workers, server, drain, TLS and health paths."""
    srv.add_argument(
        "--workers",
        default="1",
        type=_workers,
        metavar="N|auto",
        help="processes sharing both ports (SO_REUSEPORT); auto = one per core (default 1)",
    )
    srv.add_argument(
        "--separate-grpc",
        action="store_true",
        help="with --grpc and --http: serve gRPC from processes of its own, one per worker, "
        "so that HTTP load cannot starve it (the two share one event loop otherwise)",
    )
    srv.add_argument(
        "--server", choices=("uvicorn", "granian"), default="uvicorn", help="HTTP server"
    )
    srv.add_argument(
        "--h2c",
        action="store_true",
        help="granian: also serve HTTP/2 without TLS (prior knowledge), as buf curl and gRPC "
        "tools expect for bidi streams; a connection's first bytes then wait without "
        "--header-timeout (over TLS, ALPN offers HTTP/2 anyway)",
    )
    srv.add_argument(
        "--drain-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="on SIGTERM, keep accepting this long with readiness false before draining",
    )
    srv.add_argument("--tls-cert", type=Path, metavar="PEM", help="certificate chain (TLS)")
    srv.add_argument("--tls-key", type=Path, metavar="PEM", help="private key of --tls-cert")
    srv.add_argument(
        "--tls-client-ca", type=Path, metavar="PEM", help="require client certificates (mTLS)"
    )
    srv.add_argument("--liveness-path", default="/healthz", help="HTTP liveness probe path")
    srv.add_argument("--readiness-path", default="/readyz", help="HTTP readiness probe path")
    _add_timeout_flags(srv)
    _add_connection_flags(srv)
    _add_bridge_flags(srv)


def _add_bridge_flags(srv: argparse.ArgumentParser) -> None:
    """The serve flags for the wire settings (``BridgeOptions``)."""
    srv.add_argument(
        "--max-message-size",
        type=_positive_int,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        metavar="BYTES",
        help=f"largest request or response message, gRPC and HTTP "
        f"(default {DEFAULT_MAX_MESSAGE_SIZE})",
    )
    srv.add_argument(
        "--compress-min-bytes",
        type=_non_negative_int,
        default=DEFAULT_COMPRESS_MIN_BYTES,
        metavar="BYTES",
        help="on HTTP, compress only responses at least this large, unless the handler asks "
        f"(default {DEFAULT_COMPRESS_MIN_BYTES})",
    )
    srv.add_argument(
        "--require-connect-version",
        action="store_true",
        help="refuse Connect requests without Connect-Protocol-Version: 1",
    )
    srv.add_argument(
        "--sse-keep-alive",
        type=_positive_seconds,
        default=DEFAULT_SSE_KEEP_ALIVE,
        metavar="SECONDS",
        help="send a comment on an SSE stream silent this long "
        f"(default {DEFAULT_SSE_KEEP_ALIVE:g})",
    )


def _add_timeout_flags(srv: argparse.ArgumentParser) -> None:
    """How long an HTTP connection may hold a socket without making progress."""
    for flag, default, text in (
        ("--header-timeout", 10.0, "close a connection whose request head is not complete"),
        ("--idle-timeout", 5.0, "close an idle keep-alive connection"),
        ("--body-timeout", 30.0, "end a call whose request body sends nothing"),
    ):
        srv.add_argument(
            flag,
            type=_positive_seconds,
            default=default,
            metavar="SECONDS",
            help=f"{text} after this long (default {default:g})",
        )
    srv.add_argument(
        "--handshake-timeout",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="close a connection, HTTP or gRPC, whose TLS handshake is not done after this "
        "long (default: --header-timeout)",
    )


def _add_connection_flags(srv: argparse.ArgumentParser) -> None:
    """How many HTTP connections a serving process takes (``ConnectionLimits``)."""
    srv.add_argument(
        "--backlog",
        type=_positive_int,
        default=DEFAULT_BACKLOG,
        metavar="N",
        help=f"connections the kernel queues before they are accepted (default {DEFAULT_BACKLOG})",
    )
    srv.add_argument(
        "--max-connections",
        type=_positive_int,
        default=None,
        metavar="N",
        help="granian: HTTP connections served at once per process, more wait in the backlog "
        f"(default: the open-file limit less {FILE_RESERVE}; uvicorn is bounded by that limit)",
    )


def _add_grpc_flags(srv: argparse.ArgumentParser) -> None:
    """gRPC's flow control, and reflection on both ports."""
    srv.add_argument(
        "--grpc-window",
        type=_non_negative_int,
        default=DEFAULT_GRPC_STREAM_WINDOW,
        metavar="BYTES",
        help="bytes of a gRPC request stream the server takes ahead of its handler "
        f"(default {DEFAULT_GRPC_STREAM_WINDOW}; 0: grpc core's adaptive windows, unbounded)",
    )
    srv.add_argument(
        "--reflection",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve gRPC server reflection on both ports (default: on)",
    )


_MARKUP = re.compile(r":[a-z]+:`([^`]+)`|``([^`]+)``|`([^`]+)`")


def plain_text(text: str) -> str:
    """Docstring text without reStructuredText markup (``x``, `x`, :role:`x` -> x), for
    ``--help``, which shows it as is."""
    return _MARKUP.sub(lambda m: next(g for g in m.groups() if g is not None), text)


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """Every description and help text of ``parser`` and its subcommands as plain text."""
    if parser.description:
        parser.description = plain_text(parser.description)
    for action in parser._actions:
        if action.help:
            action.help = plain_text(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = plain_text(choice.help or "")
            for sub in dict.fromkeys(action.choices.values()):
                _plain_help(sub)


def _address(value: str) -> str:
    """``--grpc`` / ``--http``: the canonical ``HOST:PORT`` of any accepted form."""
    from rpckit.address import AddressError, parse_address

    try:
        return str(parse_address(value))
    except AddressError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _workers(value: str) -> int:
    try:
        return parse_workers(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--workers ")) from None


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, not {number}")
    return number


def _non_negative_int(value: str) -> int:
    if value.strip() == "0":
        return 0
    return _positive_int(value)


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, not {value!r}") from None
    if not 0 < seconds < 1e6:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {value}")
    return seconds


if __name__ == "__main__":
    raise SystemExit(main())
