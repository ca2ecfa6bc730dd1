"""``--log-format json``: every line both daemons write parses as a JSON object, and lines about a
task or a workflow carry its ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, WorkflowState

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

FLAGS = ["--log-format", "json", "--log-level", "debug"]


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a daemon's output as a JSON object; fails naming the first line that is not one."""
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"{path.name}:{number} is not JSON ({exc}): {line!r}") from None
        assert isinstance(record, dict), f"{path.name}:{number} is not an object: {line!r}"
        for key in ("event", "level", "timestamp", "logger"):
            assert key in record, f"{path.name}:{number} has no {key!r}: {line!r}"
        records.append(record)
    return records


def test_both_daemons_log_json_lines_with_ids(cluster: Cluster) -> None:
    api = cluster.start({"alpha": 2}, controller_flags=FLAGS, agent_flags=FLAGS)
    spec = {
        "name": "logged",
        "tasks": [
            {"name": "sh", "agent_type": "shell", "payload": {"shell": "echo 1"}},
            {"name": "py", "agent_type": "python", "payload": {"function": "e2e_tasks:constant", "args": [2]}},
            {"name": "bad", "agent_type": "shell", "payload": {"shell": "exit 3"}, "dependencies": ["sh"]},
        ],
    }
    workflow_id = api.submit(spec)
    final = api.wait_done(workflow_id, timeout=45)
    assert final.state == WorkflowState.FAILED
    task_ids = {t.name: t.task_id for t in final.tasks}
    attempts = {t.attempt_id for t in final.tasks}
    cluster.shutdown()  # the daemons flush and exit: their files are complete

    controller = json_lines(cluster.directory / "controller-1.log")
    agent = json_lines(cluster.directory / "agent-alpha-1.log")
    assert controller and agent

    # The controller: a line per workflow change (info) and per task change (debug), with ids.
    ours = [r for r in controller if r.get("workflow_id") == workflow_id]
    assert {"workflow submitted", "workflow started", "workflow failed"} <= {r["event"] for r in ours}
    placed = [r for r in ours if r["event"] == "task placed"]
    assert {r["task_id"] for r in placed} == set(task_ids.values())
    assert all(r["attempt_id"] in attempts and r["agent_id"] == "alpha" for r in placed)
    failed = [r for r in ours if r["event"] == "task failed"]
    assert [r["task_id"] for r in failed] == [task_ids["bad"]]
    for record in controller:
        if "task_id" in record:
            assert record.get("workflow_id"), record

    # The agent: every line about an attempt names the attempt, its task and its workflow.
    about = [r for r in agent if str(r["event"]).startswith("attempt ")]
    assert {r["task_id"] for r in about if r["event"] == "attempt starting"} == set(task_ids.values())
    assert {r["attempt_id"] for r in about if r["event"] == "attempt ended"} == attempts
    for record in about:
        assert record["attempt_id"] in attempts, record
        assert record["workflow_id"] == workflow_id and record["task_id"] in task_ids.values(), record
