"""The access log's batched writing gives the same lines and records as formatting each
call with ``format_fields(access_fields(...))`` and ``logger.log``."""

from __future__ import annotations

import asyncio
import io
import logging

from examples.streams.v1.streams_rpckit import UnimplementedStreamsService
from rpckit.context import Context
from rpckit.errors import Code
from rpckit.interceptors import Outcome
from rpckit.interceptors.access_log import FLUSH_DELAY, AccessLog, access_fields, format_fields


class _Svc(UnimplementedStreamsService):
    """A service to bind: only its method table is used."""


def _calls() -> list[tuple[Context, Outcome]]:
    method = next(m for m, _ in _Svc().bind() if m.name == "GetDog")
    plain = Context(method, transport="grpc", peer="ipv4:127.0.0.1:5000")
    odd = Context(method, transport="http", dialect="connect", peer='a b"=\\\n')
    return [
        (plain, Outcome(Code.OK, "", None, 0.00123, 1, 1, 2, 14)),
        (odd, Outcome(Code.NOT_FOUND, 'no "dog"\n', None, 1.5, 0, 0, 0, 0)),
        (plain, Outcome(Code.INTERNAL, "internal error", None, 0.0, 3, 4, 5, 6)),
    ]


def test_lines_and_records_match_the_plain_formatting() -> None:
    logger = logging.getLogger("rpckit.access.test-batch")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(funcName)s: %(message)s"))
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    logger.addHandler(handler)
    logger.addHandler(Keep())
    access = AccessLog(logger)
    calls = _calls()

    async def main() -> None:
        for ctx, outcome in calls:
            access.on_end(ctx, outcome)
        assert stream.getvalue().count("\n") == 1  # the first at once, the others together
        await asyncio.sleep(FLUSH_DELAY * 3)

    try:
        asyncio.run(main())
    finally:
        logger.handlers.clear()
    expected = [format_fields(access_fields(ctx, outcome)) for ctx, outcome in calls]
    assert stream.getvalue() == "".join(
        f"INFO rpckit.access.test-batch on_end: {line}\n" for line in expected
    )
    assert [r.getMessage() for r in kept] == expected
    assert [r.rpc for r in kept] == [access_fields(c, o) for c, o in calls]  # type: ignore[attr-defined]
    assert all(r.levelno == logging.INFO and r.exc_info is None for r in kept)


def test_without_an_event_loop_it_writes_at_once() -> None:
    logger = logging.getLogger("rpckit.access.test-now")
    logger.propagate = False
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # plain: the lines are written without records
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    access = AccessLog(logger)
    calls = _calls()
    try:
        for ctx, outcome in calls:
            access.on_end(ctx, outcome)
        access.flush()
    finally:
        logger.handlers.clear()
    assert stream.getvalue() == "".join(
        f"INFO rpckit.access.test-now: {format_fields(access_fields(c, o))}\n" for c, o in calls
    )
