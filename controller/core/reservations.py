"""Reservations: a big task that has waited too long reserves the agent expected to free room first.

Without them, a task needing a whole agent can starve behind a stream of small tasks, each of
which fits in the room any ending attempt leaves. A READY task that has waited ``reserve_after_s``
and fit nowhere in a pass reserves, among the agents whose *capacity* can hold it, the one whose
running attempts are expected to leave enough room first (their start plus expected durations:
the estimate, else the learned duration, else the recent average run time). While reserved, the
pass treats that much of the agent as taken: other tasks may not be placed into the room, only
the reserving task (which may still start anywhere else that fits first).

A reservation ends when its task starts or leaves READY, and expires unused at ``expires_at`` =
now + ``reservation_expiry_factor`` x the expected wait (at least ``reserve_after_s``); an expired
one is not renewed for that task before another ``reserve_after_s``. At most
``max_reservations`` exist at once. Memory only: a restarted controller rebuilds them as tasks
wait again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral.controller.core.model import Resources, TaskState
from corral.controller.core.placement import FILTERS, AgentView, Demand

if TYPE_CHECKING:
    from corral.controller.core.scheduling import Plan
    from corral.controller.core.state import MachineState

__all__ = ["Reservation", "Reservations", "after_pass", "hold", "pick_agent", "stuck_test", "sweep"]


@dataclass(frozen=True, slots=True)
class Reservation:
    """``task_id`` holds ``resources`` (and one slot) of ``agent_id`` until it starts or ``expires_at``."""

    task_id: str
    agent_id: str
    resources: Resources
    made_at: float
    expires_at: float

    def describe(self, agent_name: str, now: float) -> str:
        """The reservation in words (explain, the plan's reason for the task)."""
        return (
            f"reserved agent {agent_name} (the first expected to free enough room); "
            f"the reservation expires in {max(0.0, self.expires_at - now):.0f}s if unused"
        )


class Reservations:
    """Every live reservation, by agent and by task (memory only)."""

    def __init__(self) -> None:
        self.by_agent: dict[str, Reservation] = {}
        self.by_task: dict[str, Reservation] = {}
        self.not_before: dict[str, float] = {}  # task id -> no new reservation before (after one expired)

    def __bool__(self) -> bool:
        return bool(self.by_agent)

    def add(self, reservation: Reservation) -> None:
        self.by_agent[reservation.agent_id] = reservation
        self.by_task[reservation.task_id] = reservation

    def drop(self, reservation: Reservation) -> None:
        self.by_agent.pop(reservation.agent_id, None)
        self.by_task.pop(reservation.task_id, None)

    def sweep(self, now: float, waiting: Callable[[str], bool], cooldown: float) -> list[tuple[Reservation, str]]:
        """Drop reservations whose task started or left (``waiting`` False) or that expired."""
        ended: list[tuple[Reservation, str]] = []
        for reservation in list(self.by_agent.values()):
            if not waiting(reservation.task_id):
                self.drop(reservation)
                ended.append((reservation, "its task started or left the queue"))
            elif reservation.expires_at <= now:
                self.drop(reservation)
                self.not_before[reservation.task_id] = now + cooldown
                ended.append((reservation, "expired unused"))
        return ended


def hold(agent: AgentView, reservation: Reservation) -> tuple[Resources, tuple[int, ...]]:
    """Take a reservation's room on a pass's clone of its agent (GPUs: as many as are free); what
    was taken, to give back (``AgentView.release``) when the reserving task itself comes up."""
    req = reservation.resources
    if req.gpu_count > len(agent.free_gpu_ids):
        req = dataclasses.replace(req, gpu_count=len(agent.free_gpu_ids))
    return req, agent.allocate(req)


def pick_agent(
    demand: Demand,
    agents: Iterable[AgentView],
    ends: Callable[[str], list[tuple[float, Resources]]],
    now: float,
) -> tuple[str, float] | None:
    """The agent whose room for ``demand`` is expected first, and when; None if none can ever hold it.

    ``ends(agent_id)`` lists its active attempts' expected end times and what they hold.
    """
    best: tuple[float, str] | None = None
    static = [f for f in FILTERS if f.static]
    for agent in agents:
        if not all(f.passes(demand, agent) for f in static):
            continue
        free = agent.free()
        at = now
        if demand.resources.shortfall(free):
            for end, held in sorted(ends(agent.id), key=lambda e: e[0]):
                free = free + held
                at = max(now, end)
                if not demand.resources.shortfall(free):
                    break
            else:
                continue
        if best is None or (at, agent.id) < best:
            best = (at, agent.id)
    return None if best is None else (best[1], best[0])


def after_pass(state: MachineState, plan: Plan, now: float) -> None:
    """Reserve for the pass's stuck task (if any) and note every live reservation in the plan."""
    config = state.config
    book = state.reservations
    if len(book.not_before) > 1024:  # bounded: drop the pauses that are over
        book.not_before = {t: at for t, at in book.not_before.items() if at > now}
    if plan.stuck and plan.stuck not in book.by_task and len(book.by_agent) < config.max_reservations:
        task = state.tasks[plan.stuck]
        taken = {r.agent_id for r in book.by_agent.values()}
        agents = [v for v in state.views.values() if v.id not in taken]
        # Only when room is fragmented (some agent takes work, but not this big): a cluster whose
        # slots are all busy needs no reservation, the task just waits its turn.
        fragmented = any(v.has_room() for v in agents)
        picked = pick_agent(state.demand(task), agents, lambda a: _ends(state, a, now), now) if fragmented else None
        if picked is None:
            # Nothing to reserve now (no agent could ever hold it, or room is not fragmented): do
            # not look again for a while, so other waiting tasks get their turn as the pass's pick.
            book.not_before[task.id] = now + config.reserve_after_s
        else:
            agent_id, free_at = picked
            wait = max(free_at - now, config.reserve_after_s)
            reservation = Reservation(
                task.id, agent_id, task.resources, now, now + config.reservation_expiry_factor * wait
            )
            book.add(reservation)
            workflow = state.workflows[task.workflow_id]
            why = f"waited {now - (task.ready_at or now):.0f}s; expected free in {free_at - now:.0f}s"
            message = f"reserved agent {agent_id}"
            state.record(workflow, now, "reserved", task, message=message, reason=why, agent_id=agent_id)
    for reservation in book.by_agent.values():
        agent = state.agents.get(reservation.agent_id)
        plan.held_tasks.setdefault(reservation.task_id, reservation.describe(agent.name if agent else "?", now))


def sweep(state: MachineState, now: float) -> None:
    """End reservations whose task started or left, or that expired (logged)."""
    tasks = state.tasks

    def waiting(task_id: str) -> bool:
        task = tasks.get(task_id)
        return task is not None and task.state is TaskState.READY

    for reservation, why in state.reservations.sweep(now, waiting, state.config.reserve_after_s):
        task = tasks.get(reservation.task_id)
        if task is not None and task.state is TaskState.READY:
            workflow = state.workflows[task.workflow_id]
            message = f"reservation of agent {reservation.agent_id} {why}"
            state.record(workflow, now, "reservation_ended", task, message=message, agent_id=reservation.agent_id)


def stuck_test(state: MachineState, now: float) -> Callable[[str], bool] | None:
    """The pass's test for a task that should reserve (None: reservations are off)."""
    after = state.config.reserve_after_s
    if after <= 0:
        return None
    tasks, book = state.tasks, state.reservations

    def stuck(task_id: str) -> bool:
        task = tasks[task_id]
        ready = task.ready_at
        if ready is None or now - ready < after or task_id in book.by_task:
            return False
        return book.not_before.get(task_id, 0.0) <= now

    return stuck


def _ends(state: MachineState, agent_id: str, now: float) -> list[tuple[float, Resources]]:
    """Expected end time and resources of each active attempt on the agent."""
    out: list[tuple[float, Resources]] = []
    own_seconds = state.ordering.own_seconds
    fallback = state.run_seconds or 60.0
    for attempt_id in state.active.get(agent_id, ()):
        attempt = state.attempts[attempt_id]
        task = state.tasks[attempt.task_id]
        seconds = own_seconds(task, state.workflows[task.workflow_id].name)
        start = attempt.started_at if attempt.started_at is not None else attempt.assigned_at
        out.append((start + (seconds or state.workflow_seconds.get(task.workflow_id) or fallback), attempt.resources))
    return out
