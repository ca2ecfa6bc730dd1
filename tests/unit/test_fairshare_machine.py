"""Fair share through the state machine: namespaces of equal weight share a saturated cluster."""

from __future__ import annotations

from collections.abc import Callable

from corral.controller.core import events as ev
from corral.controller.core import requests as rq
from corral.controller.core.fairshare import fair_for
from corral.controller.core.model import TaskState as T
from tests.unit.conftest import Sim, task_spec


def _running_per_namespace(sim: Sim) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in sim.machine.tasks.values():
        if task.state in (T.ASSIGNED, T.RUNNING):
            counts[task.namespace] = counts.get(task.namespace, 0) + 1
    return counts


def _submit_in(sim: Sim, namespace: str, n: int, priority: int) -> str:
    tasks = [task_spec(f"{namespace}{i}", priority=priority) for i in range(n)]
    workflow_id, _ = sim.submit(tasks, name=namespace, start=False, namespace=namespace)
    return workflow_id


def test_equal_weights_get_equal_dominant_shares_within_one_task(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim()
    for name in ("a", "b"):
        sim.do(rq.CreateNamespaceRequest(name))
    # a is submitted first and with the highest priority: plain queue order would give it all.
    wf_a = _submit_in(sim, "a", 20, priority=100)
    wf_b = _submit_in(sim, "b", 20, priority=0)
    sim.do(ev.StartWorkflow(wf_a))
    sim.do(ev.StartWorkflow(wf_b))
    sim.hello("x", slots=3)
    sim.hello("y", slots=3)
    seen = 0
    for i in range(40):
        counts = _running_per_namespace(sim)
        ready = {t.namespace for t in sim.machine.tasks.values() if t.state is T.READY}
        if ready != {"a", "b"}:
            break  # one namespace ran out of work: the other may take the rest
        assert sum(counts.values()) == 6  # saturated
        # 6 slots, each task 1/6 of the slots: equal shares within one task.
        assert abs(counts.get("a", 0) - counts.get("b", 0)) <= 1, counts
        m = sim.machine
        fair = fair_for(m.access.namespaces, m.views.values(), m.active, m.attempts, m.tasks)
        assert fair is not None
        assert abs(fair.dominant("a") - fair.dominant("b")) <= 1 / 6 + 1e-9
        seen += 1
        # Finish a task of each namespace in turn, so both keep ready work for long.
        running = next(
            t
            for t in sim.machine.tasks.values()
            if t.state in (T.ASSIGNED, T.RUNNING) and t.current_attempt_id and t.namespace == "ab"[i % 2]
        )
        assert running.agent_id is not None and running.current_attempt_id is not None
        sim.started(running.agent_id, running.current_attempt_id)
        sim.finished(running.agent_id, running.current_attempt_id)
    assert seen >= 25


def test_pulled_work_respects_the_namespace_quota(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim()
    sim.do(rq.CreateNamespaceRequest("team"))
    sim.do(rq.SetNamespaceQuotaRequest("team", max_running=1))
    tasks = [{"name": f"p{i}", "agent_type": "ext", "payload": {"job": i}} for i in range(2)]
    workflow_id, _ = sim.submit(tasks, name="pulled", start=False, namespace="team")
    sim.do(ev.StartWorkflow(workflow_id))
    first = sim.do(ev.PullTask("w1", ("ext",))).result
    assert first is not None
    assert sim.do(ev.PullTask("w2", ("ext",))).result is None  # the quota of 1 running task
    sim.finished("w1", first.attempt_id)
    assert sim.do(ev.PullTask("w2", ("ext",))).result is not None
