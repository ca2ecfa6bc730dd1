"""End to end (issue 10): compensation (sagas) with ``on_failure: compensate``.

Tasks and compensations append a line to a ledger file (``<name> <time> <inputs>``), so the
ledger shows what ran, in which order, how often, and what each compensation was given. The
``restart`` variants ``kill -9`` the controller while a compensation runs and restart it on the
same store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from corral.v1 import orchestrator_pb2, types_pb2
from tests.e2e.conftest import RPC_TIMEOUT_S, Api, Cluster, TaskState, WorkflowState, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

RESTART_FLAGS = ["--adopt-grace", "3", "--reconnect-grace", "2"]


def _ledger(path: Path) -> list[tuple[str, float, str]]:
    """(name, time, inputs) per line, in the order they were written."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        name, at, inputs = line.split(" ", 2)
        rows.append((name, float(at), inputs))
    return rows


def _line(name: str, ledger: Path) -> str:
    # One append per line (O_APPEND): lines of concurrent tasks never mix.
    return f'echo "{name} $(date +%s.%N) ${{CORRAL_INPUTS:-null}}" >> {ledger}'


def _task(
    name: str, deps: list[str], ledger: Path, *, fail: bool = False, undo: dict[str, Any] | None = None
) -> dict[str, Any]:
    script = _line(name, ledger) + ("; exit 3" if fail else f"; echo '\"{name}-result\"'")
    task: dict[str, Any] = {"name": name, "agent_type": "shell", "dependencies": deps, "payload": {"shell": script}}
    if undo is not None:
        task["compensate"] = undo
    return task


def _undo(name: str, ledger: Path, *, sleep: float = 0.0, flag: Path | None = None) -> dict[str, Any]:
    """A compensation that records itself (with its inputs), optionally works, and (with ``flag``)
    fails unless the flag file exists."""
    script = _line(f"undo-{name}", ledger)
    if sleep:
        script += f"; sleep {sleep}"
    if flag is not None:
        script += f"; test -f {flag} || exit 4"
    return {"payload": {"shell": script}}


def _abc(ledger: Path, *, flag: Path | None = None) -> dict[str, Any]:
    """A -> B -> C; C fails; A and B compensable (B's compensation works 2 s: the restart variants
    kill the controller meanwhile)."""
    return {
        "name": "saga",
        "on_failure": "compensate",
        "tasks": [
            _task("A", [], ledger, undo=_undo("A", ledger)),
            _task("B", ["A"], ledger, undo=_undo("B", ledger, sleep=2.0, flag=flag)),
            _task("C", ["B"], ledger, fail=True),
        ],
    }


def _restart_while_compensating(cluster: Cluster, workflow_id: str) -> Api:
    api = cluster.api

    def compensating() -> bool:
        status = api.status(workflow_id)
        return status.state == types_pb2.WORKFLOW_STATE_COMPENSATING and any(
            t.name == "B" and t.compensation_state == "running" for t in status.tasks
        )

    eventually(compensating, 30, "B's compensation to run")
    cluster.controller.kill9()
    cluster.controller.start(RESTART_FLAGS)
    return cluster.api


@pytest.mark.parametrize("restart", [False, pytest.param(True, marks=pytest.mark.chaos)], ids=["plain", "restart"])
def test_compensations_run_in_reverse_order_with_their_task_results(
    cluster: Cluster, tmp_path: Path, restart: bool
) -> None:
    ledger = tmp_path / "ledger"
    api = cluster.start({"alpha": 2})
    workflow_id = api.submit(_abc(ledger))
    if restart:
        api = _restart_while_compensating(cluster, workflow_id)
    done = api.wait_done(workflow_id, timeout=60)
    assert done.state == WorkflowState.FAILED
    assert "'C' failed" in done.error and "compensation_failed" not in done.error
    by_name = {t.name: t for t in done.tasks}
    assert set(by_name) == {"A", "B", "C"}  # compensations are not tasks of the listing
    assert dict(done.task_counts) == {"completed": 2, "failed": 1}
    assert by_name["A"].compensation_state == by_name["B"].compensation_state == "completed"
    assert by_name["C"].compensation_state == ""
    assert by_name["A"].state == by_name["B"].state == TaskState.COMPLETED
    record = api.explain(by_name["B"].compensation_task_id)  # the compensation's own record
    assert record.on_failure_note == "compensation of task 'B' (completed)"
    assert record.task.result_json  # its own result; its logs are under its attempts like any task's

    rows = _ledger(ledger)
    names = [name for name, _, _ in rows]
    # Each ran once (nothing twice across the restart), B's compensation before A's.
    assert names == ["A", "B", "C", "undo-B", "undo-A"], names
    times = {name: at for name, at, _ in rows}
    assert times["undo-B"] <= times["undo-A"]
    inputs = {name: json.loads(text) for name, _, text in rows if name.startswith("undo-")}
    assert inputs == {"undo-B": {"task": "B-result"}, "undo-A": {"task": "A-result"}}


@pytest.mark.parametrize("restart", [False, pytest.param(True, marks=pytest.mark.chaos)], ids=["plain", "restart"])
def test_failed_compensation_fails_the_workflow_and_the_operator_retries_it(
    cluster: Cluster, tmp_path: Path, restart: bool
) -> None:
    ledger, flag = tmp_path / "ledger", tmp_path / "flag"
    api = cluster.start({"alpha": 2})
    workflow_id = api.submit(_abc(ledger, flag=flag))
    failed = api.wait_done(workflow_id, timeout=60)
    assert failed.state == WorkflowState.FAILED
    assert failed.error.startswith("compensation_failed: compensation of 'B' failed"), failed.error
    states = {t.name: t.compensation_state for t in failed.tasks}
    assert states == {"A": "skipped", "B": "failed", "C": ""}
    assert [name for name, _, _ in _ledger(ledger)] == ["A", "B", "C", "undo-B"]

    flag.touch()
    with pytest.raises(grpc.RpcError) as refused:
        api.orchestrator.RerunWorkflow(
            orchestrator_pb2.RerunWorkflowRequest(workflow_id=workflow_id), timeout=RPC_TIMEOUT_S
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    request = orchestrator_pb2.RetryWorkflowRequest(workflow_id=workflow_id)
    status = api.orchestrator.RetryWorkflow(request, timeout=RPC_TIMEOUT_S).status
    assert status.state == types_pb2.WORKFLOW_STATE_COMPENSATING
    if restart:
        api = _restart_while_compensating(cluster, workflow_id)
    done = api.wait_done(workflow_id, timeout=60)
    assert done.state == WorkflowState.FAILED and "compensation_failed" not in done.error
    assert {t.name: t.compensation_state for t in done.tasks} == {"A": "completed", "B": "completed", "C": ""}
    # The tasks did not run again; B's compensation ran twice (failed, then retried), A's once.
    assert [name for name, _, _ in _ledger(ledger)] == ["A", "B", "C", "undo-B", "undo-B", "undo-A"]


def test_force_cancel_skips_compensation_and_says_so(cluster: Cluster, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    api = cluster.start({"alpha": 2})
    spec = _abc(ledger)
    spec["tasks"][2] = {"name": "C", "agent_type": "shell", "dependencies": ["B"], "payload": {"shell": "sleep 60"}}
    workflow_id = api.submit(spec)
    eventually(lambda: api.tasks(workflow_id)["C"].state == TaskState.RUNNING, 30, "C to run")
    cancelled = api.cancel(workflow_id, force=True)
    assert cancelled.state == WorkflowState.CANCELLED
    request = orchestrator_pb2.GetWorkflowEventsRequest(workflow_id=workflow_id)
    events = api.orchestrator.GetWorkflowEvents(request, timeout=RPC_TIMEOUT_S).events
    assert [e.reason for e in events if e.kind == "compensation_skipped"] == ["force-cancel skips compensation"]
    assert [name for name, _, _ in _ledger(ledger)] == ["A", "B"]  # no compensation ran


def test_bad_input_is_refused_with_a_field_path_and_nothing_is_stored(cluster: Cluster, tmp_path: Path) -> None:
    api = cluster.start({"alpha": 1})
    task = {"name": "a", "agent_type": "shell", "payload_json": b'{"shell": "true"}'}
    cases = [  # (path, words in the message, compensate_json)
        ("tasks[0].compensate_json", "cannot have dependencies", b'{"payload": {"shell": "x"}, "dependencies": ["b"]}'),
        ("tasks[0].compensate_json.retries", "", b'{"payload": {"shell": "x"}, "retries": -1}'),
        ("tasks[0].compensate_json", "not valid JSON", b"{not json"),
    ]
    for path, words, raw in cases:
        message = types_pb2.TaskSpec(**task, compensate_json=raw)
        spec = types_pb2.WorkflowSpec(name="bad", tasks=[message], on_failure="compensate")
        with pytest.raises(grpc.RpcError) as refused:
            api.orchestrator.SubmitWorkflow(orchestrator_pb2.SubmitWorkflowRequest(spec=spec), timeout=RPC_TIMEOUT_S)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, path
        details = refused.value.details() or ""
        assert path in details and words in details, (path, details)
    spec = types_pb2.WorkflowSpec(name="bad", tasks=[types_pb2.TaskSpec(**task)], on_failure="explode")
    with pytest.raises(grpc.RpcError) as unknown:
        api.orchestrator.SubmitWorkflow(orchestrator_pb2.SubmitWorkflowRequest(spec=spec), timeout=RPC_TIMEOUT_S)
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "on_failure" in (unknown.value.details() or "")
    listed = api.orchestrator.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(), timeout=RPC_TIMEOUT_S)
    assert not listed.workflows  # nothing stored
