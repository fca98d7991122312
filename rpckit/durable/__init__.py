"""Durable streams: a server stream produced once into a log and read many times, from any
instance, from any offset (``log``: the interface; ``memory`` and ``redis``: the backends)."""
