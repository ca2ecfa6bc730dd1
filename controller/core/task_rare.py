"""The fields of a task that almost every task leaves at their defaults, kept apart.

A :class:`~corral.controller.core.model.Task` holds them in one :class:`TaskRare` record, created
on the first non-default write and dropped when every field is back to its default, and shows
them as properties (:class:`RareFields`). A task that never sets any costs one slot (None) instead
of thirteen: ~96 B per task, ~96 MiB for a 1,000,000-task workflow. Hot paths that read several of
them at once (the store's row encoding) read ``task._rare`` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["RARE_DEFAULTS", "RareFields", "TaskRare"]


@dataclass(slots=True)
class TaskRare:
    """A task's rarely set fields (see :class:`~corral.controller.core.model.Task` for each meaning)."""

    max_disconnect_s: float | None = None
    max_agent_losses: int | None = None
    agent_losses: int = 0
    reruns_after_fence: int = 0
    failure_reason: str = ""
    deadline_relative: bool = False
    max_preemptions: int | None = None
    preemptions: int = 0
    last_preemption: str = ""
    compensate: bytes = b""
    compensates: str = ""
    fallback_used: bool = False
    cache_source: str = ""


#: Every field at its default: what a task without a record reads (never mutated).
RARE_DEFAULTS = TaskRare()


class RareFields:
    """The rare fields as properties over ``self._rare`` (a mixin of the slotted Task)."""

    __slots__ = ()
    _rare: TaskRare | None

    def _set_rare(self, name: str, value: Any) -> None:
        rare = self._rare
        if rare is None:
            if value == getattr(RARE_DEFAULTS, name):
                return  # nothing to remember
            # The slot is Task's (a dataclass field, so it counts in == and replace()), not the mixin's.
            rare = self._rare = TaskRare()  # type: ignore[misc]
        setattr(rare, name, value)
        if rare == RARE_DEFAULTS:
            self._rare = None  # type: ignore[misc]  # back to defaults: equal to a task without a record

    @property
    def max_disconnect_s(self) -> float | None:
        rare = self._rare
        return None if rare is None else rare.max_disconnect_s

    @max_disconnect_s.setter
    def max_disconnect_s(self, value: float | None) -> None:
        self._set_rare("max_disconnect_s", value)

    @property
    def max_agent_losses(self) -> int | None:
        rare = self._rare
        return None if rare is None else rare.max_agent_losses

    @max_agent_losses.setter
    def max_agent_losses(self, value: int | None) -> None:
        self._set_rare("max_agent_losses", value)

    @property
    def agent_losses(self) -> int:
        rare = self._rare
        return 0 if rare is None else rare.agent_losses

    @agent_losses.setter
    def agent_losses(self, value: int) -> None:
        self._set_rare("agent_losses", value)

    @property
    def reruns_after_fence(self) -> int:
        rare = self._rare
        return 0 if rare is None else rare.reruns_after_fence

    @reruns_after_fence.setter
    def reruns_after_fence(self, value: int) -> None:
        self._set_rare("reruns_after_fence", value)

    @property
    def failure_reason(self) -> str:
        rare = self._rare
        return "" if rare is None else rare.failure_reason

    @failure_reason.setter
    def failure_reason(self, value: str) -> None:
        self._set_rare("failure_reason", value)

    @property
    def deadline_relative(self) -> bool:
        rare = self._rare
        return False if rare is None else rare.deadline_relative

    @deadline_relative.setter
    def deadline_relative(self, value: bool) -> None:
        self._set_rare("deadline_relative", value)

    @property
    def max_preemptions(self) -> int | None:
        rare = self._rare
        return None if rare is None else rare.max_preemptions

    @max_preemptions.setter
    def max_preemptions(self, value: int | None) -> None:
        self._set_rare("max_preemptions", value)

    @property
    def preemptions(self) -> int:
        rare = self._rare
        return 0 if rare is None else rare.preemptions

    @preemptions.setter
    def preemptions(self, value: int) -> None:
        self._set_rare("preemptions", value)

    @property
    def last_preemption(self) -> str:
        rare = self._rare
        return "" if rare is None else rare.last_preemption

    @last_preemption.setter
    def last_preemption(self, value: str) -> None:
        self._set_rare("last_preemption", value)

    @property
    def compensate(self) -> bytes:
        rare = self._rare
        return b"" if rare is None else rare.compensate

    @compensate.setter
    def compensate(self, value: bytes) -> None:
        self._set_rare("compensate", value)

    @property
    def compensates(self) -> str:
        rare = self._rare
        return "" if rare is None else rare.compensates

    @compensates.setter
    def compensates(self, value: str) -> None:
        self._set_rare("compensates", value)

    @property
    def fallback_used(self) -> bool:
        rare = self._rare
        return False if rare is None else rare.fallback_used

    @fallback_used.setter
    def fallback_used(self, value: bool) -> None:
        self._set_rare("fallback_used", value)

    @property
    def cache_source(self) -> str:
        rare = self._rare
        return "" if rare is None else rare.cache_source

    @cache_source.setter
    def cache_source(self, value: str) -> None:
        self._set_rare("cache_source", value)
