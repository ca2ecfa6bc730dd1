"""The fields of a task that almost every task leaves at their defaults, kept apart.

A :class:`~corral.controller.core.model.Task` holds them in one :class:`TaskRare` record, created
on the first non-default write and dropped when every field is back to its default, and shows
them as attributes (:class:`RareFields`, one :class:`_Rare` descriptor each). A task that never
sets any costs one slot (None) instead of twenty-five: ~192 B per task, ~37 MiB for a 200k-task
workflow. Hot paths that read several of them at once (the store's row encoding) read
``task._rare`` directly.

Which fields are rare: the per-task overrides of agent-loss handling, the placement preferences
(constraints, label expressions, spread, affinity, gang, preemptible), deadlines, the issue-10
features (dynamic, rules, cache, compensation), the retry backoff's not-before time, and the
counters and reasons that only unlucky tasks gain. Fields every finished task sets (times,
attempt, result) stay slots: a record per task would cost more than the slots it saves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

if TYPE_CHECKING:
    from corral.controller.core.dynamic import Dynamic
    from corral.controller.core.model import FallbackRules, LabelExpr, TaskCache

__all__ = ["NO_LABELS", "RARE_DEFAULTS", "RareFields", "TaskRare"]

#: The empty label mapping every task without constraints or affinity shares (read-only).
NO_LABELS: Mapping[str, str] = MappingProxyType({})


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
    # The shared empty mapping (a factory only because dataclasses refuse an unhashable default).
    constraints: Mapping[str, str] = field(default_factory=lambda: NO_LABELS)
    constraint_exprs: tuple[LabelExpr, ...] = ()
    spread: str = ""
    affinity: Mapping[str, str] = field(default_factory=lambda: NO_LABELS)
    deadline: float | None = None
    preemptible: bool = False
    gang: str = ""
    dynamic: Dynamic | None = None
    rules: FallbackRules | None = None
    cache: TaskCache | None = None
    not_before: float | None = None
    on_disconnect: str = "stop"


#: Every field at its default: what a task without a record reads (never mutated).
RARE_DEFAULTS = TaskRare()

_T = TypeVar("_T")


class _Rare(Generic[_T]):
    """One rare field as an attribute of a task: read from ``_rare`` (or the default), written
    through :meth:`RareFields._set_rare`."""

    __slots__ = ("default", "name")

    def __init__(self, default: _T) -> None:
        self.default = default
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, task: None, owner: type) -> _Rare[_T]: ...

    @overload
    def __get__(self, task: RareFields, owner: type) -> _T: ...

    def __get__(self, task: RareFields | None, owner: type) -> _T | _Rare[_T]:
        if task is None:
            return self
        rare = task._rare
        if rare is None:
            return self.default
        value: _T = getattr(rare, self.name)
        return value

    def __set__(self, task: RareFields, value: _T) -> None:
        task._set_rare(self.name, value)


class RareFields:
    """The rare fields as attributes over ``self._rare`` (a mixin of the slotted Task)."""

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

    max_disconnect_s: _Rare[float | None] = _Rare(None)
    max_agent_losses: _Rare[int | None] = _Rare(None)
    agent_losses: _Rare[int] = _Rare(0)
    reruns_after_fence: _Rare[int] = _Rare(0)
    failure_reason: _Rare[str] = _Rare("")
    deadline_relative: _Rare[bool] = _Rare(False)
    max_preemptions: _Rare[int | None] = _Rare(None)
    preemptions: _Rare[int] = _Rare(0)
    last_preemption: _Rare[str] = _Rare("")
    compensate: _Rare[bytes] = _Rare(b"")
    compensates: _Rare[str] = _Rare("")
    fallback_used: _Rare[bool] = _Rare(False)
    cache_source: _Rare[str] = _Rare("")
    constraints: _Rare[Mapping[str, str]] = _Rare(NO_LABELS)
    constraint_exprs: _Rare[tuple[LabelExpr, ...]] = _Rare(())
    spread: _Rare[str] = _Rare("")
    affinity: _Rare[Mapping[str, str]] = _Rare(NO_LABELS)
    deadline: _Rare[float | None] = _Rare(None)
    preemptible: _Rare[bool] = _Rare(False)
    gang: _Rare[str] = _Rare("")
    dynamic: _Rare[Dynamic | None] = _Rare(None)
    rules: _Rare[FallbackRules | None] = _Rare(None)
    cache: _Rare[TaskCache | None] = _Rare(None)
    not_before: _Rare[float | None] = _Rare(None)
    on_disconnect: _Rare[str] = _Rare("stop")
