"""The ``--address-file`` handshake: a controller started on port 0 tells its starter where it listens.

The daemon writes the bound ``host:port`` atomically once it serves; whoever started it (``corral
dev``, the demo, the benchmarks, the tests) waits for it with :func:`wait_for_address`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["AddressTimeout", "ControllerExited", "read_address", "wait_for_address", "write_address"]


class ControllerExited(RuntimeError):
    """The controller process ended before it wrote its address."""


class AddressTimeout(TimeoutError):
    """No address appeared within the deadline."""


def write_address(path: Path, address: str) -> None:
    """Write ``address`` so that a reader never sees a partial line."""
    partial = path.with_suffix(path.suffix + ".tmp")
    partial.write_text(address)
    partial.replace(path)


def read_address(path: Path) -> str | None:
    """The address in ``path``, or None while it is not written yet."""
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def wait_for_address(
    path: Path, *, exited: Callable[[], int | None] | None = None, timeout: float = 30.0, poll: float = 0.05
) -> str:
    """Wait until the controller wrote its address to ``path`` and return it.

    ``exited`` (e.g. ``Popen.poll``) returns the controller's exit code once it ended, to fail at
    once instead of waiting out ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        address = read_address(path)
        if address is not None:
            return address
        code = exited() if exited is not None else None
        if code is not None:
            raise ControllerExited(f"the controller exited with code {code} before writing {path}")
        if time.monotonic() >= deadline:
            raise AddressTimeout(f"the controller wrote no address to {path} within {timeout:g} s")
        time.sleep(poll)
