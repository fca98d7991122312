"""The Connect protocol: its wire rules (``protocol``), endpoint and client."""
