"""End to end: whole workflows through a real controller and real agents, and their lifecycle commands.

Covers the 50-task DAG (shell and python tasks, fan-out and fan-in, results flowing to dependents),
pause / resume, graceful cancel and force cancel of running workflows.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import TASKS_DIR, Api, Cluster, TaskState, WorkflowState, eventually, pids_alive, read_pids

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

PY = sys.executable
# Run by path: tasks start from a clean environment (no PYTHONPATH from the agent).
SUM_SCRIPT = TASKS_DIR / "e2e_tasks.py"


def _shell_sum(k: int) -> dict[str, Any]:
    """A shell task that reads $CORRAL_INPUTS and prints sum(inputs) + k as its last stdout line."""
    return {"agent_type": "shell", "payload": {"shell": f'"{PY}" "{SUM_SCRIPT}" sum {k}'}}


def _python_sum(k: int) -> dict[str, Any]:
    """A python task whose ``inputs`` parameter receives the dependencies' results."""
    return {"agent_type": "python", "payload": {"function": "e2e_tasks:plus", "kwargs": {"k": k}}}


def _dag() -> list[tuple[str, str, list[str], int]]:
    """(name, kind, dependencies, k) of 50 tasks; each task's value is sum(dependency values) + k."""
    rows: list[tuple[str, str, list[str], int]] = [
        ("root-py", "python", [], 1),
        ("root-sh", "shell", [], 2),
        ("side", "shell", ["root-sh"], 100),
    ]
    kinds = ("python", "shell")
    rows += [(f"l1-{i}", kinds[i % 2], ["root-py", "root-sh"], i) for i in range(16)]  # fan-out
    rows += [(f"l2-{i}", kinds[(i + 1) % 2], [f"l1-{i}", f"l1-{(i + 1) % 16}"], 0) for i in range(16)]
    rows += [(f"l3-{j}", kinds[j % 2], [f"l2-{2 * j}", f"l2-{2 * j + 1}"], j) for j in range(8)]  # fan-in
    rows += [(f"l4-{j}", kinds[(j + 1) % 2], [f"l3-{2 * j}", f"l3-{2 * j + 1}"], 0) for j in range(4)]
    rows += [(f"l5-{j}", kinds[j % 2], [f"l4-{2 * j}", f"l4-{2 * j + 1}"], 0) for j in range(2)]
    rows.append(("final", "python", ["l5-0", "l5-1", "side"], 0))
    return rows


def test_fifty_task_dag_runs_across_two_agents(cluster: Cluster) -> None:
    api = cluster.start({"alpha": 3, "beta": 3})
    rows = _dag()
    assert len(rows) == 50
    tasks = []
    for name, kind, deps, k in rows:
        body = _python_sum(k) if kind == "python" else _shell_sum(k)
        tasks.append({"name": name, "dependencies": deps, **body})

    # The expected value of every task, evaluated independently of the system under test.
    expected: dict[str, int] = {}
    for name, _kind, deps, k in rows:  # rows are in topological order
        expected[name] = sum(expected[d] for d in deps) + k
    # By hand: l1-i = 3 + i; every l1 feeds two l2 tasks, so the l2 layer sums to 2 * (16*3 + 120)
    # = 336; l3 adds 0+1+...+7 = 28 -> 364, carried through l4 and l5; side = 2 + 100; final = 466.
    assert expected["l1-5"] == 8
    assert expected["l2-15"] == (3 + 15) + (3 + 0)
    assert expected["final"] == 466

    started = time.monotonic()
    workflow_id = api.submit({"name": "dag-50", "tasks": tasks})
    final = api.wait_done(workflow_id, timeout=45)
    duration = time.monotonic() - started
    print(f"\n50-task DAG on 2 agents: submitted to finished in {duration:.2f} s")

    assert final.state == WorkflowState.COMPLETED, final.error
    by_name = {t.name: t for t in final.tasks}
    assert set(by_name) == set(expected)
    not_completed = {n: t.state for n, t in by_name.items() if t.state != TaskState.COMPLETED}
    assert not not_completed
    results = {name: json.loads(t.result_json) for name, t in by_name.items()}
    assert results == expected
    assert results["final"] == 466
    # No task failed: none spent a retry (an attempt may have been moved to an idle agent, which
    # costs no retry).
    assert all(t.retries_used == 0 for t in by_name.values())
    ran_on = {t.agent_id for t in by_name.values()}
    assert ran_on == {"alpha", "beta"}, f"tasks ran on {ran_on}"
    assert all(by_name[name].agent_type == kind for name, kind, _, _ in rows)


def test_a_finished_workflows_python_process_ends_with_it(cluster: Cluster) -> None:
    """Nothing of a workflow outlives it on the agent: its python worker child ends when the
    controller's acknowledgement says the workflow ended, not when the next workflow comes."""
    api = cluster.start({"alpha": 1})
    task = {"name": "who", "agent_type": "python", "payload": {"function": "e2e_tasks:pid"}}
    final = api.wait_done(api.submit({"name": "one-task", "tasks": [task]}), timeout=30)
    assert final.state == WorkflowState.COMPLETED, final.error
    child = json.loads(final.tasks[0].result_json)
    eventually(lambda: not pids_alive([child]), timeout=10, what="the ended workflow's python child gone")
    # The next workflow's task runs at once in the child that took over.
    again = api.wait_done(api.submit({"name": "one-task", "tasks": [task]}), timeout=30)
    assert again.state == WorkflowState.COMPLETED, again.error
    assert json.loads(again.tasks[0].result_json) != child


def _sleepers(count: int, seconds: float, prefix: str = "t") -> list[dict[str, Any]]:
    return [
        {"name": f"{prefix}{i}", "agent_type": "shell", "payload": {"shell": f"sleep {seconds}; echo {i}"}}
        for i in range(count)
    ]


def test_pause_stops_new_starts_and_resume_completes(cluster: Cluster) -> None:
    api = cluster.start({"alpha": 2, "beta": 2})
    workflow_id = api.submit({"name": "pausable", "tasks": _sleepers(14, 1.0)})
    eventually(lambda: any(t.state == TaskState.RUNNING for t in api.tasks(workflow_id).values()), 20, "a running task")

    paused = api.pause(workflow_id)
    assert paused.state == WorkflowState.PAUSED
    # Everything that had been handed out when the pause was applied; nothing else may start.
    at_pause = api.tasks(workflow_id)
    handed_out = {n for n, t in at_pause.items() if t.state in TaskState.STARTED}
    waiting = {n for n, t in at_pause.items() if t.state == TaskState.READY}
    assert waiting, "the workflow should still have queued tasks at the pause"
    assert handed_out | waiting == set(at_pause)

    # Watch for a while (longer than a task runs) and until the attempts in flight at the pause
    # have finished, which they may: nothing that was waiting may start meanwhile.
    watch_until = time.monotonic() + 3.0
    deadline = time.monotonic() + 20.0
    while True:
        status = api.status(workflow_id)
        assert status.state == WorkflowState.PAUSED
        for task in status.tasks:
            if task.name in waiting:
                assert task.state == TaskState.READY, f"{task.name} started while paused"
                assert task.attempts == 0
                assert task.waiting_reason == "workflow paused"
        finished = {t.name for t in status.tasks if t.state == TaskState.COMPLETED}
        if time.monotonic() > watch_until and finished == handed_out:
            break
        assert time.monotonic() < deadline, f"in-flight tasks did not finish while paused: {handed_out - finished}"
        time.sleep(0.2)
    assert api.explain(at_pause[sorted(waiting)[0]].task_id).reason == "workflow paused"

    resumed = api.resume(workflow_id)
    assert resumed.state == WorkflowState.RUNNING
    final = api.wait_done(workflow_id, timeout=30)
    assert final.state == WorkflowState.COMPLETED, final.error
    assert all(t.state == TaskState.COMPLETED and t.attempts == 1 for t in final.tasks)


def _pid_recorder(name: str, folder: Path, *, ignore_term: bool = False) -> dict[str, Any]:
    """A shell task that records its pid and its child's pid, then runs until stopped."""
    pids = folder / f"{name}.pids"
    trap = "trap '' TERM; " if ignore_term else ""
    # With TERM ignored the loop survives the graceful stop and only SIGKILL ends it.
    body = "while :; do sleep 0.2; done" if ignore_term else "sleep 1000 & echo $! >> {pids}; wait"
    script = f"{trap}echo $$ >> {pids}; " + body.format(pids=pids)
    return {"name": name, "agent_type": "shell", "payload": {"shell": script}}


def _start_cancellable(api: Api, folder: Path, *, ignore_term: bool = False) -> tuple[str, list[str]]:
    """A workflow of 4 long running tasks and 4 more behind them; returns (id, the long task names)."""
    long_names = [f"long{i}" for i in range(4)]
    tasks = [
        {**_pid_recorder(n, folder, ignore_term=ignore_term and i == 0), "priority": 90}
        for i, n in enumerate(long_names)
    ]
    tasks += [{**t, "dependencies": long_names[:1]} for t in _sleepers(2, 0.1, prefix="after")]
    # Lower priority and no room left for them: they stay READY behind the long ones.
    tasks += [{**t, "priority": 10} for t in _sleepers(2, 0.1, prefix="queued")]
    workflow_id = api.submit({"name": "cancellable", "tasks": tasks})

    def all_running() -> bool:
        states = api.tasks(workflow_id)
        running = all(states[n].state == TaskState.RUNNING for n in long_names)
        return running and all(read_pids(folder / f"{n}.pids") for n in long_names)

    eventually(all_running, 25, "the long tasks to run")
    return workflow_id, long_names


def test_graceful_cancel_stops_running_attempts(cluster: Cluster, tmp_path: Path) -> None:
    # Slots 2 + 2 with no prefetch: the four long tasks fill the cluster and the rest wait.
    api = cluster.start({"alpha": 2, "beta": 2}, controller_flags=["--kill-grace", "2", "--prefetch", "0"])
    folder = tmp_path / "pids"
    folder.mkdir()
    workflow_id, long_names = _start_cancellable(api, folder, ignore_term=True)
    pids = [pid for n in long_names for pid in read_pids(folder / f"{n}.pids")]
    assert len(pids) >= 4 and len(pids_alive(pids)) == len(pids)

    cancelled = api.cancel(workflow_id, force=False)
    assert cancelled.state == WorkflowState.CANCELLING
    final = api.wait_done(workflow_id, timeout=30)
    assert final.state == WorkflowState.CANCELLED
    states = {t.name: t.state for t in final.tasks}
    assert set(states.values()) == {TaskState.CANCELLED}, states
    # The running attempts were stopped (long0 ignored SIGTERM: SIGKILL after the grace ended it).
    eventually(lambda: not pids_alive(pids), 15, f"the task processes {pids} to exit")
    by_name = {t.name: t for t in final.tasks}
    assert all(by_name[n].attempts == 1 for n in long_names)
    assert all(by_name[n].attempts == 0 for n in ("after0", "after1", "queued0", "queued1"))


def test_force_cancel_kills_running_attempts_at_once(cluster: Cluster, tmp_path: Path) -> None:
    api = cluster.start({"alpha": 2, "beta": 2}, controller_flags=["--kill-grace", "30", "--prefetch", "0"])
    folder = tmp_path / "pids"
    folder.mkdir()
    workflow_id, long_names = _start_cancellable(api, folder, ignore_term=True)
    pids = [pid for n in long_names for pid in read_pids(folder / f"{n}.pids")]
    assert len(pids_alive(pids)) == len(pids)

    cancelled = api.cancel(workflow_id, force=True)
    # A forced cancel ends every task at once; it does not wait for the agents.
    assert cancelled.state == WorkflowState.CANCELLED
    final = api.status(workflow_id)
    assert {t.state for t in final.tasks} == {TaskState.CANCELLED}
    # SIGKILL, not SIGTERM plus the 30 s grace: even the task ignoring SIGTERM is gone quickly.
    eventually(lambda: not pids_alive(pids), 15, f"the task processes {pids} to be killed")
    # The agents are free again: a new workflow runs on them.
    again = api.submit({"name": "after-cancel", "tasks": _sleepers(2, 0.1)})
    assert api.wait_done(again, timeout=20).state == WorkflowState.COMPLETED
