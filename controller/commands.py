"""What goes on the state loop's inbox, and the agent streams it delivers to.

Split from :mod:`corral.controller.runtime` so the loop stays one job: an inbox entry knows
whether it only reads (see :data:`READ_EVENTS`) and which agent's report it carries, so a write
the store refuses can be answered precisely and its agent asked to send it again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from corral.controller.core.machine import Machine

__all__ = [
    "READ_EVENTS",
    "AgentSession",
    "Batch",
    "Command",
    "CommandFailed",
    "Entry",
    "Failed",
    "agent_of",
    "error_kind",
    "is_read",
    "new_id",
]

log = logging.getLogger("corral.controller")
Command = Callable[[Machine, float], Any]
# Core events that only read (or change memory-only state): they keep working while degraded.
# Request events say so themselves with a class attribute ``READ = True``.
READ_EVENTS = frozenset({"AgentHeartbeat"})


class Entry(NamedTuple):
    """A command on the inbox. ``agent``: the agent a write reports for ("" none, None unknown)."""

    command: Command
    future: asyncio.Future[Any] | None
    read: bool = False
    agent: str | None = ""


Batch = list[Entry]


class CommandFailed(RuntimeError):
    """A command was rejected whole by an unexpected error in the controller (logged once there).

    The caller sees INTERNAL: its request was well-formed as far as the edge could tell, but the
    controller could not apply it. Nothing of it was stored, and the controller goes on.
    """

    logged = True  # the error interceptor need not log it again


class Failed(Exception):
    """One attempt at a tick failed; ``culprit`` is the index of the command to blame, if known.

    ``operational``: the store failed (disk full, I/O), not the tick's data.
    """

    def __init__(
        self, error: BaseException, culprit: int | None = None, pull: Any = None, *, operational: bool = False
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.culprit = culprit
        self.pull = pull
        self.operational = operational


def error_kind(error: BaseException) -> tuple[str, str, int]:
    """What makes two unexpected errors "the same" for logging: type and where it was raised."""
    frames = traceback.extract_tb(error.__traceback__)
    filename, line = (frames[-1].filename, frames[-1].lineno or 0) if frames else ("", 0)
    return type(error).__name__, filename, line


def is_read(event: object) -> bool:
    """Whether an event only reads the machine: its class says ``READ = True`` or it is in READ_EVENTS."""
    kind = type(event)
    return getattr(kind, "READ", False) is True or kind.__name__ in READ_EVENTS


def agent_of(event: object) -> str:
    """The agent an event reports for ("" when none): its stream is reopened after a refused write."""
    for name in ("agent_id", "reporter"):
        value = getattr(event, name, "")
        if isinstance(value, str) and value:
            return value
    return ""


_IDS_PER_DRAW = 256


def new_id(prefix: str = "") -> Callable[[], str]:
    """An id factory: random 80-bit hex ids, short enough to type a prefix of.

    Drawn from ``os.urandom`` 256 at a time: one syscall and no UUID object per id (every attempt
    takes one on the state loop; ``uuid4().hex`` cost 2% of the controller under the noop load).
    """
    ready: list[str] = []

    def make() -> str:
        if not ready:
            digits = os.urandom(10 * _IDS_PER_DRAW).hex()
            ready.extend(prefix + digits[i : i + 20] for i in range(0, 20 * _IDS_PER_DRAW, 20))
        return ready.pop()

    return make


@dataclass(eq=False)
class AgentSession:
    """One live agent stream: its epoch and the messages waiting to be written to it."""

    agent_id: str
    epoch: int
    outbound: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    closed: bool = False
    peer: str = ""  # where the stream comes from, for messages about it
    error: Exception | None = None  # why the controller ended the stream (sent to the agent)
    # Messages are batches, so an agent that reads keeps this short. One that stops reading
    # must not grow the controller's memory without bound: its stream is closed instead, and
    # the agent catches up through a fresh Hello.
    max_backlog: int = 1_000

    def send(self, message: Any) -> None:
        if self.closed:
            return
        if self.outbound.qsize() >= self.max_backlog:
            log.warning("agent %s is not reading its stream; closing it", self.agent_id)
            self.close()
            return
        self.outbound.put_nowait(message)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.outbound.put_nowait(None)
