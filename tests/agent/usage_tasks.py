"""Functions the usage-measurement tests run by name (``tests.agent.usage_tasks:NAME``)."""

from __future__ import annotations

import subprocess
import sys
import time

__all__ = ["allocate", "burn", "burn_in_child", "small"]

#: A CPU burner for a child process: spins until it has used the CPU seconds in argv[1].
BURN = "import sys, time\nend = float(sys.argv[1])\nwhile time.process_time() < end:\n    pass\n"


def allocate(mb: int) -> int:
    """Touch ``mb`` MiB (bytes written, so the pages are resident), then free them."""
    block = b"x" * (mb << 20)
    return len(block) >> 20


def burn(cpu_s: float) -> float:
    """Use ``cpu_s`` CPU seconds in this process (CPU time, not wall time: the host may be busy)."""
    end = time.process_time() + cpu_s
    while time.process_time() < end:
        pass
    return cpu_s


def burn_in_child(cpu_s: float) -> float:
    """Use ``cpu_s`` CPU seconds in a child process (reaped before the task returns)."""
    subprocess.run([sys.executable, "-c", BURN, str(cpu_s)], check=True)
    return cpu_s


def small() -> int:
    """A task that allocates next to nothing."""
    return 1
