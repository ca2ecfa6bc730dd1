"""The simulated fleet: N identical agents with S slots each, and what they report in their Hello."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from corral.controller.core.model import Inventory, Resources
from corral.controller.errors import FieldViolation, InvalidArgument
from corral.controller.spec import Limits

__all__ = ["MAX_AGENTS", "MAX_TOTAL_SLOTS", "Fleet", "parse_shape"]

MAX_AGENTS = 1000  # simulated agents; the controller's own cap (max_agents) is larger, a simulation needs less
MAX_TOTAL_SLOTS = 100_000  # agents x slots: beyond that the timeline alone would not fit in memory usefully
_SHAPE = re.compile(r"^\s*(\d{1,7})\s*[xX]\s*(\d{1,7})\s*$")


@dataclass(frozen=True, slots=True)
class Fleet:
    """``agents`` agents named ``sim-1`` ... each offering ``slots`` slots and the same inventory.

    ``cpu_cores`` and ``memory_mb`` default to one core and 4 GiB per slot, so tasks that declare
    no resources (or up to that much each) are limited by slots, as on a real agent started with
    ``--slots``. The agents run every type in ``agent_types``.
    """

    agents: int
    slots: int
    agent_types: tuple[str, ...] = ("shell", "python")
    cpu_cores: float | None = None  # None: one per slot
    memory_mb: int | None = None  # None: 4096 per slot
    gpus: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems: list[tuple[str, str]] = []
        if not 1 <= self.agents <= MAX_AGENTS:
            problems.append(("agents", f"must be between 1 and {MAX_AGENTS}, got {self.agents}"))
        if not 1 <= self.slots <= Limits.max_slots:
            problems.append(("slots", f"must be between 1 and {Limits.max_slots} per agent, got {self.slots}"))
        elif 1 <= self.agents <= MAX_AGENTS and self.agents * self.slots > MAX_TOTAL_SLOTS:
            problems.append(
                ("slots", f"{self.agents} x {self.slots} = {self.agents * self.slots} slots, over {MAX_TOTAL_SLOTS}")
            )
        if not self.agent_types:
            problems.append(("agent_types", "the agents must run at least one agent type"))
        if len(self.agent_types) > Limits.max_agent_types:
            problems.append(("agent_types", f"{len(self.agent_types)} types, over {Limits.max_agent_types}"))
        if self.cpu_cores is not None and not 0 <= self.cpu_cores <= Limits.max_cpu_cores:
            problems.append(("cpu_cores", f"must be between 0 and {Limits.max_cpu_cores:g}, got {self.cpu_cores}"))
        if self.memory_mb is not None and not 0 <= self.memory_mb <= Limits.max_memory_mb:
            problems.append(("memory_mb", f"must be between 0 and {Limits.max_memory_mb}, got {self.memory_mb}"))
        if not 0 <= self.gpus <= Limits.max_gpu_count:
            problems.append(("gpus", f"must be between 0 and {Limits.max_gpu_count}, got {self.gpus}"))
        if problems:
            raise InvalidArgument([FieldViolation(path, text) for path, text in problems])

    @property
    def total_slots(self) -> int:
        return self.agents * self.slots

    @property
    def names(self) -> tuple[str, ...]:
        """Agent names (also their ids), in order."""
        return tuple(f"sim-{i}" for i in range(1, self.agents + 1))

    def inventory(self) -> Inventory:
        """What each agent offers."""
        cpu = float(self.slots) if self.cpu_cores is None else self.cpu_cores
        memory = 4096 * self.slots if self.memory_mb is None else self.memory_mb
        capacity = Resources(cpu_cores=cpu, memory_mb=memory, gpu_count=self.gpus)
        return Inventory(capacity, slots=self.slots, gpu_ids=tuple(range(self.gpus)))

    def describe(self) -> str:
        return (
            f"{self.agents} agent{'s' if self.agents != 1 else ''} x {self.slots} slot{'s' if self.slots != 1 else ''}"
        )


def parse_shape(text: str) -> tuple[int, int]:
    """``"2x4"`` as ``(agents, slots per agent)``; the ranges are checked by :class:`Fleet`.

    Raises InvalidArgument (field ``agents``) with the expected form when ``text`` is not one.
    """
    match = _SHAPE.match(text)
    if match is None:
        raise InvalidArgument.field("agents", f"{text!r} is not AGENTSxSLOTS (for example 2x4: 2 agents of 4 slots)")
    return int(match.group(1)), int(match.group(2))
