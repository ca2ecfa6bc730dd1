"""The agent's lease on its supervisors: one file holding a CLOCK_BOOTTIME deadline.

The agent renews it only when the controller echoes one of its heartbeats (to the heartbeat's send time
plus ``fence_after``); every supervisor of a ``stop`` attempt reads it and fences itself once it is past.
CLOCK_BOOTTIME keeps counting through a suspended host or VM, so a resumed machine sees its lease expired.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["LeaseFile", "boottime"]


def boottime() -> float:
    """Seconds on CLOCK_BOOTTIME (monotonic, and counting while suspended)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class LeaseFile:
    """One line, ``"%.3f\\n"``: the CLOCK_BOOTTIME time until which supervisors may keep running."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def renew(self, until: float) -> None:
        """Write the new deadline atomically (a reader never sees a half-written line)."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as file:
            file.write(f"{until:.3f}\n")
        os.replace(tmp, self.path)

    def read(self) -> float | None:
        """The deadline, or None when there is no (readable) lease file."""
        try:
            with open(self.path) as file:
                return float(file.read().strip())
        except (OSError, ValueError):
            return None
