"""Functions the policy tests run in warm python workers (``tests.security.policy_tasks:NAME``)."""

from __future__ import annotations

import os
import sys
import types
from os import system as run_command  # re-exported on purpose: the worker must refuse it
from pathlib import Path
from typing import Any

__all__ = ["big_result", "env_of", "identity", "plant", "print_bytes", "print_split", "probe", "run_command", "touch"]

PLANTED = "corral_policy_planted"


def touch(path: str) -> str:
    """Create ``path`` (the marker that shows a task ran)."""
    Path(path).write_text("ran\n")
    return path


def env_of(*names: str) -> dict[str, str | None]:
    """The named variables as the task sees them."""
    return {name: os.environ.get(name) for name in names}


def identity() -> dict[str, Any]:
    """Who and where the task runs."""
    return {"uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid(), "cwd": os.getcwd()}


def plant(marker: str) -> int:
    """Leave every kind of state a later task could pick up, and return the worker's pid.

    A module file in the cwd (put on sys.path) that creates ``marker`` when imported, a module in
    sys.modules, a variable in os.environ, another cwd and an extra sys.path entry.
    """
    here = Path.cwd()
    (here / f"{PLANTED}.py").write_text(f"from pathlib import Path\nPath({marker!r}).write_text('imported')\n")
    sys.path.insert(0, str(here))
    sys.modules[PLANTED + "_mem"] = types.ModuleType(PLANTED + "_mem")
    os.environ["CORRAL_POLICY_PLANTED"] = "1"
    os.chdir("/")
    return os.getpid()


def probe() -> dict[str, Any]:
    """What a task can see of earlier tasks' state."""
    try:
        __import__(PLANTED)
        imported = True
    except ImportError:
        imported = False
    return {
        "pid": os.getpid(),
        "imported": imported,
        "in_modules": PLANTED + "_mem" in sys.modules,
        "env": os.environ.get("CORRAL_POLICY_PLANTED"),
        "cwd": os.getcwd(),
        "path_has_cwd": any(p in (os.getcwd(), "", ".") for p in sys.path),
    }


def print_bytes(total: int) -> int:
    """Write ``total`` bytes to stdout in 1 MiB writes."""
    chunk = b"y" * (1 << 20)
    left = total
    out = sys.stdout.buffer
    while left > 0:
        out.write(chunk[: min(left, len(chunk))])
        left -= len(chunk)
    out.flush()
    return total


def print_split(name: str) -> str:
    """Print the value of variable ``name`` in two separately flushed halves (two pipe reads)."""
    import time

    value = os.environ[name]
    half = len(value) // 2
    sys.stdout.write("before " + value[:half])
    sys.stdout.flush()
    time.sleep(0.3)
    sys.stdout.write(value[half:] + " after\n")
    sys.stdout.flush()
    print(f"whole {value}", file=sys.stderr)
    return "done"


def big_result(size: int) -> str:
    """A result whose JSON is ``size + 2`` bytes."""
    return "r" * size
