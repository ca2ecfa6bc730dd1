"""Property: on random arrivals of (non-)preemptible tasks of random priorities, every preemption
stops only preemptible work of strictly lower base priority, no task is preempted past its cap,
the preempts-graph has no cycle, and the machine's invariants (the reserved room included) hold."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.controller.core import events as ev
from corral.controller.core.model import AttemptState
from corral.controller.core.state import MachineConfig

from .conftest import Sim, task_spec

_ARRIVAL = st.tuples(
    st.sampled_from([10, 20, 30, 50, 80, 100]),  # base priority
    st.booleans(),  # preemptible
    st.integers(min_value=1, max_value=3),  # cpu cores
)
_STEP = st.one_of(
    st.tuples(st.just("submit"), _ARRIVAL),
    st.tuples(st.just("submit"), _ARRIVAL),
    st.tuples(st.just("report"), st.integers(min_value=0, max_value=7)),
    st.tuples(st.just("finish"), st.integers(min_value=0, max_value=7)),
)


def _has_cycle(edges: set[tuple[str, str]]) -> bool:
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    seen: set[str] = set()
    on_path: set[str] = set()

    def visit(node: str) -> bool:
        if node in on_path:
            return True
        if node in seen:
            return False
        seen.add(node)
        on_path.add(node)
        found = any(visit(n) for n in graph.get(node, ()))
        on_path.discard(node)
        return found

    return any(visit(n) for n in list(graph))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_STEP, min_size=12, max_size=40))
def test_preemptions_respect_priorities_caps_and_never_cycle(steps: list[tuple[str, Any]]) -> None:
    sim = Sim(config=MachineConfig(max_preemptions=2))
    sim.hello("a1", cpu=4, slots=4)
    sim.hello("a2", cpu=3, slots=2)
    machine = sim.machine
    cancelled: list[tuple[str, str]] = []  # (agent, attempt) told to stop, not yet reported
    edges: set[tuple[str, str]] = set()
    seen: set[str] = set()
    for n, (kind, arg) in enumerate(steps):
        sim.now += 0.5
        if kind == "submit":
            priority, preemptible, cpu = arg
            _, step = sim.submit(
                [task_spec("t", resources={"cpu_cores": cpu}, priority=priority, preemptible=preemptible)],
                name=f"w{n}",
            )
        elif kind == "report" and cancelled:
            agent_id, attempt_id = cancelled.pop(arg % len(cancelled))
            step = sim.finished(agent_id, attempt_id, AttemptState.CANCELLED)
        elif kind == "finish":
            running = [a for held in machine.active.values() for a in held if a not in {c for _, c in cancelled}]
            if not running:
                continue
            attempt = machine.attempts[sorted(running)[arg % len(running)]]
            step = sim.finished(attempt.agent_id, attempt.id)
        else:
            step = sim.tick()
        for action in step.of(ev.CancelAttempts):
            cancelled.extend((action.agent_id, a) for a in action.attempt_ids)
        plan = machine.last_plan
        for p in plan.preemptions if plan is not None else ():
            if p.attempt_id in seen:
                continue
            seen.add(p.attempt_id)
            victim = machine.tasks[machine.attempts[p.attempt_id].task_id]
            preemptor = machine.tasks[p.for_task_id]
            assert victim.preemptible and victim.priority < preemptor.priority
            assert victim.preemptions < 2  # under its cap when chosen
            edges.add((preemptor.id, victim.id))
        assert all(t.preemptions <= 2 for t in machine.tasks.values())
        assert all(t.retries_used == 0 for t in machine.tasks.values())
        assert not _has_cycle(edges)
        machine.validate()
