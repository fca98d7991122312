"""``python -m rpckit``: the same as the ``rpckit`` command."""

from rpckit.cli import main

raise SystemExit(main())
