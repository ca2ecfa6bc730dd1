"""The event loop the daemons run on: uvloop where it is installed, asyncio's own otherwise.

uvloop (libuv, in Cython) runs the same asyncio code with fewer Python-level hops per callback,
which the controller's state loop and the agent's stream pay per task. ``CORRAL_EVENT_LOOP=asyncio``
selects the standard loop (to rule the loop out when chasing a problem).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["loop_factory", "run"]

T = TypeVar("T")
_ENV = "CORRAL_EVENT_LOOP"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None for asyncio's default (not installed, or not wanted)."""
    if os.environ.get(_ENV, "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # an optional speed-up: Windows, or a minimal install
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop :func:`loop_factory` picks."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
