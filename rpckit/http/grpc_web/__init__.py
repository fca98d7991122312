"""gRPC-Web: its wire rules (``protocol``), endpoint and client."""
