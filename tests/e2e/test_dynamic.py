"""End to end: dynamic tasks (issue 10 §8). A task spawns 100 tasks and a fan-in over ``spawn/*``
gets their 100 results; ``map`` over a 50-item upstream list. Each also with a ``kill -9`` of the
controller in the middle and a restart on the same store: the same outcome, nothing run twice.

The tasks write a ledger (``tests/e2e/tasks/ckpt_tasks.py``): one line per body that ran.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster, WorkflowState, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


def _lines(ledger: Path, kind: str) -> list[list[str]]:
    if not ledger.exists():
        return []
    return [line.split()[1:] for line in ledger.read_text().splitlines() if line.split()[0] == kind]


def _kill_controller_when(cluster: Cluster, ledger: Path, kind: str, count: int) -> None:
    eventually(lambda: len(_lines(ledger, kind)) >= count, 60, f"{count} {kind} lines", 0.02)
    cluster.controller.kill9()
    cluster.controller.start()


@pytest.mark.parametrize(
    "restart", [False, pytest.param(True, marks=pytest.mark.chaos)], ids=["plain", "controller-restart"]
)
def test_a_task_spawns_100_and_a_fan_in_gets_100_results(cluster: Cluster, tmp_path: Path, restart: bool) -> None:
    ledger = tmp_path / "ledger"
    api = cluster.start({"alpha": 4})
    spawn_kwargs = {"n": 100, "ledger": str(ledger), "fail_once": str(tmp_path / "failed-once"), "delay": 0.05}
    workflow_id = api.submit(
        {
            "name": "spawn",
            "tasks": [
                {
                    "name": "spawn",
                    "agent_type": "python",
                    "retries": 1,
                    "retry_backoff": 0.1,
                    "payload": {"function": "ckpt_tasks:spawner", "kwargs": spawn_kwargs},
                },
                {
                    "name": "fan",
                    "agent_type": "python",
                    "dependencies": ["spawn/*"],
                    "payload": {"function": "ckpt_tasks:fan_in", "kwargs": {"ledger": str(ledger)}},
                },
            ],
        }
    )
    if restart:
        _kill_controller_when(cluster, ledger, "child", 20)
        api = cluster.api
    status = api.wait_done(workflow_id, 240)
    assert status.state == WorkflowState.COMPLETED, status.error
    tasks = {t.name: t for t in status.tasks}
    assert len(tasks) == 102 and json.loads(tasks["fan"].result_json) == {"count": 100, "sum": sum(range(100))}
    assert len(_lines(ledger, "spawner")) == 2  # the first attempt failed after spawning, the retry spawned again
    children = Counter(int(line[0]) for line in _lines(ledger, "child"))
    assert children == Counter(range(100)), "a child ran twice, or not at all"  # idempotent spawn, no rerun
    assert all(line[2] == "100" for line in _lines(ledger, "child"))  # each got its spawner's result
    assert _lines(ledger, "fan_in") == [["100"]]


@pytest.mark.parametrize(
    "restart", [False, pytest.param(True, marks=pytest.mark.chaos)], ids=["plain", "controller-restart"]
)
def test_map_over_a_50_item_upstream_list(cluster: Cluster, tmp_path: Path, restart: bool) -> None:
    ledger = tmp_path / "ledger"
    api = cluster.start({"alpha": 4})
    workflow_id = api.submit(
        {
            "name": "map",
            "tasks": [
                {"name": "items", "agent_type": "python", "payload": {"function": "ckpt_tasks:items", "args": [50]}},
                {
                    "name": "each",
                    "agent_type": "python",
                    "dependencies": ["items"],
                    "map": "items",
                    "payload": {"function": "ckpt_tasks:double", "kwargs": {"ledger": str(ledger), "delay": 0.1}},
                },
                {
                    "name": "total",
                    "agent_type": "python",
                    "dependencies": ["each"],
                    "payload": {"function": "ckpt_tasks:total"},
                },
            ],
        }
    )
    if restart:
        _kill_controller_when(cluster, ledger, "item", 10)
        api = cluster.api
    status = api.wait_done(workflow_id, 240)
    assert status.state == WorkflowState.COMPLETED, status.error
    tasks = {t.name: t for t in status.tasks}
    assert json.loads(tasks["each"].result_json) == [2 * i for i in range(50)]
    assert json.loads(tasks["total"].result_json) == sum(2 * i for i in range(50))
    assert {f"each/{i}" for i in range(50)} <= set(tasks)
    assert Counter(int(line[0]) for line in _lines(ledger, "item")) == Counter(range(50))  # each item once


def test_a_shell_task_spawns_through_its_spawn_file(cluster: Cluster, tmp_path: Path) -> None:
    api = cluster.start({"alpha": 2})
    children = json.dumps([{"name": f"c{i}", "payload": {"shell": f"echo {i}"}} for i in range(3)])
    workflow_id = api.submit(
        {
            "name": "shell-spawn",
            "tasks": [
                {"name": "root", "payload": {"shell": f"echo '{children}' >> \"$CORRAL_SPAWN_FILE\"; echo 0"}},
                {"name": "sum", "dependencies": ["root/*"], "payload": {"shell": 'echo "$CORRAL_INPUTS"'}},
            ],
        }
    )
    status = api.wait_done(workflow_id, 120)
    assert status.state == WorkflowState.COMPLETED, status.error
    tasks = {t.name: t for t in status.tasks}
    assert json.loads(tasks["sum"].result_json) == {"root": 0, "root/c0": 0, "root/c1": 1, "root/c2": 2}
