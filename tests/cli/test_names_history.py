"""Issue 11 on the CLI, against a real controller and agent: tasks by ``WF/TASK`` (logs, explain,
attempts), ``explain WF``, status DETAIL and the ``unplaceable`` display state, ``events`` in order
and followed, attempts with signal names, ``logs --tail/--since``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.controller.sdk import SyncClient
from corral.controller.sdk.types import WorkflowStatus
from tests.procs import Cluster, corral

pytestmark = pytest.mark.e2e

LINES = """
name: lines
tasks:
  - {name: count, payload: {shell: "for i in 1 2 3 4 5; do echo line-$i; done; echo err-1 >&2; echo err-2 >&2"}}
  - {name: after, payload: {shell: "echo after"}, dependencies: [count]}
"""
WAITING = """
name: waiting
tasks:
  - {name: nap, payload: {command: [sleep, "60"]}}
  - {name: next, payload: {shell: "true"}, dependencies: [nap]}
  - {name: huge, payload: {shell: "true"}, resources: {cpu_cores: 4000}}
"""


def wait_until(address: str, workflow_id: str, done: Callable[[WorkflowStatus], bool], timeout: float = 30.0) -> None:
    """Poll the workflow's status until ``done`` holds (an upper bound, not a sleep)."""
    with SyncClient(address) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done(client.status(workflow_id)):
                return
            time.sleep(0.1)
    raise AssertionError(f"workflow {workflow_id} did not get there in {timeout}s")


def write(tmp_path: Path, text: str, name: str = "wf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run_json(tmp_path: Path, text: str, addr: list[str]) -> dict[str, object]:
    ran = corral("run", str(write(tmp_path, text)), "-o", "json", *addr)
    assert ran.returncode == 0, ran.stderr
    status: dict[str, object] = json.loads(ran.stdout)
    return status


def test_tasks_by_name_for_logs_explain_and_attempts(cluster_with_agent: Cluster, tmp_path: Path) -> None:
    addr = ["--address", cluster_with_agent.address]
    workflow_id = str(run_json(tmp_path, LINES, addr)["workflow_id"])
    prefix = workflow_id[:8]

    logs = corral("logs", f"{prefix}/count", *addr)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "".join(f"line-{i}\n" for i in range(1, 6)) and logs.stderr == "err-1\nerr-2\n"

    explained = json.loads(corral("explain", f"{workflow_id}/after", "-o", "json", *addr).stdout)
    assert explained["task"]["name"] == "after" and explained["task"]["state"] == "completed"

    attempts = json.loads(corral("attempts", f"{prefix}/count", "-o", "json", *addr).stdout)
    assert len(attempts) == 1
    assert attempts[0]["state"] == "succeeded" and attempts[0]["exit_code"] == 0 and attempts[0]["agent_name"] == "a1"
    table = corral("attempts", f"{prefix}/count", *addr).stdout.splitlines()
    assert table[0].split() == ["#", "ATTEMPT", "STATE", "AGENT", "QUEUED", "RUN", "EXIT", "ERROR"]

    missing = corral("logs", f"{prefix}/nope", *addr)
    assert missing.returncode == 1 and "has no task 'nope'" in missing.stderr and "count" in missing.stderr
    bad = corral("attempts", f"{prefix}/", *addr)
    assert bad.returncode == 2 and "WORKFLOW/TASK" in bad.stderr


def test_logs_tail_and_since(cluster_with_agent: Cluster, tmp_path: Path) -> None:
    addr = ["--address", cluster_with_agent.address]
    workflow_id = str(run_json(tmp_path, LINES, addr)["workflow_id"])
    tail = corral("logs", f"{workflow_id}/count", "--tail", "2", *addr)
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout == "line-4\nline-5\n" and tail.stderr == "err-1\nerr-2\n"  # N lines of each stream
    followed = corral("logs", f"{workflow_id}/count", "-f", "--tail", "1", *addr)
    assert (followed.stdout, followed.stderr) == ("line-5\n", "err-2\n")
    assert corral("logs", f"{workflow_id}/count", "--since", "1h", *addr).stdout.startswith("line-1\n")
    bogus = corral("logs", f"{workflow_id}/count", "--since", "soon", *addr)
    assert bogus.returncode == 2 and "30s, 5m" in bogus.stderr


def test_explain_workflow_status_detail_unplaceable_and_signals(cluster_with_agent: Cluster, tmp_path: Path) -> None:
    addr = ["--address", cluster_with_agent.address]
    submitted = corral("submit", str(write(tmp_path, WAITING)), *addr)
    assert submitted.returncode == 0, submitted.stderr
    workflow_id = submitted.stdout.strip()
    address = cluster_with_agent.address
    wait_until(address, workflow_id, lambda s: any(t.name == "nap" and t.state == "running" for t in s.tasks))

    explained = json.loads(corral("explain", workflow_id, "-o", "json", *addr).stdout)
    assert {e["task"]["name"] for e in explained} == {"next", "huge"}  # the waiting ones, not the running nap
    by_name = {e["task"]["name"]: e for e in explained}
    assert by_name["next"]["waiting_on"] == ["nap"]
    assert "cpu_cores" in by_name["huge"]["reason"]

    status = json.loads(corral("status", workflow_id, "-o", "json", *addr).stdout)
    tasks = {t["name"]: t for t in status["tasks"]}
    assert tasks["huge"]["state"] == "ready" and tasks["huge"]["display_state"] == "unplaceable"
    assert "cpu_cores" in tasks["huge"]["detail"]
    assert tasks["next"]["detail"] == "waiting on nap (running)"
    assert tasks["nap"]["detail"].startswith("running on ")
    table = corral("status", workflow_id, *addr).stdout
    huge_row = next(line for line in table.splitlines() if line.startswith("huge"))
    assert huge_row.split()[1] == "unplaceable"
    assert all(t["detail"] for t in status["tasks"])  # every non-terminal task says why

    cancelled = corral("cancel", workflow_id, *addr)
    assert cancelled.returncode == 0, cancelled.stderr
    wait_until(address, workflow_id, lambda s: s.state == "cancelled")
    attempts = json.loads(corral("attempts", f"{workflow_id}/nap", "-o", "json", *addr).stdout)
    assert attempts[-1]["exit_code"] == -15 and attempts[-1]["exit"] == "SIGTERM (-15)"
    ended = json.loads(corral("status", workflow_id, "-o", "json", *addr).stdout)
    never_ran = {t["name"]: t for t in ended["tasks"]}["next"]
    assert never_ran["state"] == "cancelled" and never_ran["exit_code_known"] is False
    assert corral("attempts", f"{workflow_id}/next", *addr).stdout.strip() == "no attempts: the task never ran"
    wide = corral("status", workflow_id, "-o", "wide", *addr).stdout.splitlines()
    header = wide[wide.index(next(line for line in wide if line.startswith("TASK ID")))].split()
    assert header[-1] == "EXIT"
    next_row = next(line for line in wide if " next " in line)
    assert next_row.split()[-1] == "-"  # no exit code for a task that never ran
    events = json.loads(corral("events", workflow_id, "-t", "nap", "--json", *addr).stdout)
    assert any("SIGTERM (-15)" in e["reason"] for e in events), [e["reason"] for e in events]


def test_events_in_order_and_followed(cluster_with_agent: Cluster, tmp_path: Path) -> None:
    addr = ["--address", cluster_with_agent.address]
    slow = (
        "name: slow\ntasks:\n  - {name: a, payload: {shell: 'sleep 1'}}\n"
        "  - {name: b, payload: {shell: 'true'}, dependencies: [a]}\n"
    )
    submitted = corral("submit", str(write(tmp_path, slow)), *addr)
    workflow_id = submitted.stdout.strip()
    # Started while the workflow runs: -f must print what follows and stop once it ends.
    followed = corral("events", workflow_id, "-f", "-o", "json", *addr, timeout=60)
    assert followed.returncode == 0, followed.stderr
    events = [json.loads(line) for line in followed.stdout.splitlines()]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert events[0]["kind"] == "submitted" and events[-1]["workflow_state"] == "completed"
    kinds = [(e["task_name"], e["kind"] or e["task_state"]) for e in events if e["task_name"]]
    assert kinds.index(("a", "placed")) < kinds.index(("a", "completed")) < kinds.index(("b", "placed"))
    listed = json.loads(corral("events", workflow_id, "--json", *addr).stdout)
    assert [e["seq"] for e in listed] == seqs  # -f printed the whole log, once, in order
    lines = corral("events", workflow_id, "-f", *addr).stdout.splitlines()
    assert len(lines) == len(events) and "submitted" in lines[0]
