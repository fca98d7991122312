"""Plain grpcio calls to the example's methods (a fresh channel, hence connection, per call)."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from examples.streams.v1.streams_pb2 import Dog, GetDogRequest

SERVICE = "examples.streams.v1.StreamsService"


def get_dog(address: str, index: int = 1, credentials: Any = None) -> Dog:
    """``GetDog`` over a new channel (insecure, or TLS with ``credentials``)."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    if credentials is None:
        channel = grpc.insecure_channel(address, options=options)
    else:
        channel = grpc.secure_channel(address, credentials, options=options)
    with channel:
        call = channel.unary_unary(
            f"/{SERVICE}/GetDog",
            request_serializer=GetDogRequest.SerializeToString,
            response_deserializer=Dog.FromString,
        )
        dog: Dog = call(GetDogRequest(index=index), timeout=10)
        return dog


def health(address: str, service: str = "") -> str:
    """The gRPC health service's status name for ``service``."""
    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        response = check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return name
