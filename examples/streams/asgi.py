"""The example's HTTP bridge as a module-level ASGI app, for servers that import one:
``granian --interface asgi examples.streams.asgi:app`` or ``uvicorn examples.streams.asgi:app``.

``RPCKIT_FILES`` names the directory DownloadFile serves (default: a temp dir with samples).
"""

from __future__ import annotations

import os

from examples.streams.server import create_service
from rpckit.http import create_app

_files = os.environ.get("RPCKIT_FILES")
app = create_app([create_service(["--files", _files] if _files else [])])
