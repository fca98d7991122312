"""Request validation with protovalidate: ``buf.validate`` rules checked before the handler.

Every request message (unary requests and each message of a client stream) is checked
against the rules in its schema; a message that breaks any fails the call with
``invalid_argument``, a one-line summary as the message, and two details a client can read
field by field: ``google.rpc.BadRequest`` (``field_violations``, understood by every gRPC
and Connect client) and protovalidate's own ``buf.validate.Violations``. Messages without
rules pass at the cost of a lookup. Needs ``pip install protovalidate``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from rpckit.errors import Code, RpcError
from rpckit.interceptors import Interceptor

if TYPE_CHECKING:
    import protovalidate

    from rpckit.context import Context

__all__ = ["Validate", "field_path", "violations_error"]

VIOLATIONS_TYPE_URL = "type.googleapis.com/buf.validate.Violations"


def field_path(violation: protovalidate.Violation) -> str:
    """The violating field as a path: ``address.country``, ``tags[2]``, ``labels["env"]``."""
    path = ""
    field = violation.proto.field
    for element in field.elements if field is not None else ():
        path += ("." if path else "") + element.field_name
        subscript = element.subscript
        if subscript is not None:
            value = subscript.value
            if isinstance(value, str):
                path += f"[{json.dumps(value)}]"
            elif isinstance(value, bool):
                path += f"[{str(value).lower()}]"
            else:
                path += f"[{value}]"
    return path


def violations_error(violations: list[protovalidate.Violation]) -> RpcError:
    """``invalid_argument`` for ``violations``, with BadRequest and Violations details."""
    import protovalidate

    bad_request = error_details_pb2.BadRequest()
    summary = []
    for violation in violations:
        path = field_path(violation)
        message = violation.proto.message or violation.proto.rule_id
        bad_request.field_violations.add(field=path, description=message)
        summary.append(f"{path}: {message}" if path else message)
    raw = protovalidate.ViolationsPb(violations=[v.proto for v in violations]).to_binary()
    details: list[Message] = [bad_request, any_pb2.Any(type_url=VIOLATIONS_TYPE_URL, value=raw)]
    return RpcError(Code.INVALID_ARGUMENT, "invalid request: " + "; ".join(summary), details)


class Validate(Interceptor):
    """Checks each request message against its ``buf.validate`` rules.

    ``fail_fast`` stops at the first violation. A rule that cannot be compiled or evaluated
    is a schema bug: the call fails ``internal`` and the cause is logged by the runner.
    """

    def __init__(
        self, validator: protovalidate.Validator | None = None, *, fail_fast: bool = False
    ) -> None:
        import protovalidate

        self.validator = validator if validator is not None else protovalidate.Validator()
        self.fail_fast = fail_fast

    async def on_request(self, ctx: Context, message: Any) -> Any:
        violations = self.validator.collect_violations(message, fail_fast=self.fail_fast)
        if violations:
            raise violations_error(violations)
        return message
