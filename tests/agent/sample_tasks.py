"""Functions the python-worker tests run by name (``tests.agent.sample_tasks:NAME``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

__all__ = [
    "add",
    "async_double",
    "boom",
    "die",
    "echo_env",
    "leave_file",
    "noop",
    "pid",
    "print_lines",
    "sleep",
    "spawn_and_sleep",
    "sum_inputs",
    "with_kwargs",
]


def noop() -> None:
    """Nothing at all (the throughput case)."""


def leave_file(relative: str) -> int:
    """Write a file under the working folder and leave it there; the process id."""
    with open(relative, "w") as file:
        file.write("left behind")
    return os.getpid()


def add(a: int, b: int) -> int:
    """a + b."""
    return int(a + b)


def pid() -> int:
    """The worker's process id."""
    return os.getpid()


def boom(message: str = "boom") -> None:
    """Always fails."""
    raise ValueError(message)


async def async_double(x: int) -> int:
    """An async function: awaited to completion by the worker."""
    await asyncio.sleep(0.01)
    return 2 * x


def sum_inputs(inputs: dict[str, Any], extra: int = 0) -> int:
    """Adds up the results of the dependencies."""
    return int(sum(inputs.values())) + extra


def with_kwargs(**kwargs: Any) -> dict[str, Any]:
    """Gets the inputs through **kwargs."""
    return kwargs


def echo_env(*names: str) -> dict[str, str | None]:
    """Environment variables as the task sees them."""
    return {name: os.environ.get(name) for name in names}


def print_lines(count: int, child: bool = False) -> str:
    """Writes to stdout and stderr, optionally from a child process too (fd-level capture)."""
    for i in range(count):
        print(f"line {i}")
    print("to stderr", file=sys.stderr)
    if child:
        sys.stdout.flush()
        subprocess.run(["/bin/sh", "-c", "echo from child"], check=True)
    return "done"


def sleep(seconds: float) -> str:
    """Sleeps."""
    time.sleep(seconds)
    return "slept"


def spawn_and_sleep(pid_file: str) -> None:
    """Starts a grandchild process that ignores SIGTERM, records its pid, then sleeps."""
    proc = subprocess.Popen(["/bin/sh", "-c", "trap '' TERM; sleep 1000 & echo $! > " + pid_file + "; wait"])
    time.sleep(1000)
    proc.wait()


def die(code: int = 3) -> None:
    """Kills the worker process itself."""
    os._exit(code)


def say(text: str, seconds: float = 0.0, touch: str = "") -> int:
    """Prints ``text`` to stdout and stderr, optionally creates the file ``touch``, sleeps; its pid."""
    print(text)
    print(text, file=sys.stderr)
    if touch:
        with open(touch, "w"):
            pass
    time.sleep(seconds)
    return os.getpid()
