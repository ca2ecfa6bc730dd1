"""End to end (issue 10 §5, cascade prevention): an agent whose tasks keep failing is cordoned, and the
tasks succeed on the other agents; also with a controller ``kill -9`` and restart after the cordon
(the cordon is stored: the agent stays cordoned, and nothing new runs on it).

Tasks fail when they run on the agent named ``bad`` (they see its work dir) and write a ledger line
``<epoch seconds> <bad|good> <workflow> <task> <attempt>`` either way, so the ledger says where what ran.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from corral.v1 import types_pb2
from tests.e2e.conftest import Api, Cluster, WorkflowState, eventually
from tests.procs import corral

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

# A long assignment lease: on a loaded test host a slow Accepted must not hold the healthy agents
# back (30 s without work) while the bad one is cordoned.
FLAGS = ["--adopt-grace", "3", "--reconnect-grace", "2", "--cordon-after", "3", "--cordon-cooldown", "600"]
FLAGS += ["--assignment-lease", "30"]


def _task(name: str, path: Path) -> dict[str, object]:
    ledger = shlex.quote(str(path))
    script = (
        'case "$PWD $CORRAL_RESULT_FILE" in *work-bad*) where=bad;; *) where=good;; esac\n'
        "sleep 0.3\n"
        f"echo $(date +%s.%N) $where $CORRAL_WORKFLOW_ID $CORRAL_TASK_NAME $CORRAL_ATTEMPT_ID >> {ledger}\n"
        '[ "$where" = good ] || { echo "this host is broken" >&2; exit 1; }'
    )
    return {"name": name, "payload": {"shell": script}, "retries": 8, "retry_backoff": 0.1}


def _wave(api: Api, ledger: Path, count: int, tag: str) -> list[str]:
    return [
        api.submit({"name": f"{tag}{i}", "tasks": [_task(f"t{j}", ledger) for j in range(3)]}) for i in range(count)
    ]


def _done(api: Api, workflow_id: str) -> types_pb2.WorkflowStatus:
    try:
        return api.wait_done(workflow_id, timeout=60)
    except AssertionError:  # say why what is left waits
        for task in api.status(workflow_id).tasks:
            print(task.name, task.state, api.explain(task.task_id))
        raise


def _ledger(path: Path) -> list[tuple[float, str, str]]:
    """(time, where, workflow) per run."""
    rows = []
    for line in path.read_text().splitlines():
        at, where, workflow, *_ = line.split()
        rows.append((float(at), where, workflow))
    return rows


@pytest.mark.parametrize(
    "restart", [False, pytest.param(True, marks=pytest.mark.chaos)], ids=["plain", "controller-restart"]
)
def test_an_agent_whose_tasks_keep_failing_is_cordoned(cluster: Cluster, tmp_path: Path, restart: bool) -> None:
    ledger = tmp_path / "ledger"
    api = cluster.start({"alpha": 1, "beta": 1, "bad": 1}, controller_flags=FLAGS)

    def cordoned() -> object:
        agents = {a.name: a for a in api.agents()}
        return agents["bad"] if agents["bad"].cordon_reason else None

    # Waves of work until the bad agent has failed enough (placement decides how much it gets).
    first: list[str] = []
    for wave in range(6):
        first += _wave(api, ledger, 6, f"w{wave}-")
        for workflow_id in first:
            if cordoned():
                break
            _done(api, workflow_id)
        if cordoned():
            break
    bad = eventually(cordoned, 10, "the failing agent to be cordoned")
    assert bad.HasField("cordoned_until")
    assert "failed" in bad.cordon_reason and "workflows" in bad.cordon_reason
    cordoned_at = bad.cordoned_until.seconds + bad.cordoned_until.nanos / 1e9 - 600
    # Never more than a third of the agents of a type: the healthy two stay uncordoned.
    assert [a.name for a in api.agents() if a.cordon_reason] == ["bad"]
    if restart:
        cluster.controller.kill9()
        cluster.controller.start(FLAGS)
        api = cluster.api
        api.wait_agents(["alpha", "beta", "bad"])
        assert {a.name for a in api.agents() if a.cordon_reason} == {"bad"}  # stored, not forgotten
    second = _wave(api, ledger, 4, "v")  # new work after the cordon
    for workflow_id in first + second:
        final = _done(api, workflow_id)
        assert final.state == WorkflowState.COMPLETED, final.error

    shown = corral("agents", "--address", api.address, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert "cordoned" in shown.stdout and "bad:" in shown.stdout, shown.stdout

    runs = _ledger(ledger)
    bad_runs = [at for at, where, _ in runs if where == "bad"]
    assert len(bad_runs) >= 3  # it failed enough to be cordoned ...
    # ... from at least 3 workflows, and nothing started on it after the cordon (a run already in
    # flight may end just after; 1 s of slack for that and the clocks).
    assert len({wf for _, where, wf in runs if where == "bad"}) >= 2
    assert all(at <= cordoned_at + 1.0 for at in bad_runs), (bad_runs, cordoned_at)
    second_bad = [wf for _, where, wf in runs if where == "bad" and wf in second]
    assert second_bad == [], "work placed on the cordoned agent"
