"""Group rules of one scheduling pass: gangs (all-or-nothing) and per-workflow concurrency limits.

A *gang* is a set of tasks of one workflow sharing ``gang: NAME``. Its tasks become placeable
only when every one of them is READY (and out of retry backoff), and they are placed all in one
pass or none: the pass tries the whole gang on *clones of its own agent views* and commits the
allocations only when every member found an agent, so a partial fit leaves nothing allocated.

A workflow's *concurrency limit* (``max_parallel``, or the AIMD limit after OOM kills: see
:mod:`~corral.controller.core.parallelism`) caps its ASSIGNED/RUNNING attempts; tasks over it
are held without counting as the pass's skips, up to ``max_held`` per pass.

:func:`~corral.controller.core.scheduling.plan` asks a :class:`PassRules` only when the machine
builds one (some gang or limit exists), so the common pass pays one ``is None`` check per task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from corral.controller.core.model import Task
from corral.controller.core.placement import AgentView, Demand, ScoreContext, choose
from corral.controller.errors import FieldViolation

__all__ = ["GangInfo", "PassRules", "admit", "gang_not_ready", "gang_problems", "gang_reason", "try_gang"]


@dataclass(frozen=True, slots=True)
class GangInfo:
    """A gang: its name and its members' task ids (in submission order)."""

    name: str
    members: tuple[str, ...]


@dataclass(slots=True)
class PassRules:
    """What one pass needs to know about gangs and limits (built by the machine, per pass).

    ``gang_of(task_id)`` is the task's gang or None; ``placeable(task_id)`` whether a member is
    READY and out of backoff now; ``limits`` maps limited workflow ids to (limit, why) and
    ``running`` their active attempts (ASSIGNED/RUNNING) when the pass began.
    """

    gang_of: Callable[[str], GangInfo | None]
    placeable: Callable[[str], bool]
    limits: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    running: dict[str, int] = field(default_factory=dict)
    max_held: int = 4096
    # Filled by the pass: tasks already decided (gang members), reasons per task / per workflow.
    decided: set[str] = field(default_factory=set)
    held_tasks: dict[str, str] = field(default_factory=dict)
    held_workflows: dict[str, str] = field(default_factory=dict)
    held: int = 0

    def room(self, workflow_id: str) -> int | None:
        """How many more tasks of the workflow may start in this pass (None: unlimited)."""
        found = self.limits.get(workflow_id)
        if found is None:
            return None
        return found[0] - self.running.get(workflow_id, 0)

    def hold_workflow(self, workflow_id: str) -> None:
        """Record that the workflow is at its limit (its tasks wait for one of its attempts to end)."""
        self.held += 1
        if workflow_id not in self.held_workflows:
            self.held_workflows[workflow_id] = self.limits[workflow_id][1]

    def started(self, workflow_id: str, count: int = 1) -> None:
        """Count placements of a limited workflow made by the pass."""
        if workflow_id in self.limits:
            self.running[workflow_id] = self.running.get(workflow_id, 0) + count


def try_gang(
    gang: GangInfo,
    demand: Callable[[str], Demand],
    agents: Iterable[AgentView],
    strategy: str,
    ctx: ScoreContext,
) -> tuple[list[tuple[str, str]], int]:
    """Place every member of ``gang`` on clones of ``agents``: ((task id, agent id) each, fit count).

    All or nothing: the list is empty unless every member found an agent; the count says how
    many members fit in the greedy trial (for the waiting reason). ``agents`` are not changed.
    """
    trial = []
    for view in agents:
        clone = view.clone()
        # Members start together: none waits on an agent for a slot still held by an attempt
        # expected to end soon (core/lookahead.py), which may overrun its estimate.
        clone.ending = 0
        if clone.has_room():
            trial.append(clone)
    chosen: list[tuple[str, str]] = []
    for task_id in gang.members:
        need = demand(task_id)
        agent = choose(need, [a for a in trial if a.has_room()], strategy, ctx)
        if agent is None:
            continue  # keep trying the rest, so the reason can say how many fit
        agent.allocate(need.resources)
        chosen.append((task_id, agent.id))
    if len(chosen) < len(gang.members):
        return [], len(chosen)
    return chosen, len(chosen)


def gang_reason(gang: GangInfo, fit: int) -> str:
    """Why a gang whose members are all ready still waits."""
    return f"gang {gang.name}: waiting until all {len(gang.members)} tasks fit ({fit} fit now)"


def gang_not_ready(gang: GangInfo, ready: int) -> str:
    """Why a gang with members not yet ready waits."""
    return f"gang {gang.name}: waiting until all {len(gang.members)} tasks are ready ({ready} ready)"


def admit(
    rules: PassRules,
    task_id: str,
    need: Demand,
    demand: Callable[[str], Demand],
    agents: Iterable[AgentView],
    strategy: str,
    ctx: ScoreContext,
) -> list[tuple[str, str]] | None:
    """The pass's group decision for ``task_id``: None to place it alone as usual, else the
    (task id, agent id) placements to commit for its gang (empty: held, with the reason recorded).
    """
    if task_id in rules.decided:
        return []  # a member of a gang this pass already placed or held
    workflow_id = need.workflow_id
    gang = rules.gang_of(task_id)
    room = rules.room(workflow_id)
    if gang is None:
        if room is not None and room <= 0:
            rules.hold_workflow(workflow_id)
            return []
        return None
    rules.decided.update(gang.members)
    ready = sum(1 for m in gang.members if rules.placeable(m))
    if ready < len(gang.members):
        why = gang_not_ready(gang, ready)
    elif room is not None and room < len(gang.members):
        rules.hold_workflow(workflow_id)
        return []
    else:
        chosen, fit = try_gang(gang, demand, agents, strategy, ctx)
        if chosen:
            rules.started(workflow_id, len(chosen))
            return chosen
        why = gang_reason(gang, fit)
    rules.held += 1
    for member in gang.members:
        rules.held_tasks[member] = why
    return []


MAX_GANG_SIZE = 64  # members per gang: a gang's trial clones the agents and tries every member
MAX_GANGS = 64  # gangs per workflow: admission checks each one against the graph


def gang_problems(tasks: Sequence[Task]) -> list[FieldViolation]:
    """Admission checks of a workflow's gangs (dependencies still as task names).

    A gang is placed only when all its members are ready, so no member may depend, even through
    other tasks, on another member: that gang would wait forever. Limits: ``MAX_GANG_SIZE``
    members per gang, ``MAX_GANGS`` gangs per workflow.
    """
    members: dict[str, list[int]] = {}
    for index, task in enumerate(tasks):
        if task.gang:
            members.setdefault(task.gang, []).append(index)
    problems: list[FieldViolation] = []
    if len(members) > MAX_GANGS:
        first = list(members.values())[MAX_GANGS][0]
        return [FieldViolation(f"tasks[{first}].gang", f"{len(members)} gangs, over the limit of {MAX_GANGS}")]
    by_name = {task.name: index for index, task in enumerate(tasks)}
    for name, indexes in members.items():
        if len(indexes) > MAX_GANG_SIZE:
            problems.append(
                FieldViolation(
                    f"tasks[{indexes[MAX_GANG_SIZE]}].gang",
                    f"gang {name!r} has {len(indexes)} tasks, over the limit of {MAX_GANG_SIZE}",
                )
            )
            continue
        inside = set(indexes)
        # Walk every ancestor of the members once: reaching a member means one depends on another.
        seen: set[int] = set()
        stack = [by_name[d] for i in indexes for d in tasks[i].dependencies]
        while stack:
            current = stack.pop()
            if current in inside:
                problems.append(
                    FieldViolation(
                        f"tasks[{current}].gang",
                        f"gang {name!r}: another task of the gang depends on {tasks[current].name!r}, "
                        "so the gang could never be all ready",
                    )
                )
                break
            if current not in seen:
                seen.add(current)
                stack.extend(by_name[d] for d in tasks[current].dependencies)
    return problems
