"""protovalidate: requests breaking their ``buf.validate`` rules end ``invalid_argument`` with
the field violations as details, on gRPC and Connect, unary and client streams.

The test service is generated at test time: ``buf/validate/validate.proto`` comes from the
installed protovalidate package (its embedded descriptor), never from a copy in the repo.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import protovalidate
import pytest
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2

from rpckit import Code, Context, RpcError
from rpckit.client import Transport
from rpckit.codegen import run_protoc
from rpckit.grpc import GrpcTransport
from rpckit.http import ConnectTransport
from rpckit.interceptors.validation import VIOLATIONS_TYPE_URL, Validate
from tests.interceptors.serving import Served, serve_both

pytestmark = pytest.mark.loopback

PROTOS = Path(__file__).parent / "protos"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The ``validated.v1`` modules (pb2 and rpckit), importable for this module's tests."""
    tmp = tmp_path_factory.mktemp("validated")
    validate_set = descriptor_pb2.FileDescriptorSet()
    validate_proto = protovalidate.ViolationsPb.desc().file.proto.to_binary()
    validate_set.file.add().MergeFromString(validate_proto)
    (tmp / "validate.binpb").write_bytes(validate_set.SerializeToString())
    out = tmp / "out"
    run_protoc(
        ["buf/validate/validate.proto", "validated/v1/users.proto"],
        proto_paths=[PROTOS],
        out=out,
        descriptor_sets=[tmp / "validate.binpb"],
    )
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("validated.v1.users_rpckit")
    finally:
        sys.path.remove(str(out))


@pytest.fixture(scope="module")
def users_pb2(generated: Any) -> Any:
    return importlib.import_module("validated.v1.users_pb2")


@pytest.fixture
async def served(generated: Any, users_pb2: Any) -> AsyncIterator[Served]:
    class Users(generated.UsersService):  # type: ignore[misc]
        async def create_user(self, request: Any, ctx: Context) -> Any:
            return users_pb2.User(name=request.name)

        async def create_users(self, requests: AsyncIterator[Any], ctx: Context) -> Any:
            count = 0
            async for _ in requests:
                count += 1
            return users_pb2.CreateUsersResponse(count=count)

    async with serve_both(Users(), [Validate()]) as served:
        yield served


def _transport(dialect: str, served: Served) -> Transport:
    return GrpcTransport(served.grpc) if dialect == "grpc" else ConnectTransport(served.http)


def _violations(error: RpcError) -> tuple[dict[str, str], list[str]]:
    """The BadRequest field violations and the buf.validate rule ids in ``error``."""
    bad_request = error_details_pb2.BadRequest()
    rule_ids: list[str] = []
    fields = {}
    for detail in error.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):  # type: ignore[attr-defined]
            detail.Unpack(bad_request)  # type: ignore[attr-defined]
            fields = {v.field: v.description for v in bad_request.field_violations}
        elif detail.type_url == VIOLATIONS_TYPE_URL:  # type: ignore[attr-defined]
            violations = protovalidate.ViolationsPb.from_binary(detail.value)  # type: ignore[attr-defined]
            rule_ids = [v.rule_id for v in violations.violations]
    return fields, rule_ids


@pytest.mark.parametrize("dialect", ["grpc", "connect"])
async def test_invalid_unary_request_is_invalid_argument_with_field_violations(
    served: Served, generated: Any, users_pb2: Any, dialect: str
) -> None:
    transport = _transport(dialect, served)
    client = generated.UsersServiceClient(transport)
    try:
        user = await client.create_user(
            users_pb2.CreateUserRequest(name="Ada", email="ada@example.com", age=36)
        )
        assert user.name == "Ada"
        bad = users_pb2.CreateUserRequest(
            name="", email="nope", age=200, address=users_pb2.Address(country="FRA")
        )
        with pytest.raises(RpcError) as caught:
            await client.create_user(bad)
    finally:
        await transport.aclose()  # type: ignore[attr-defined]
    error = caught.value
    assert error.code is Code.INVALID_ARGUMENT
    assert error.message.startswith("invalid request: name: ")
    assert "\n" not in error.message
    fields, rule_ids = _violations(error)
    assert set(fields) == {"name", "email", "age", "address.country"}
    assert fields["age"] == "must be less than or equal to 150"
    assert rule_ids == ["string.min_len", "string.email", "uint32.lte", "string.len"]


@pytest.mark.parametrize("dialect", ["grpc", "connect"])
async def test_invalid_message_in_a_client_stream_ends_the_call(
    served: Served, generated: Any, users_pb2: Any, dialect: str
) -> None:
    transport = _transport(dialect, served)
    client = generated.UsersServiceClient(transport)
    good = users_pb2.CreateUserRequest(name="Ada", email="ada@example.com")
    try:
        summary = await client.create_users([good, good])
        assert summary.count == 2
        with pytest.raises(RpcError) as caught:
            await client.create_users([good, users_pb2.CreateUserRequest(name="Bob")])
    finally:
        await transport.aclose()  # type: ignore[attr-defined]
    assert caught.value.code is Code.INVALID_ARGUMENT
    fields, _ = _violations(caught.value)
    assert fields == {"email": "value is empty, which is not a valid email address"}
