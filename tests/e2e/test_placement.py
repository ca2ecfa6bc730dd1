"""End to end: placement preferences (issue 9) with real agents — spread, label expressions, and
``explain`` reporting what the scheduler's last pass decided."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, TaskState, WorkflowState, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def _sleeper(name: str, **fields: Any) -> dict[str, Any]:
    # Long enough that all four run at once; a quarter core so one agent fits all four (agents
    # offer the host's cores, and a test host may have only two).
    return {"name": name, "payload": {"command": ["sleep", "1"]}, "resources": {"cpu_cores": 0.25}, **fields}


def _agents_by_task(cluster: Cluster, workflow_id: str) -> Counter[str]:
    names = {a.agent_id: a.name for a in cluster.api.agents()}
    status = cluster.api.wait_done(workflow_id, timeout=30)
    assert status.state == WorkflowState.COMPLETED, status
    return Counter(names[t.agent_id] for t in status.tasks)


def test_spread_places_a_workflow_across_two_agents(cluster: Cluster) -> None:
    cluster.start_controller()
    cluster.start_agent("alpha", slots=4, flags=["--label", "zone=a"])
    cluster.start_agent("beta", slots=4, flags=["--label", "zone=b"])
    api = cluster.api
    api.wait_agents(["alpha", "beta"])

    # Without spread the default bin-packing fills one agent: the control that makes the test honest.
    packed = api.submit({"name": "packed", "tasks": [_sleeper(f"p{i}") for i in range(4)]})
    assert sorted(_agents_by_task(cluster, packed).values()) == [4]

    spread = api.submit({"name": "spread", "tasks": [_sleeper(f"s{i}", spread="zone") for i in range(4)]})
    assert _agents_by_task(cluster, spread) == {"alpha": 2, "beta": 2}

    per_agent = api.submit({"name": "per-agent", "tasks": [_sleeper(f"a{i}", spread="agent") for i in range(2)]})
    assert _agents_by_task(cluster, per_agent) == {"alpha": 1, "beta": 1}


def test_label_expressions_and_explain_of_the_last_pass(cluster: Cluster) -> None:
    cluster.start_controller()
    cluster.start_agent("alpha", slots=2, flags=["--label", "zone=a"])
    cluster.start_agent("beta", slots=2, flags=["--label", "zone=b", "--label", "gpu=t4"])
    api = cluster.api
    api.wait_agents(["alpha", "beta"])

    placed = api.submit(
        {
            "name": "placed",
            "tasks": [
                {"name": "in-b", "payload": {"shell": "true"}, "constraints": {"zone": {"in": ["b", "c"]}}},
                {"name": "no-gpu", "payload": {"shell": "true"}, "constraints": {"gpu": {"exists": False}}},
            ],
        }
    )
    assert _agents_by_task(cluster, placed) == {"beta": 1, "alpha": 1}
    tasks = api.tasks(placed)
    names = {a.agent_id: a.name for a in api.agents()}
    assert names[tasks["in-b"].agent_id] == "beta" and names[tasks["no-gpu"].agent_id] == "alpha"

    stuck = api.submit(
        {
            "name": "stuck",
            "tasks": [
                {"name": "nowhere", "payload": {"shell": "true"}, "constraints": {"zone": {"not_in": ["a", "b"]}}}
            ],
        }
    )

    def recorded() -> Any:
        task = api.tasks(stuck)["nowhere"]
        return task if task.plan_reason else None

    task = eventually(recorded, 10, "a scheduling pass to record why the task waits")
    assert task.state == TaskState.READY and task.unschedulable
    assert task.plan_reason == "no agent matches label zone not_in (a, b)"
    why = api.explain(task.task_id)
    assert why.last_plan_reason == task.plan_reason == why.reason  # the pass and a fresh look agree
    assert why.demand_class.startswith("shell ") and "zone not_in (a, b)" in why.demand_class
    assert why.last_plan_age_s >= 0.0
    assert {v.agent_name: v.reason for v in why.agents} == {
        "alpha": "label zone not_in (a, b) required, agent has zone=a",
        "beta": "label zone not_in (a, b) required, agent has zone=b",
    }
