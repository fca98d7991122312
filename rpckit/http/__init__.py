"""The HTTP/1.1 bridge: the Connect protocol and plain fetch routes, as one ASGI app."""

from rpckit.http.app import Bridge, Cors, create_app
from rpckit.http.client import ConnectTransport

__all__ = ["Bridge", "ConnectTransport", "Cors", "create_app"]
