"""End to end: a high-priority task preempts a preemptible low-priority one on a full agent; the
victim gets SIGTERM (then SIGKILL after the kill grace), is requeued without spending a retry, and
runs again; meanwhile explain says who preempts whom."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Cluster, TaskState, WorkflowState, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


def test_preempted_victim_is_requeued_without_spending_a_retry(cluster: Cluster) -> None:
    api = cluster.start({"alpha": 1}, controller_flags=["--kill-grace", "3"])
    low = api.submit(
        {
            "name": "low",
            "tasks": [
                {
                    "name": "long",
                    "priority": 10,
                    "preemptible": True,
                    "retries": 2,
                    # Ignores SIGTERM: it holds its slot for the whole kill grace, so explain can be asked.
                    "payload": {"shell": "trap '' TERM; sleep 60"},
                }
            ],
        }
    )
    eventually(lambda: api.tasks(low)["long"].state == TaskState.RUNNING, 30, "the low task to run")
    high = api.submit({"name": "high", "tasks": [{"name": "urgent", "priority": 100, "payload": {"shell": "true"}}]})
    # The victim ignores SIGTERM, so it holds the room for the whole 3 s grace: the preemptor waits.
    urgent = api.tasks(high)["urgent"]
    assert urgent.state == TaskState.READY, urgent
    preemptor = api.explain(urgent.task_id)
    assert preemptor.preemption.startswith("preempting 1 tasks on agent alpha"), preemptor
    assert preemptor.reason.startswith("preempting 1 tasks"), preemptor
    victim = api.explain(api.tasks(low)["long"].task_id)
    assert victim.preemption.startswith("preempted by urgent (priority 100)"), victim
    assert api.wait_done(high, 30).state == WorkflowState.COMPLETED
    victim = api.tasks(low)["long"]
    assert victim.preemptions == 1, victim
    assert victim.retries_used == 0 and victim.agent_losses == 0, victim
    assert victim.last_preemption.startswith("preempted by urgent (priority 100)"), victim
    # Requeued, not failed: it runs again on the agent once the preemptor is done.
    eventually(lambda: api.tasks(low)["long"].state == TaskState.RUNNING, 30, "the victim to run again")
    assert api.tasks(low)["long"].attempts == 2
    api.cancel(low, force=True)
