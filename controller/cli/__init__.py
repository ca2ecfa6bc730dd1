"""The ``corral`` command line: typer commands grouped by module, rendering in :mod:`.output`."""

from __future__ import annotations

import os

# gRPC's core logs every failed TLS handshake at INFO on stderr; a command line prints its own one
# line instead. Set before grpc is first imported (the commands import it); the user may override.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
