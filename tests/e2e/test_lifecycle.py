"""End to end (issue 12): finished workflows leave memory and still answer every read from the
store; ``--retain`` deletes them from ``list`` and from the database file while running ones stay.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import grpc
import pytest

from corral.controller.rpc.wire_spec import spec_to_proto
from corral.controller.spec import parse_workflow
from corral.v1 import admin_pb2, admin_pb2_grpc, orchestrator_pb2, types_pb2
from tests.e2e.conftest import Cluster, WorkflowState, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

T = 10.0  # RPC timeout


def _shell(name: str, script: str, *deps: str) -> dict[str, Any]:
    return {"name": name, "agent_type": "shell", "payload": {"shell": script}, "dependencies": list(deps)}


def _evictions(cluster: Cluster) -> int:
    """Workflows the controller says left its memory (its log line, the latest count)."""
    text = "".join(p.read_text() for p in sorted(cluster.directory.glob("controller-*.log")))
    counts = re.findall(r"(\d+) finished workflows left memory", text)
    return int(counts[-1]) if counts else 0


def _listed(cluster: Cluster) -> dict[str, int]:
    answer = cluster.api.orchestrator.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(limit=1000), timeout=T)
    return {w.workflow_id: w.state for w in answer.workflows}


def _rows(db: Path, workflow_id: str) -> dict[str, int]:
    """Rows the database file holds for one workflow, per table."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?", (workflow_id,)).fetchone()[0]
            for table, column in (
                ("workflows", "id"),
                ("tasks", "workflow_id"),
                ("attempts", "workflow_id"),
                ("event_batches", "workflow_id"),
            )
        }
        counts["logs"] = conn.execute(
            "SELECT count(*) FROM logs WHERE attempt_id IN (SELECT id FROM attempts WHERE workflow_id = ?)",
            (workflow_id,),
        ).fetchone()[0]
    conn.close()
    return counts


def test_retention_deletes_finished_workflows_from_list_and_database(cluster: Cluster) -> None:
    api = cluster.start({"alpha": 3}, controller_flags=["--retain", "1s", "--evict-after", "0"])
    running = api.submit({"name": "long", "tasks": [_shell("sleep", "sleep 60")]})
    finished = [api.submit({"name": f"quick-{i}", "tasks": [_shell("echo", f"echo out-{i}")]}) for i in range(3)]
    for workflow_id in finished:
        assert api.wait_done(workflow_id, 30).state == WorkflowState.COMPLETED
    assert _rows(cluster.controller.db, finished[0])["logs"] > 0  # output was stored, then goes with it

    def gone() -> bool | None:
        listed = _listed(cluster)
        return (not any(w in listed for w in finished)) or None

    eventually(gone, 15, "finished workflows to leave the list")
    listed = _listed(cluster)
    assert listed[running] == types_pb2.WORKFLOW_STATE_RUNNING
    for workflow_id in finished:
        assert _rows(cluster.controller.db, workflow_id) == {
            "workflows": 0,
            "tasks": 0,
            "attempts": 0,
            "event_batches": 0,
            "logs": 0,
        }
        with pytest.raises(grpc.RpcError) as missing:
            api.status(workflow_id)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    kept = _rows(cluster.controller.db, running)
    assert kept["workflows"] == 1 and kept["tasks"] == 1
    # `corral gc --dry-run` has nothing left to say; the running workflow is never due.
    admin = admin_pb2_grpc.AdminStub(api.channel)
    report = admin.CollectGarbage(admin_pb2.CollectGarbageRequest(dry_run=True), timeout=T)
    assert report.dry_run and list(report.workflows) == []
    assert "1s" in report.retention
    api.cancel(running, force=True)  # a quick teardown


def test_an_evicted_workflow_answers_every_read_and_can_be_retried(cluster: Cluster, tmp_path: Path) -> None:
    api = cluster.start({"alpha": 2}, controller_flags=["--evict-after", "0.3s"])
    marker = tmp_path / "failed-once"
    spec = {
        "name": "evictable",
        "tasks": [
            _shell("hello", "echo hello-from-task"),
            _shell("flaky", f'test -f "{marker}" || {{ touch "{marker}"; echo boom >&2; exit 3; }}', "hello"),
        ],
    }
    message = spec_to_proto(parse_workflow(spec))
    submitted = api.orchestrator.SubmitWorkflow(
        orchestrator_pb2.SubmitWorkflowRequest(spec=message, start=True, idempotency_key="evict-once"), timeout=T
    )
    workflow_id = submitted.workflow_id
    assert api.wait_done(workflow_id, 30).state == WorkflowState.FAILED
    eventually(lambda: _evictions(cluster) >= 1 or None, 15, "the workflow to leave memory")

    # Status, with its tasks, from the store.
    status = api.status(workflow_id)
    assert status.state == types_pb2.WORKFLOW_STATE_FAILED
    tasks = {t.name: t for t in status.tasks}
    assert tasks["hello"].state == types_pb2.TASK_STATE_COMPLETED
    assert tasks["flaky"].state == types_pb2.TASK_STATE_FAILED
    # A unique prefix of the id still resolves.
    assert api.status(workflow_id[:10], tasks=False).workflow_id == workflow_id
    eventually(lambda: _evictions(cluster) >= 2 or None, 15, "the workflow to leave memory again")

    # Listing: the evicted workflow is there, with its task counts.
    listed = api.orchestrator.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(), timeout=T).workflows
    (summary,) = [w for w in listed if w.workflow_id == workflow_id]
    assert summary.state == types_pb2.WORKFLOW_STATE_FAILED and summary.task_total == 2
    assert dict(summary.task_counts) == {"completed": 1, "failed": 1}

    # Events, logs (by task id), attempts, explain, watch.
    events = api.orchestrator.GetWorkflowEvents(
        orchestrator_pb2.GetWorkflowEventsRequest(workflow_id=workflow_id), timeout=T
    ).events
    assert [e.kind for e in events][-1] == "failed"
    eventually(lambda: _evictions(cluster) >= 3 or None, 15, "the workflow to leave memory again")
    logs = api.orchestrator.GetTaskLogs(orchestrator_pb2.GetTaskLogsRequest(task_id=tasks["hello"].task_id), timeout=T)
    assert b"hello-from-task" in logs.stdout and logs.finished
    eventually(lambda: _evictions(cluster) >= 4 or None, 15, "the workflow to leave memory again")
    attempts = api.orchestrator.ListAttempts(
        orchestrator_pb2.ListAttemptsRequest(workflow_id=workflow_id, task="flaky"), timeout=T
    )
    assert len(attempts.attempts) == 1
    eventually(lambda: _evictions(cluster) >= 5 or None, 15, "the workflow to leave memory again")
    explained = api.explain(tasks["flaky"].task_id)
    assert "failed" in explained.reason
    watched = list(
        api.orchestrator.WatchWorkflow(orchestrator_pb2.WatchWorkflowRequest(workflow_id=workflow_id), timeout=T)
    )
    assert watched[0].workflow_state == types_pb2.WORKFLOW_STATE_FAILED
    eventually(lambda: _evictions(cluster) >= 6 or None, 15, "the workflow to leave memory again")

    # An idempotent resubmit finds it.
    again = api.orchestrator.SubmitWorkflow(
        orchestrator_pb2.SubmitWorkflowRequest(spec=message, start=True, idempotency_key="evict-once"), timeout=T
    )
    assert again.workflow_id == workflow_id and again.deduplicated
    eventually(lambda: _evictions(cluster) >= 7 or None, 15, "the workflow to leave memory again")

    # Retry brings it back and runs the failed task again.
    api.orchestrator.RetryWorkflow(orchestrator_pb2.RetryWorkflowRequest(workflow_id=workflow_id), timeout=T)
    done = api.wait_done(workflow_id, 30)
    assert done.state == WorkflowState.COMPLETED and done.run == 2
