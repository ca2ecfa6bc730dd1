"""``corral retry``, ``rerun``, ``runs`` and ``history`` (issue 10) against a real controller and agent."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.procs import Cluster, corral

pytestmark = pytest.mark.e2e

FLAKY = """
name: flaky
tasks:
  - {name: first, payload: {shell: "echo 1"}}
  - {name: gate, payload: {shell: "test -f FLAG"}, dependencies: [first]}
  - {name: last, payload: {shell: "echo 3"}, dependencies: [gate]}
"""


def _runs_until_ended(workflow_id: str, addr: list[str]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        listed = corral("runs", workflow_id, "-o", "json", *addr)
        assert listed.returncode == 0, listed.stderr
        runs: list[dict[str, Any]] = json.loads(listed.stdout)
        if runs[-1]["state"] in ("failed", "completed", "cancelled") or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)


def test_retry_rerun_and_the_runs_list(cluster_with_agent: Cluster, tmp_path: Path) -> None:
    addr = ["--address", cluster_with_agent.address]
    flag = tmp_path / "flag"
    path = tmp_path / "wf.yaml"
    path.write_text(FLAKY.replace("FLAG", str(flag)))
    run = corral("run", str(path), "-o", "json", *addr)
    assert run.returncode == 1, run.stderr
    workflow_id = json.loads(run.stdout)["workflow_id"]

    flag.touch()
    retried = corral("retry", workflow_id, *addr)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.split() == [workflow_id, "running", "run", "2"]
    runs = _runs_until_ended(workflow_id, addr)
    assert [(r["number"], r["kind"], r["state"]) for r in runs] == [(1, "submit", "failed"), (2, "retry", "completed")]
    assert runs[0]["failed_attempts"] == 1 and sorted(runs[1]["tasks_run"]) == ["gate", "last"]

    history = corral("history", workflow_id, *addr)  # the alias, as a table
    assert history.returncode == 0, history.stderr
    assert "RUN" in history.stdout and "retry" in history.stdout

    rerun = corral("rerun", workflow_id, *addr)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.split()[-1] == "3"
    assert [r["kind"] for r in _runs_until_ended(workflow_id, addr)] == ["submit", "retry", "rerun"]

    refused = corral("retry", workflow_id, "--from", "no-such-task", *addr)
    assert refused.returncode != 0
