"""Durable streams: a server stream produced once into a log and read many times, from any
instance, from any offset (``log``: the interface; ``memory`` and ``redis``: the backends;
``calls``: durable methods; ``server``: the Durable Streams protocol).

Mark a server-streaming handler with ``@durable(...)`` to make it durable."""

from rpckit.durable.options import Durability, durable

__all__ = ["Durability", "durable"]
