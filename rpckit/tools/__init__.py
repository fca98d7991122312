"""Tools around a schema: ``rpckit call``, server reflection on the bridge, OpenAPI, the docs
page and ``--reload``."""
