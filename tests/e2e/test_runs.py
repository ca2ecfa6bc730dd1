"""End to end (issue 10): retry from failure, rerun, the list of runs and ``on_failure: pause``.

Every task appends ``<task name> <attempt id>`` to a ledger file when it starts its work, so the
ledger counts how often each task really ran, whatever the controller believes. The ``restart``
variants ``kill -9`` the controller in the middle of the new run and restart it on the same store.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest

from corral.v1 import orchestrator_pb2, types_pb2
from tests.e2e.conftest import RPC_TIMEOUT_S, Api, Cluster, TaskState, WorkflowState, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

RESTART_FLAGS = ["--adopt-grace", "3", "--reconnect-grace", "2"]


def _ledger(path: Path) -> Counter[str]:
    """Task name -> how many times it started its work."""
    if not path.exists():
        return Counter()
    return Counter(line.split()[0] for line in path.read_text().splitlines() if line.strip())


def _task(name: str, deps: list[str], ledger: Path, *, flag: Path | None = None, sleep: float = 0.0) -> dict[str, Any]:
    """A shell task that records itself in the ledger, optionally works, and (with ``flag``) fails
    unless the flag file exists."""
    script = f"echo $CORRAL_TASK_NAME $CORRAL_ATTEMPT_ID >> {ledger}"
    if sleep:
        script += f"; sleep {sleep}"
    if flag is not None:
        script += f"; test -f {flag} || {{ echo 'flag missing' >&2; exit 3; }}"
    script += f"; echo '\"{name}\"'"
    return {"name": name, "agent_type": "shell", "dependencies": deps, "payload": {"shell": script}}


def _six(ledger: Path, flag: Path, **workflow: Any) -> dict[str, Any]:
    """t1 -> (t2, t3) -> t4 -> (t5, t6); t4 fails until the flag file exists; t5 works 2 s (the
    restart variants kill the controller while it runs)."""
    tasks = [
        _task("t1", [], ledger),
        _task("t2", ["t1"], ledger),
        _task("t3", ["t1"], ledger),
        _task("t4", ["t2", "t3"], ledger, flag=flag),
        _task("t5", ["t4"], ledger, sleep=2.0),
        _task("t6", ["t4"], ledger),
    ]
    return {"name": "six", "tasks": tasks, **workflow}


def _retry(api: Api, workflow_id: str, from_task: str = "") -> types_pb2.WorkflowStatus:
    request = orchestrator_pb2.RetryWorkflowRequest(workflow_id=workflow_id, from_task=from_task)
    return api.orchestrator.RetryWorkflow(request, timeout=RPC_TIMEOUT_S).status


def _runs(api: Api, workflow_id: str) -> list[orchestrator_pb2.RunInfo]:
    request = orchestrator_pb2.ListRunsRequest(workflow_id=workflow_id)
    return list(api.orchestrator.ListRuns(request, timeout=RPC_TIMEOUT_S).runs)


def _kill_while_running(cluster: Cluster, workflow_id: str, task: str) -> Api:
    """``kill -9`` the controller once ``task`` runs, restart it on the same store; the new API."""
    api = cluster.api

    def running() -> bool:
        return api.tasks(workflow_id)[task].state == TaskState.RUNNING

    eventually(running, 30, f"{task} to run")
    cluster.controller.kill9()
    cluster.controller.start(RESTART_FLAGS)
    return cluster.api


@pytest.mark.parametrize("restart", [False, pytest.param(True, marks=pytest.mark.chaos)], ids=["plain", "restart"])
def test_retry_reruns_only_the_failed_and_skipped_tasks(cluster: Cluster, tmp_path: Path, restart: bool) -> None:
    ledger, flag = tmp_path / "ledger", tmp_path / "flag"
    api = cluster.start({"alpha": 2})
    workflow_id = api.submit(_six(ledger, flag))
    failed = api.wait_done(workflow_id, timeout=30)
    assert failed.state == WorkflowState.FAILED
    states = {t.name: t.state for t in failed.tasks}
    assert states["t4"] == TaskState.FAILED
    assert states["t5"] == states["t6"] == TaskState.SKIPPED
    assert _ledger(ledger) == {"t1": 1, "t2": 1, "t3": 1, "t4": 1}

    flag.touch()  # the operator fixes the cause
    again = _retry(api, workflow_id)
    assert again.run == 2
    assert again.state == WorkflowState.RUNNING
    if restart:
        api = _kill_while_running(cluster, workflow_id, "t5")
    done = api.wait_done(workflow_id, timeout=60)
    assert done.state == WorkflowState.COMPLETED, done.error
    assert done.run == 2
    # Tasks 1-3 ran once; 4-6 once more (t4 twice in all, its failure and its success).
    assert _ledger(ledger) == {"t1": 1, "t2": 1, "t3": 1, "t4": 2, "t5": 1, "t6": 1}
    by_name = {t.name: t for t in done.tasks}
    assert by_name["t1"].attempts == 1 and by_name["t4"].attempts == 2

    runs = _runs(api, workflow_id)
    assert [(r.number, r.kind, r.state) for r in runs] == [
        (1, "submit", WorkflowState.FAILED),
        (2, "retry", WorkflowState.COMPLETED),
    ]
    assert runs[0].failed_attempts == 1 and set(runs[1].tasks_run) == {"t4", "t5", "t6"}


@pytest.mark.parametrize("restart", [False, pytest.param(True, marks=pytest.mark.chaos)], ids=["plain", "restart"])
def test_retry_from_a_task_and_rerun(cluster: Cluster, tmp_path: Path, restart: bool) -> None:
    ledger, flag = tmp_path / "ledger", tmp_path / "flag"
    api = cluster.start({"alpha": 2})
    workflow_id = api.submit(_six(ledger, flag))
    assert api.wait_done(workflow_id, timeout=30).state == WorkflowState.FAILED
    flag.touch()

    # --from t2: it and its descendants (t4, t5, t6) run again; t1 and t3 keep their results.
    assert _retry(api, workflow_id, from_task="t2").run == 2
    if restart:
        api = _kill_while_running(cluster, workflow_id, "t5")
    assert api.wait_done(workflow_id, timeout=60).state == WorkflowState.COMPLETED
    assert _ledger(ledger) == {"t1": 1, "t2": 2, "t3": 1, "t4": 2, "t5": 1, "t6": 1}
    with pytest.raises(grpc.RpcError) as refused:
        _retry(api, workflow_id)  # completed: nothing to retry (rerun runs it all again)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    # rerun: everything again, with the same inputs.
    rerun = api.orchestrator.RerunWorkflow(
        orchestrator_pb2.RerunWorkflowRequest(workflow_id=workflow_id), timeout=RPC_TIMEOUT_S
    ).status
    assert rerun.run == 3
    if restart:
        api = _kill_while_running(cluster, workflow_id, "t5")
    final = api.wait_done(workflow_id, timeout=60)
    assert final.state == WorkflowState.COMPLETED
    assert _ledger(ledger) == {"t1": 2, "t2": 3, "t3": 2, "t4": 3, "t5": 2, "t6": 2}
    assert [(r.kind, r.from_task) for r in _runs(api, workflow_id)] == [("submit", ""), ("retry", "t2"), ("rerun", "")]


@pytest.mark.parametrize("restart", [False, pytest.param(True, marks=pytest.mark.chaos)], ids=["plain", "restart"])
def test_on_failure_pause_waits_for_the_operator_then_retry_completes(
    cluster: Cluster, tmp_path: Path, restart: bool
) -> None:
    ledger, flag = tmp_path / "ledger", tmp_path / "flag"
    api = cluster.start({"alpha": 2})
    workflow_id = api.submit(_six(ledger, flag, on_failure="pause"))

    def paused() -> types_pb2.WorkflowStatus | None:
        status = api.status(workflow_id)
        return status if status.state == WorkflowState.PAUSED else None

    status = eventually(paused, 30, "the workflow to pause on t4's failure")
    states = {t.name: t.state for t in status.tasks}
    assert states["t4"] == TaskState.FAILED
    assert states["t5"] == states["t6"] == TaskState.PENDING  # held, not skipped
    if restart:  # paused on failure survives a crash
        cluster.controller.kill9()
        cluster.controller.start(RESTART_FLAGS)
        api = cluster.api
        assert eventually(paused, 30, "the restarted controller to answer").state == WorkflowState.PAUSED
    assert _ledger(ledger) == {"t1": 1, "t2": 1, "t3": 1, "t4": 1}
    t5 = api.explain(api.tasks(workflow_id)["t5"].task_id)
    assert t5.on_failure_note.startswith("workflow paused on a failure")
    assert "corral retry" in t5.reason

    flag.touch()
    assert _retry(api, workflow_id).run == 2
    if restart:
        api = _kill_while_running(cluster, workflow_id, "t5")
    done = api.wait_done(workflow_id, timeout=60)
    assert done.state == WorkflowState.COMPLETED, done.error
    assert _ledger(ledger) == {"t1": 1, "t2": 1, "t3": 1, "t4": 2, "t5": 1, "t6": 1}


def test_retry_refuses_a_running_workflow_and_an_unknown_task(cluster: Cluster, tmp_path: Path) -> None:
    ledger, flag = tmp_path / "ledger", tmp_path / "flag"
    api = cluster.start({"alpha": 1})
    spec = _six(ledger, flag)
    spec["tasks"][0] = _task("t1", [], ledger, sleep=30.0)
    workflow_id = api.submit(spec)
    with pytest.raises(grpc.RpcError) as running:
        _retry(api, workflow_id)
    assert running.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    api.cancel(workflow_id, force=True)
    api.wait_done(workflow_id, timeout=30)
    with pytest.raises(grpc.RpcError) as unknown:
        _retry(api, workflow_id, from_task="nope")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as bad:
        _retry(api, workflow_id, from_task="x" * 5000)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "from_task" in (bad.value.details() or "")
    assert api.status(workflow_id).run == 1  # nothing changed
