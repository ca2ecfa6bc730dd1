"""The corral agent daemon: runs the tasks a controller assigns to this machine.

The package deliberately imports nothing at import time: the warm python workers are started as
``python -m corral.agent.pyworker`` and must boot fast, without grpc or protobuf.
"""

from __future__ import annotations

__all__: list[str] = []
