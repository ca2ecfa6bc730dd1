"""Issue 10 §7 end to end: delayed starts and cron schedules, with a controller kill -9 in the middle.

The tasks write the ledger: one line per run, ``<wall seconds> <workflow id>``, appended with one
O_APPEND write. It proves what ran and how often, whatever the controller believes.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest

from corral.controller.rpc.wire_spec import spec_to_proto
from corral.controller.spec import parse_workflow
from corral.v1 import orchestrator_pb2, schedules_pb2, schedules_pb2_grpc, types_pb2
from tests.e2e.conftest import RPC_TIMEOUT_S, Api, Cluster, TaskState, WorkflowState, eventually

pytestmark = pytest.mark.e2e
CRON_RUN_S = 180.0  # the acceptance: a per-second schedule over 3 minutes
RESTART_FLAGS = ["--adopt-grace", "3", "--reconnect-grace", "2"]


def _ledger_task(ledger: Path, name: str = "tick", deps: tuple[str, ...] = ()) -> dict[str, Any]:
    line = f'echo "$(date +%s.%N) $CORRAL_WORKFLOW_ID" >> {shlex.quote(str(ledger))}'
    return {"name": name, "payload": {"shell": line}, "dependencies": list(deps)}


def _ledger(ledger: Path) -> list[tuple[float, str]]:
    if not ledger.exists():
        return []
    return [(float(at), workflow_id) for at, workflow_id in (line.split() for line in ledger.read_text().splitlines())]


def _schedules(api: Api) -> schedules_pb2_grpc.SchedulesStub:
    return schedules_pb2_grpc.SchedulesStub(api.channel)


def _spec(workflow: dict[str, Any]) -> types_pb2.WorkflowSpec:
    return spec_to_proto(parse_workflow(workflow))


def _all_workflows(api: Api, prefix: str) -> list[types_pb2.WorkflowStatus]:
    ids: list[str] = []
    token = ""
    while True:
        request = orchestrator_pb2.ListWorkflowsRequest(name_prefix=prefix, limit=1000, page_token=token)
        page = api.orchestrator.ListWorkflows(request, timeout=RPC_TIMEOUT_S)
        ids.extend(w.workflow_id for w in page.workflows)
        token = page.next_page_token
        if not token:
            break
    return [api.status(workflow_id, tasks=True) for workflow_id in ids]


def _seconds(stamp: Any) -> float:
    return stamp.seconds + stamp.nanos / 1e9


def test_a_delayed_start_waits_for_its_time_across_a_controller_restart(cluster: Cluster, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    api = cluster.start({"solo": 2})
    workflow = {
        "name": "later",
        "scheduled_at": "6",
        "tasks": [_ledger_task(ledger), _ledger_task(ledger, "b", ("tick",))],
    }
    request = orchestrator_pb2.SubmitWorkflowRequest(spec=_spec(workflow), start=True)
    workflow_id = api.orchestrator.SubmitWorkflow(request, timeout=RPC_TIMEOUT_S).workflow_id
    status = api.status(workflow_id)
    scheduled_at = _seconds(status.scheduled_at)
    assert scheduled_at > time.time() + 3, "scheduled_at is absolute: submit time + 6 s"
    tick = {t.name: t for t in status.tasks}["tick"]
    assert tick.state == TaskState.PENDING
    assert tick.waiting_reason.startswith("scheduled at "), tick.waiting_reason
    assert api.explain(tick.task_id).reason.startswith("scheduled at "), api.explain(tick.task_id).reason

    cluster.controller.kill9()  # the restarted controller must hold the start back as well
    cluster.controller.start(RESTART_FLAGS)
    api = cluster.api
    restarted = api.status(workflow_id)
    if time.time() < scheduled_at - 0.5:
        # Only checkable when the restart beat the start time (a loaded host may take longer than
        # the 6 s); the ledger below holds the start back in every case.
        assert {t.name: t.state for t in restarted.tasks}["tick"] == TaskState.PENDING
    final = api.wait_done(workflow_id, timeout=40)
    assert final.state == WorkflowState.COMPLETED, final.error
    runs = _ledger(ledger)
    assert [workflow_id] * 2 == [w for _, w in runs], "each task ran exactly once"
    assert min(at for at, _ in runs) >= scheduled_at - 0.05, "a task started before its workflow's scheduled_at"


def test_bad_schedules_and_start_times_are_refused_with_a_field_path(cluster: Cluster) -> None:
    api = cluster.start({})
    schedules = _schedules(api)
    spec = _spec({"name": "tpl", "tasks": [{"name": "a", "payload": {"shell": "true"}}]})
    cases = [
        (schedules_pb2.CreateScheduleRequest(spec=spec, cron="61 * * * *"), "cron"),
        (schedules_pb2.CreateScheduleRequest(spec=spec, cron="* * *"), "cron"),
        (schedules_pb2.CreateScheduleRequest(spec=spec, cron="* * * * *", timezone="Mars/Base"), "timezone"),
        (schedules_pb2.CreateScheduleRequest(spec=spec, cron="* * * * *", overlap="queue"), "overlap"),
        (schedules_pb2.CreateScheduleRequest(spec=spec, cron="* * * * *", catchup=-1), "catchup"),
        (schedules_pb2.CreateScheduleRequest(cron="* * * * *"), "spec"),
    ]
    bad_task = types_pb2.WorkflowSpec(
        name="tpl", tasks=[types_pb2.TaskSpec(name="a", agent_type="shell", timeout_s=-1)]
    )
    cases.append((schedules_pb2.CreateScheduleRequest(spec=bad_task, cron="* * * * *"), "spec.tasks[0]"))
    for request, field in cases:
        with pytest.raises(grpc.RpcError) as raised:
            schedules.CreateSchedule(request, timeout=RPC_TIMEOUT_S)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
        assert field in (raised.value.details() or ""), (field, raised.value.details())
    assert list(schedules.ListSchedules(schedules_pb2.ListSchedulesRequest(), timeout=RPC_TIMEOUT_S).schedules) == []
    late = _spec({"name": "w", "tasks": [{"name": "a", "payload": {"shell": "true"}}]})
    late.scheduled_at = "next tuesday"
    with pytest.raises(grpc.RpcError) as raised:
        api.orchestrator.SubmitWorkflow(orchestrator_pb2.SubmitWorkflowRequest(spec=late), timeout=RPC_TIMEOUT_S)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.scheduled_at" in (raised.value.details() or "")
    listed = api.orchestrator.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(), timeout=RPC_TIMEOUT_S)
    assert list(listed.workflows) == [], "nothing was stored"


def test_schedule_pause_resume_delete(cluster: Cluster, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    api = cluster.start({"solo": 2})
    schedules = _schedules(api)
    spec = _spec({"name": "pulse", "tasks": [_ledger_task(ledger)]})
    info = schedules.CreateSchedule(
        schedules_pb2.CreateScheduleRequest(spec=spec, cron="* * * * * *", overlap="allow"), timeout=RPC_TIMEOUT_S
    )
    assert info.name == "pulse" and info.timezone == "UTC" and info.catchup == 1 and info.HasField("next_fire")
    eventually(lambda: len(_ledger(ledger)) >= 2, 15, "two fires")
    paused = schedules.PauseSchedule(schedules_pb2.ScheduleRef(schedule="pulse"), timeout=RPC_TIMEOUT_S)
    assert paused.paused and not paused.HasField("next_fire")
    fired = paused.fired

    def settled() -> bool:  # every workflow the schedule fired has finished
        return all(w.state in WorkflowState.TERMINAL for w in _all_workflows(api, "pulse"))

    eventually(settled, 20, "the fired workflows to finish")
    seen = len(_ledger(ledger))
    assert seen == fired, "every fire before the pause ran once"
    paused_at = time.time()
    # Let a few cron seconds pass paused (this waits for time, not for nothing to happen: the
    # check below reads the schedule's own record of its fires).
    eventually(lambda: time.time() >= paused_at + 2.5, 5, "time to pass")
    resumed = schedules.ResumeSchedule(schedules_pb2.ScheduleRef(schedule=info.schedule_id[:8]), timeout=RPC_TIMEOUT_S)
    resumed_at = time.time()
    assert not resumed.paused and resumed.fired == fired, "nothing fired while paused"
    eventually(lambda: len(_ledger(ledger)) >= seen + 2, 15, "fires after the resume")
    schedules.PauseSchedule(schedules_pb2.ScheduleRef(schedule="pulse"), timeout=RPC_TIMEOUT_S)
    eventually(settled, 20, "the fired workflows to finish")
    listed = schedules.ListSchedules(schedules_pb2.ListSchedulesRequest(), timeout=RPC_TIMEOUT_S).schedules
    assert [s.name for s in listed] == ["pulse"] and listed[0].recent_fires
    fires = listed[0].recent_fires
    assert all(f.outcome == "fired" and not f.late for f in fires)
    assert not [f for f in fires if paused_at < _seconds(f.nominal) <= resumed_at], "a fire while paused"
    assert len(_ledger(ledger)) == listed[0].fired, "each fire ran once"
    schedules.DeleteSchedule(schedules_pb2.ScheduleRef(schedule="pulse"), timeout=RPC_TIMEOUT_S)
    assert list(schedules.ListSchedules(schedules_pb2.ListSchedulesRequest(), timeout=RPC_TIMEOUT_S).schedules) == []


class _StallWatch:
    """Notes the spans in which this host ran nothing for a while (a thread that wakes every
    0.1 s and finds much more time passed). A host frozen or starved for seconds makes fire
    times late through no fault of the controller; such spans are judged like the downtime:
    their fires must all be there, flagged late when made over 1 s after their time."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = time.time()
        while not self._stop.wait(0.1):
            now = time.time()
            if now - last > 0.6:
                self.spans.append((last, now))
            last = now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def covers(self, at: float) -> bool:
        return any(start - 1.0 <= at <= end for start, end in self.spans)


@pytest.mark.timeout(CRON_RUN_S + 240)
@pytest.mark.chaos  # three minutes of wall time: make chaos runs it, make test does not
def test_a_per_second_schedule_over_three_minutes_survives_kill9(cluster: Cluster, tmp_path: Path) -> None:
    """The acceptance: fires within 1 s of their time, none twice, none missed, across a kill -9."""
    ledger = tmp_path / "ledger"
    api = cluster.start({"solo": 4})
    spec = _spec({"name": "every-second", "tasks": [_ledger_task(ledger)]})
    # A catch-up window far wider than the downtime: every missed fire must come back.
    request = schedules_pb2.CreateScheduleRequest(spec=spec, cron="*/1 * * * * *", overlap="allow", catchup=1000)
    created = _schedules(api).CreateSchedule(request, timeout=RPC_TIMEOUT_S)
    began = time.time()
    stalls = _StallWatch()

    eventually(lambda: time.time() - began >= CRON_RUN_S / 2, CRON_RUN_S, "half of the run", interval=1.0)
    cluster.controller.kill9()
    killed_at = time.time()
    eventually(lambda: time.time() - killed_at >= 3, 10, "a few fire times to pass while down")
    cluster.controller.start(RESTART_FLAGS)
    restarted_at = time.time()
    api = cluster.api
    api.wait_agents(["solo"])
    agent_back = time.time()  # tasks fired before this wait for the agent, not for the schedule
    eventually(lambda: time.time() - began >= CRON_RUN_S, CRON_RUN_S, "the end of the run", interval=1.0)
    paused = _schedules(api).PauseSchedule(
        schedules_pb2.ScheduleRef(schedule=created.schedule_id), timeout=RPC_TIMEOUT_S
    )
    stalls.stop()

    def finished() -> list[types_pb2.WorkflowStatus] | None:
        found = _all_workflows(api, "every-second")
        return found if found and all(w.state in WorkflowState.TERMINAL for w in found) else None

    workflows = eventually(finished, 60, "every fired workflow to finish", interval=1.0)
    assert all(w.state == WorkflowState.COMPLETED for w in workflows), [w.error for w in workflows if w.error]
    assert all(w.schedule_id == created.schedule_id for w in workflows)
    nominal = sorted(_seconds(w.scheduled_at) for w in workflows)

    # No double fire: one workflow per nominal second, and the ledger shows each ran once.
    assert len(set(nominal)) == len(nominal), "a nominal time fired twice"
    runs = Counter(workflow_id for _, workflow_id in _ledger(ledger))
    assert set(runs) == {w.workflow_id for w in workflows}
    assert set(runs.values()) == {1}, f"ran more than once: {[w for w, n in runs.items() if n > 1]}"
    # No missed fire: every second from the first to the last fire (the pause stops it) is there.
    assert nominal == [nominal[0] + i for i in range(len(nominal))], "a nominal second is missing"
    assert nominal[0] - began <= 1.0 + 1e-3
    assert len(nominal) == paused.fired >= CRON_RUN_S - 5
    # Fire times: within 1 s of the nominal time, except those that fell in the downtime (or in a
    # span where this host ran nothing), which ran on return: flagged late when over 1 s.
    late_ids, excused = set(), set()
    for w in workflows:
        at, fired = _seconds(w.scheduled_at), _seconds(w.created_at)
        if killed_at - 1.0 <= at <= restarted_at or stalls.covers(at):
            excused.add(w.workflow_id)
            if fired - at > 1.0:
                late_ids.add(w.workflow_id)
            continue
        assert 0.0 <= fired - at <= 1.0, f"fire of {at:.0f} made {fired - at:.3f} s after its time"
    assert len(late_ids) >= 2, "the downtime's fires ran late on return"
    for workflow_id in late_ids:
        events = api.orchestrator.GetWorkflowEvents(
            orchestrator_pb2.GetWorkflowEventsRequest(workflow_id=workflow_id), timeout=RPC_TIMEOUT_S
        ).events
        assert any(e.kind == "fired" and "late by" in e.reason for e in events), workflow_id
    # And the tasks really ran then: each on-time fire's task within 3 s (3x slack) of its time,
    # once the agent was back after the restart.
    ran = {workflow_id: at for at, workflow_id in _ledger(ledger)}
    for w in workflows:
        at = _seconds(w.scheduled_at)
        if w.workflow_id not in excused and not killed_at - 1.0 <= at <= agent_back:
            assert ran[w.workflow_id] - at <= 3.0, f"the fire of {at:.0f} ran {ran[w.workflow_id] - at:.3f} s late"
    delays = sorted(
        (_seconds(w.created_at) - _seconds(w.scheduled_at), _seconds(w.scheduled_at) - restarted_at)
        for w in workflows
        if w.workflow_id not in excused
    )
    worst = ", ".join(f"{d * 1000:.0f} ms at restart{t:+.0f}s" for d, t in delays[-3:])
    median = delays[len(delays) // 2][0]
    stalled = ", ".join(f"{end - start:.1f}s" for start, end in stalls.spans) or "none"
    print(
        f"\n{len(nominal)} fires, {len(late_ids)} late after the restart or a stall; "
        f"on time: median {median * 1000:.0f} ms, worst {worst}; host stalls: {stalled}"
    )
