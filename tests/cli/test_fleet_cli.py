"""Issue 11 fleet commands against a real controller and agents: cordon, uncordon, drain, agents rm."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.procs import Cluster, corral

pytestmark = pytest.mark.e2e

ONE = """
name: one
tasks:
  - {name: only, payload: {shell: "echo hi"}}
"""


def _until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _agents(addr: list[str]) -> dict[str, dict[str, object]]:
    listed = corral("agents", "-o", "json", *addr)
    assert listed.returncode == 0, listed.stderr
    return {agent["name"]: agent for agent in json.loads(listed.stdout)}


def test_cordon_shows_who_and_why_holds_work_back_and_uncordon_releases_it(
    cluster_with_agent: Cluster, tmp_path: Path
) -> None:
    addr = ["--address", cluster_with_agent.address]
    cordoned = corral("cordon", "a1", "--reason", "disk replacement", "-o", "json", *addr)
    assert cordoned.returncode == 0, cordoned.stderr
    info = json.loads(cordoned.stdout)
    assert info["cordoned"] is True and info["cordoned_by"]
    assert info["cordon_reason"] == f"cordoned by {info['cordoned_by']}: disk replacement"
    assert info["cordoned_until"] is None  # a manual cordon has no end

    table = corral("agents", *addr)
    assert "connected, cordoned" in table.stdout
    assert f"a1: cordoned by {info['cordoned_by']}: disk replacement" in table.stdout

    (tmp_path / "one.yaml").write_text(ONE)
    submitted = corral("run", str(tmp_path / "one.yaml"), "--detach", *addr)
    assert submitted.returncode == 0, submitted.stderr
    workflow_id = submitted.stdout.strip()
    status = json.loads(corral("status", workflow_id, "-o", "json", *addr).stdout)
    (task,) = status["tasks"]
    explained = corral("explain", task["task_id"], *addr)
    assert "disk replacement" in explained.stdout, explained.stdout
    assert task["state"] == "ready"

    uncordoned = corral("uncordon", "a1", "-o", "json", *addr)
    assert uncordoned.returncode == 0, uncordoned.stderr
    assert json.loads(uncordoned.stdout)["cordoned"] is False

    def completed() -> bool:
        return json.loads(corral("status", workflow_id, "-o", "json", *addr).stdout)["state"] == "completed"

    _until("the workflow to complete once uncordoned", completed)
    assert "cordoned" not in corral("agents", *addr).stdout


def test_drain_logs_ends_drained_and_agents_rm_removes_only_what_left(cluster: Cluster) -> None:
    addr = ["--address", cluster.address]
    proc = cluster.add_agent("a1")
    cluster.add_agent("a2")
    cluster.wait_for_agents(2)

    refused = corral("agents", "rm", "a1", *addr)
    assert refused.returncode == 1 and "--force" in refused.stderr, refused.stderr
    assert "a1" in _agents(addr)

    drained = corral("drain", "a1", *addr)
    assert drained.returncode == 0, drained.stderr
    assert proc.wait(timeout=30) == 0  # the agent exits once drained
    _until("a1 to show as drained", lambda: _agents(addr)["a1"]["state"] == "drained")
    controller_log = (cluster.directory / "controller.log").read_text()
    assert "agent a1 (a1) draining, requested by" in controller_log
    assert "drained: every attempt finished or given back; exiting" in (cluster.directory / "agent-a1.log").read_text()
    assert "agent a1 (a1) drained: its work is done and it left; final state drained" in controller_log

    removed = corral("agents", "rm", "a1", *addr)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == "removed agent a1 (a1)"
    assert "a1" not in _agents(addr)
    assert "agent a1 (a1) removed by" in (cluster.directory / "controller.log").read_text()

    forced = corral("agents", "rm", "a2", "--force", "-o", "json", *addr)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["agent"]["name"] == "a2"

    missing = corral("agents", "rm", "nope", *addr)
    assert missing.returncode == 1 and "not found" in missing.stderr
