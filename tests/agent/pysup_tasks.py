"""Functions the python-supervision tests run by name (``tests.agent.pysup_tasks:NAME``)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

__all__ = ["leave_a_sleeper", "mark_and_sleep", "stubborn_double_fork"]


def _setsid_sleeper(pid_file: str) -> None:
    # sh backgrounds a setsid'd sleeper that ignores SIGTERM and keeps the worker's stdout open,
    # then exits: the sleeper is double-forked away from the task.
    script = f"setsid sh -c 'trap \"\" TERM; echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 600' &"
    subprocess.run(["/bin/sh", "-c", script], check=True)
    deadline = time.monotonic() + 10
    while not os.path.exists(pid_file) and time.monotonic() < deadline:
        time.sleep(0.01)


def stubborn_double_fork(pid_file: str, seconds: float) -> str:
    """Double-forks a setsid sleeper (SIGTERM ignored, holding stdout), then sleeps ignoring SIGTERM."""
    _setsid_sleeper(pid_file)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(seconds)
    return "finished"


def leave_a_sleeper(pid_file: str) -> int:
    """Double-forks a setsid sleeper and returns at once (leaving it behind); returns its pid."""
    _setsid_sleeper(pid_file)
    return int(Path(pid_file).read_text())


def mark_and_sleep(marker: str, seconds: float, value: int = 0) -> dict[str, int]:
    """Writes its pid to ``marker`` (the test knows it runs), sleeps, returns ``value`` and its pid."""
    Path(marker + ".tmp").write_text(str(os.getpid()))
    os.replace(marker + ".tmp", marker)
    time.sleep(seconds)
    return {"value": value, "pid": os.getpid()}
