"""The ``corral`` executable against a real controller and agent."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from tests.procs import Cluster, corral

pytestmark = pytest.mark.e2e

OK = """
name: ok
tasks:
  - {name: hello, payload: {shell: "echo hello-out; echo hello-err >&2"}}
  - {name: after, payload: {command: [echo, '{"done": true}']}, dependencies: [hello]}
"""
FAILING = """
name: failing
tasks:
  - {name: boom, payload: {shell: "echo going down >&2; exit 3"}}
  - {name: never, payload: {shell: "true"}, dependencies: [boom]}
"""
STUCK = """
name: stuck
tasks:
  - {name: huge, payload: {shell: "true"}, resources: {cpu_cores: 4000}}
"""


def write(tmp_path: Path, text: str, name: str = "wf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def is_rfc3339(value: str) -> bool:
    return value.endswith("Z") and datetime.fromisoformat(value).tzinfo is not None


def test_run_exit_codes(cluster_with_agent: Cluster, tmp_path: Path) -> None:
    addr = ["--address", cluster_with_agent.address]

    ok = corral("run", str(write(tmp_path, OK)), *addr)
    assert ok.returncode == 0, ok.stderr
    assert "hello" in ok.stdout and "completed" in ok.stdout

    failed = corral("run", str(write(tmp_path, FAILING)), *addr)
    assert failed.returncode == 1, failed.stderr
    assert "failed" in failed.stdout

    stuck = corral("run", str(write(tmp_path, STUCK)), "--unschedulable-after", "1", *addr)
    assert stuck.returncode == 3, (stuck.stdout, stuck.stderr)
    assert "task huge cannot be scheduled" in stuck.stderr


def test_run_json_and_detach(cluster_with_agent: Cluster, tmp_path: Path) -> None:
    addr = ["--address", cluster_with_agent.address]
    result = corral("run", str(write(tmp_path, OK)), "-o", "json", *addr)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["state"] == "completed"
    assert {t["name"]: t["result"] for t in status["tasks"]}["after"] == {"done": True}

    detached = corral("run", str(write(tmp_path, OK)), "--detach", *addr)
    assert detached.returncode == 0
    workflow_id = detached.stdout.strip()
    assert workflow_id and "\n" not in workflow_id


def test_read_commands_json_fields(cluster_with_agent: Cluster, tmp_path: Path) -> None:
    addr = ["--address", cluster_with_agent.address]
    path = write(tmp_path, OK)
    run = corral("run", str(path), "-o", "json", *addr)
    workflow_id = json.loads(run.stdout)["workflow_id"]

    listed = json.loads(corral("list", "-o", "json", *addr).stdout)
    assert [w["workflow_id"] for w in listed] == [workflow_id]
    assert set(listed[0]) == {
        "workflow_id",
        "name",
        "state",
        "task_total",
        "task_counts",
        "created_at",
        "started_at",
        "finished_at",
        "namespace",
    }
    assert listed[0]["namespace"] == "default"
    assert is_rfc3339(listed[0]["created_at"]) and listed[0]["task_total"] == 2

    status = json.loads(corral("status", workflow_id[:10], "-o", "json", *addr).stdout)
    assert status["workflow_id"] == workflow_id and status["state"] == "completed"
    assert {
        "workflow_id",
        "name",
        "state",
        "task_total",
        "task_counts",
        "tasks",
        "error",
        "metadata",
        "labels",
        "created_at",
        "started_at",
        "finished_at",
    } <= set(status)
    task = status["tasks"][0]
    assert {
        "task_id",
        "name",
        "state",
        "attempts",
        "result",
        "exit_code",
        "unschedulable",
        "dependencies",
        "started_at",
        "finished_at",
    } <= set(task)
    assert is_rfc3339(task["finished_at"])

    agents = json.loads(corral("agents", "-o", "json", *addr).stdout)
    assert [a["name"] for a in agents] == ["a1"]
    assert agents[0]["state"] == "connected" and agents[0]["inventory"]["slots"] == 2
    assert {"agent_id", "agent_types", "labels", "usage", "allocated", "last_heartbeat"} <= set(agents[0])

    plan = json.loads(corral("plan", str(path), "-o", "json", *addr).stdout)
    assert [s["task_names"] for s in plan["stages"]] == [["hello"], ["after"]]
    assert plan["critical_path"] == ["hello", "after"] and plan["task_count"] == 2

    as_yaml = yaml.safe_load(corral("status", workflow_id, "-o", "yaml", *addr).stdout)
    assert as_yaml["workflow_id"] == workflow_id

    for command in (
        ["list"],
        ["list", "-o", "wide"],
        ["agents", "-o", "wide"],
        ["status", workflow_id],
        ["plan", str(path)],
    ):
        shown = corral(*command, *addr)
        assert shown.returncode == 0 and shown.stdout.strip(), (command, shown.stderr)


def test_logs_explain_and_task_prefixes(cluster_with_agent: Cluster, tmp_path: Path) -> None:
    addr = ["--address", cluster_with_agent.address]
    status = json.loads(corral("run", str(write(tmp_path, OK)), "-o", "json", *addr).stdout)
    hello = next(t for t in status["tasks"] if t["name"] == "hello")

    logs = corral("logs", hello["task_id"], *addr)
    assert logs.returncode == 0
    assert logs.stdout == "hello-out\n" and logs.stderr == "hello-err\n"
    followed = corral("logs", "-f", hello["task_id"][:12], *addr)
    assert followed.stdout == "hello-out\n"
    as_json = json.loads(corral("logs", hello["task_id"], "-o", "json", *addr).stdout)
    assert as_json["stdout"] == "hello-out\n" and as_json["finished"] is True

    explained = json.loads(corral("explain", hello["task_id"], "-o", "json", *addr).stdout)
    assert explained["task"]["name"] == "hello" and explained["reason"]
    assert corral("explain", hello["task_id"], *addr).returncode == 0


def test_lifecycle_commands_and_errors(cluster_with_agent: Cluster, tmp_path: Path) -> None:
    addr = ["--address", cluster_with_agent.address]
    slow = write(tmp_path, "name: slow\ntasks:\n  - {name: nap, payload: {command: [sleep, '60']}}\n")
    submitted = corral("submit", str(slow), "--no-start", *addr)
    assert submitted.returncode == 0, submitted.stderr
    workflow_id = submitted.stdout.strip()

    cancelled = corral("cancel", workflow_id, "--force", "-o", "json", *addr)
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["state"] in ("cancelling", "cancelled")

    missing = corral("status", "no-such-workflow", *addr)
    assert missing.returncode == 1 and missing.stderr.startswith("error: ")
    assert "Traceback" not in missing.stderr


def test_drain(cluster_with_agent: Cluster) -> None:
    addr = ["--address", cluster_with_agent.address]
    drained = corral("drain", "a1", "-o", "json", *addr)
    assert drained.returncode == 0, drained.stderr
    assert json.loads(drained.stdout)["state"] == "draining"


def test_events_table_and_json(cluster_with_agent: Cluster, tmp_path: Path) -> None:
    addr = ["--address", cluster_with_agent.address]
    ran = corral("run", str(write(tmp_path, OK)), "-o", "json", *addr)
    assert ran.returncode == 0, ran.stderr
    workflow_id = json.loads(ran.stdout)["workflow_id"]
    table = corral("events", workflow_id, *addr)
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[0].split()
    assert header == ["TIME", "KIND", "TASK", "ATTEMPT", "AGENT", "REASON"]
    assert "hello" in table.stdout and "after" in table.stdout
    rows = json.loads(corral("events", workflow_id[:8], "--task", "hello", "--json", *addr).stdout)
    assert rows and {row["task_name"] for row in rows} == {"hello"}
    assert all({"seq", "at", "kind", "reason", "attempt_id", "agent_id"} <= row.keys() for row in rows)
    assert all(is_rfc3339(row["at"]) for row in rows)
    missing = corral("events", "wf-nothing", *addr)
    assert missing.returncode == 1 and "not found" in missing.stderr
