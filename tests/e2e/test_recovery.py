"""End to end: what survives a crash. Controller ``kill -9`` and restart, agent ``kill -9``, timeouts.

Tasks append ``'<task name> <attempt id>'`` to a ledger file as the very last thing they do, so the
ledger counts how many times each task really ran to the end, whatever the controller believes.
"""

from __future__ import annotations

import json
import queue
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from corral.v1 import agent_pb2, types_pb2
from tests.e2e.conftest import TASKS_DIR, Cluster, TaskState, WorkflowState, eventually, pids_alive, read_pids

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

PY = sys.executable
# Run by path: tasks start from a clean environment (no PYTHONPATH from the agent).
SUM_SCRIPT = TASKS_DIR / "e2e_tasks.py"


def _read_ledger(path: Path) -> dict[str, list[str]]:
    """Task name -> the attempt ids that ran it to the end, in order."""
    runs: dict[str, list[str]] = defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            name, attempt_id = line.split()
            runs[name].append(attempt_id)
    return dict(runs)


def _ledger_task(name: str, deps: list[str], k: int, ledger: Path, seconds: float, shell: bool) -> dict[str, Any]:
    """A task worth sum(inputs) + k that works ``seconds``, then writes its ledger line."""
    if shell:
        script = (
            f"sleep {seconds}; "
            f'result=$("{PY}" "{SUM_SCRIPT}" sum {k} | tail -n 1); '
            f"echo $CORRAL_TASK_NAME $CORRAL_ATTEMPT_ID >> {ledger}; "
            'echo "$result"'
        )
        body: dict[str, Any] = {"agent_type": "shell", "payload": {"shell": script}}
    else:
        kwargs = {"ledger": str(ledger), "k": k, "seconds": seconds}
        body = {"agent_type": "python", "payload": {"function": "e2e_tasks:ledger_sum", "kwargs": kwargs}}
    return {"name": name, "dependencies": deps, **body}


def test_controller_kill9_and_restart_loses_nothing_and_reruns_nothing_completed(
    cluster: Cluster, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    api = cluster.start({"alpha": 2, "beta": 2})
    agent_pids = {name: agent.pid for name, agent in cluster.agents.items()}

    # Five layers of five tasks; each layer depends on the whole previous one (fan-in and fan-out).
    tasks, expected = [], {}
    previous: list[str] = []
    for layer in range(5):
        names = [f"l{layer}-{i}" for i in range(5)]
        for i, name in enumerate(names):
            # 0.4 to 2 s of work: at the kill some attempts are about to finish, others run on
            # through the restart and are re-adopted when their agent reconnects.
            seconds = 0.4 + 0.4 * i
            tasks.append(_ledger_task(name, previous, i, ledger, seconds=seconds, shell=(layer + i) % 2 == 0))
            expected[name] = sum(expected[d] for d in previous) + i
        previous = names
    workflow_id = api.submit({"name": "crash-me", "tasks": tasks})

    def mid_run() -> types_pb2.WorkflowStatus | None:
        status = api.status(workflow_id)
        states = Counter(t.state for t in status.tasks)
        return status if states[TaskState.COMPLETED] >= 6 and states[TaskState.RUNNING] >= 1 else None

    before = eventually(mid_run, 30, "the workflow to be half way")
    cluster.controller.kill9()
    completed_before = {t.name: t.attempt_id for t in before.tasks if t.state == TaskState.COMPLETED}
    running_before = {t.name: t.attempt_id for t in before.tasks if t.state == TaskState.RUNNING}
    assert completed_before and running_before
    assert before.state == WorkflowState.RUNNING

    time.sleep(1.0)  # the agents work on without a controller; their reports wait in their outboxes
    cluster.controller.start(["--adopt-grace", "3", "--reconnect-grace", "2"])
    api = cluster.api
    final = api.wait_done(workflow_id, timeout=40)

    assert final.state == WorkflowState.COMPLETED, final.error
    by_name = {t.name: t for t in final.tasks}
    assert set(by_name) == set(expected), "tasks were lost"
    assert all(t.state == TaskState.COMPLETED for t in final.tasks)
    assert {name: json.loads(t.result_json) for name, t in by_name.items()} == expected

    runs = _read_ledger(ledger)
    assert set(runs) == set(expected), f"never ran to the end: {set(expected) - set(runs)}"
    for name, attempt_id in completed_before.items():
        # Completed before the crash: ran exactly once, and the controller still credits that run.
        assert runs[name] == [attempt_id], f"{name} ran again after the restart: {runs[name]}"
        assert by_name[name].attempt_id == attempt_id
        assert by_name[name].attempts == 1
    for name, task in by_name.items():
        assert task.attempt_id in runs[name], f"{name}: the credited attempt never finished"
    # The agents were not restarted: they reconnected to the new controller by themselves.
    assert {name: agent.pid for name, agent in cluster.agents.items()} == agent_pids
    assert all(agent.process.alive() for agent in cluster.agents.values())
    assert api.connected_agents() == {"alpha", "beta"}
    # Attempts running at the kill were normally re-adopted (or their queued report accepted); one
    # whose agent reconnected after the adoption grace may have been requeued, which is also allowed.
    kept = sorted(name for name, attempt_id in running_before.items() if by_name[name].attempt_id == attempt_id)
    print(f"\ncompleted before the kill: {len(completed_before)}; running: {len(running_before)}, kept: {kept}")


def test_agent_kill9_requeues_its_attempts_and_fences_late_reports(cluster: Cluster) -> None:
    # Short lease and fence times so the test is quick: lost after 3 s, its attempts requeued once
    # their supervisors must have fenced themselves (6 s + the 2 s kill grace + a margin).
    fencing = ["--adopt-grace", "0", "--lease", "3", "--fence-after", "6", "--kill-grace", "2"]
    api = cluster.start({"doomed": 2}, controller_flags=fencing)
    # Long enough to be still running when the agent is killed (its start is seconds after theirs).
    slow = {"slow-a": 10, "slow-b": 20}
    tasks: list[dict[str, Any]] = [
        {"name": name, "agent_type": "shell", "payload": {"shell": f"sleep 8; echo {value}"}}
        for name, value in slow.items()
    ]
    tasks.append(
        {"name": "join", "agent_type": "python", "dependencies": list(slow), "payload": {"function": "e2e_tasks:plus"}}
    )
    workflow_id = api.submit({"name": "lose-an-agent", "tasks": tasks})

    def running_on_doomed() -> dict[str, types_pb2.TaskStatus] | None:
        states = api.tasks(workflow_id)
        ok = all(states[n].state == TaskState.RUNNING and states[n].agent_id == "doomed" for n in slow)
        return states if ok else None

    at_kill = eventually(running_on_doomed, 20, "both slow tasks running on the doomed agent")
    old_attempts = {name: at_kill[name].attempt_id for name in slow}
    cluster.start_agent("survivor", slots=2)
    api.wait_agents(["survivor"])

    cluster.agents["doomed"].kill9()
    killed_at = time.monotonic()

    def moved() -> bool:
        states = api.tasks(workflow_id)
        return all(
            states[n].agent_id == "survivor" and states[n].state in (TaskState.RUNNING, TaskState.COMPLETED)
            for n in slow
        )

    # Requeued at fence-after + grace + margin (8.6 s) after the last heartbeat: 3x slack.
    eventually(moved, 30, "the lost attempts to run on the surviving agent")
    print(f"\nrequeued on the other agent {time.monotonic() - killed_at:.1f} s after kill -9")

    final = api.wait_done(workflow_id, timeout=30)
    assert final.state == WorkflowState.COMPLETED, final.error
    by_name = {t.name: t for t in final.tasks}
    assert json.loads(by_name["join"].result_json) == 30
    for name, value in slow.items():
        task = by_name[name]
        assert json.loads(task.result_json) == value
        assert task.agent_id == "survivor"
        assert task.attempts == 2
        assert task.retries_used == 0, "a lost agent must not spend a retry"
        assert task.attempt_id != old_attempts[name]

    # The dead agent "comes back" with a late success for its fenced attempt: told to kill it,
    # the report is acknowledged (so the agent can forget it) but changes nothing.
    stale = old_attempts["slow-a"]
    before = by_name["slow-a"]
    outgoing: queue.Queue[agent_pb2.AgentMessage | None] = queue.Queue()
    outgoing.put(
        agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_id="doomed", name="doomed", running_attempt_ids=[stale]))
    )
    call = api.gateway.Connect(iter(outgoing.get, None), timeout=30)
    try:
        first = next(call)
        assert first.WhichOneof("kind") == "welcome"
        assert stale in first.welcome.kill_attempt_ids
        finished = agent_pb2.Finished(outcome=types_pb2.ATTEMPT_OUTCOME_SUCCEEDED, exit_code=0, result_json=b'"bogus"')
        outgoing.put(
            agent_pb2.AgentMessage(
                events=agent_pb2.TaskEvents(events=[agent_pb2.TaskEvent(attempt_id=stale, finished=finished)])
            )
        )
        acked = False
        for message in call:
            if message.WhichOneof("kind") == "ack" and stale in message.ack.attempt_ids:
                acked = True
                break
        assert acked, "the late report was never acknowledged"
    finally:
        outgoing.put(None)
        call.cancel()

    after = api.tasks(workflow_id)["slow-a"]
    assert after.state == TaskState.COMPLETED
    assert after.result_json == before.result_json
    assert json.loads(after.result_json) == 10
    assert after.attempt_id == before.attempt_id
    assert after.attempts == before.attempts
    assert after.agent_id == "survivor"
    assert api.status(workflow_id).state == WorkflowState.COMPLETED


_TREE_SCRIPT = """\
pids="$PIDS_DIR/$CORRAL_ATTEMPT_ID.pids"
echo $$ >> "$pids"
sh -c 'echo $$ >> "$1"; exec sleep 1000' child "$pids" &
sh -c 'sh -c "echo \\$\\$ >> \\"\\$1\\"; exec sleep 1000" grandchild "$1" & echo $$ >> "$1"; wait' child "$pids" &
setsid sh -c 'echo $$ >> "$1"; exec sleep 1000' escaped "$pids" &
wait
"""


def test_timeout_kills_the_process_tree_and_retries(cluster: Cluster, tmp_path: Path) -> None:
    pids_dir = tmp_path / "pids"
    pids_dir.mkdir()
    script = tmp_path / "tree.sh"
    script.write_text(_TREE_SCRIPT)
    api = cluster.start({"alpha": 1, "beta": 1})
    spec = {
        "name": "too-slow",
        "tasks": [
            {
                "name": "sleeper",
                "agent_type": "shell",
                "payload": {"command": ["/bin/sh", str(script)], "env": {"PIDS_DIR": str(pids_dir)}},
                "timeout": 3,
                "retries": 1,
                "retry_backoff": 0.2,
            },
            {"name": "after", "dependencies": ["sleeper"], "agent_type": "shell", "payload": {"shell": "echo 1"}},
        ],
    }
    workflow_id = api.submit(spec)
    per_attempt = 5  # the shell, a child, a child shell and its child, and one that left the group

    def first_attempt_pids() -> tuple[str, list[int]] | None:
        task = api.tasks(workflow_id)["sleeper"]
        pids = read_pids(pids_dir / f"{task.attempt_id}.pids") if task.attempt_id else []
        return (task.attempt_id, pids) if len(pids) == per_attempt else None

    first_attempt, first_pids = eventually(first_attempt_pids, 20, "the first attempt's process tree")
    assert pids_alive(first_pids) == first_pids

    def second_attempt() -> types_pb2.TaskStatus | None:
        task = api.tasks(workflow_id)["sleeper"]
        return task if task.attempts == 2 and task.attempt_id != first_attempt else None

    retry = eventually(second_attempt, 20, "the retry")
    # The timed-out attempt's whole tree was gone before its failure was reported and retried.
    assert pids_alive(first_pids) == [], f"survived the timeout: {pids_alive(first_pids)}"

    final = api.wait_done(workflow_id, timeout=30)
    assert final.state == WorkflowState.FAILED
    by_name = {t.name: t for t in final.tasks}
    sleeper = by_name["sleeper"]
    assert sleeper.state == TaskState.FAILED
    assert sleeper.attempts == 2
    assert sleeper.retries_used == 1
    assert sleeper.attempt_id == retry.attempt_id
    assert "timed out" in sleeper.error
    assert by_name["after"].state == TaskState.SKIPPED
    second_pids = read_pids(pids_dir / f"{retry.attempt_id}.pids")
    assert len(second_pids) == per_attempt
    assert pids_alive(first_pids + second_pids) == []
