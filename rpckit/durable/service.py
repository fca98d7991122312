"""``rpckit.v1.DurableStreamsService``: what a client can do to a durable stream by its id, on
every transport (``DELETE /rpckit/v1/streams/{id}`` over plain HTTP). ``rpckit serve`` adds it
when a served method is ``@durable``."""

from __future__ import annotations

from rpckit.context import Context
from rpckit.durable.calls import DurableCalls
from rpckit.durable.options import valid_stream_id
from rpckit.errors import Code, RpcError
from rpckit.v1.durable_pb2 import CancelStreamRequest, CancelStreamResponse
from rpckit.v1.durable_rpckit import DurableStreamsService

__all__ = ["DurableStreams"]


class DurableStreams(DurableStreamsService):
    """Cancels streams in ``calls``' log: the producer sees it wherever it runs."""

    def __init__(self, calls: DurableCalls) -> None:
        self.calls = calls

    async def cancel_stream(
        self, request: CancelStreamRequest, ctx: Context
    ) -> CancelStreamResponse:
        if not valid_stream_id(request.id):
            raise RpcError(Code.INVALID_ARGUMENT, f"malformed stream id {request.id!r}")
        await self.calls.cancel(request.id)
        return CancelStreamResponse()
