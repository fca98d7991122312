"""The HTTP/1.1 bridge: the Connect protocol (and, later, plain fetch routes) on Starlette."""

from rpckit.http.app import Cors, create_app
from rpckit.http.client import ConnectTransport

__all__ = ["ConnectTransport", "Cors", "create_app"]
