"""The HTTP/1.1 bridge: the Connect protocol and plain fetch routes, as one ASGI app."""

from rpckit.http.app import Bridge, Cors, create_app
from rpckit.http.client import ConnectTransport
from rpckit.http.grpc_web_client import GrpcWebTransport

__all__ = ["Bridge", "ConnectTransport", "Cors", "GrpcWebTransport", "create_app"]
