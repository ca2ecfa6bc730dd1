"""``corral schedule ...`` and ``--at`` against a real controller (issue 10 §7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.procs import Cluster, corral

pytestmark = pytest.mark.e2e

TEMPLATE = """
name: pulse
tasks:
  - {name: beat, payload: {shell: "true"}}
"""


def test_schedule_commands_round_trip(cluster: Cluster, tmp_path: Path) -> None:
    addr = ["--address", cluster.address]
    path = tmp_path / "pulse.yaml"
    path.write_text(TEMPLATE)
    created = corral(
        "schedule", "create", str(path), "--cron", "0 6 * * 1-5", "--timezone", "Europe/Berlin",
        "--overlap", "cancel_previous", "--catchup", "2", "-o", "json", *addr,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    assert (info["name"], info["cron"], info["timezone"], info["overlap"], info["catchup"]) == (
        "pulse", "0 6 * * 1-5", "Europe/Berlin", "cancel_previous", 2,
    )  # fmt: skip
    assert info["next_fire"].endswith("Z") and not info["paused"]

    table = corral("schedule", "list", *addr)
    assert table.returncode == 0 and "pulse" in table.stdout and "active" in table.stdout
    paused = corral("schedule", "pause", "pulse", *addr)
    assert paused.returncode == 0 and "paused" in paused.stdout
    listed = json.loads(corral("schedule", "list", "-o", "json", *addr).stdout)
    assert [s["paused"] for s in listed] == [True] and listed[0]["next_fire"] is None
    assert corral("schedule", "resume", info["schedule_id"], *addr).returncode == 0
    assert corral("schedule", "delete", "pulse", *addr).returncode == 0
    assert json.loads(corral("schedule", "list", "-o", "json", *addr).stdout) == []

    bad = corral("schedule", "create", str(path), "--cron", "not a cron", *addr)
    assert bad.returncode == 2 and "cron" in bad.stderr, bad.stderr


def test_submit_at_holds_the_start(cluster: Cluster, tmp_path: Path) -> None:
    addr = ["--address", cluster.address]
    path = tmp_path / "pulse.yaml"
    path.write_text(TEMPLATE)
    submitted = corral("submit", str(path), "--at", "1h", *addr)
    assert submitted.returncode == 0, submitted.stderr
    workflow_id = submitted.stdout.strip()
    status = json.loads(corral("status", workflow_id, "-o", "json", *addr).stdout)
    assert status["state"] == "running"
    scheduled = status["scheduled_at"]
    assert scheduled.endswith("Z") or "+00:00" in scheduled
    (task,) = status["tasks"]
    assert task["state"] == "pending"
    explained = corral("explain", task["task_id"], *addr)
    assert "scheduled at" in explained.stdout, explained.stdout
    bad = corral("submit", str(path), "--at", "someday", *addr)
    assert bad.returncode == 2 and "--at" in bad.stderr, bad.stderr
