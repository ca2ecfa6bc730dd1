"""Issue 12: a watch and an agent given a list of controllers survive the leader's death.

Real processes: a controller and an agent; a real gRPC standby stand-in (tests/standby.py) whose
``corral-leader`` hint moves to the new controller once it runs. The controller is killed (-9) in
the middle of a task and a new one starts on the same database at another port (the new leader):
the watch resumes there after the last event it saw, and the agent re-attaches there with its
running attempt, which completes once (it is re-adopted, not re-run).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from corral.controller.sdk import Client, Workflow, WorkflowEvent
from tests.procs import start_agent, start_controller, stop
from tests.standby import start_standby

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]  # a controller kill -9: make chaos


async def test_a_watch_and_an_agent_follow_a_new_leader(tmp_path: Path) -> None:
    leader, first = await asyncio.to_thread(start_controller, tmp_path)
    standby = await start_standby(first)
    addresses = f"{first},{standby.address}"
    marker = tmp_path / "runs"
    agent = start_agent(tmp_path, addresses, "follower", slots=1)
    successor = None
    try:
        wf = Workflow("survivor")
        # Appends one line per run: a re-run (instead of a re-adoption) would show as two lines.
        wf.shell("slow", shell=f"echo run >> {marker}; sleep 3; echo '{{\"ok\": 1}}'")
        async with Client(addresses) as client:
            await _wait_connected(client, "follower")
            submission = await client.submit(wf)
            events: list[WorkflowEvent] = []
            async for event in client.watch(submission.workflow_id):
                events.append(event)
                if successor is None and event.task_name == "slow" and event.task_state == "running":
                    leader.send_signal(signal.SIGKILL)
                    await asyncio.to_thread(leader.wait)
                    successor, second = await asyncio.to_thread(start_controller, tmp_path)
                    standby.leader = second  # the new leader, as a real standby would name it
            assert client.address == second
            result = await client.wait(submission.workflow_id, timeout=30)
        assert result.state == "completed" and result.results == {"slow": {"ok": 1}}
        assert events[-1].is_final and events[-1].workflow_state == "completed"
        # A (re)opened watch starts with the current state (seq 0), then the stored events after it.
        seqs = [e.seq for e in events if e.seq]
        assert seqs == sorted(set(seqs))  # no stored event twice, none out of order
        assert sum(e.seq == 0 and not e.is_task_event for e in events) == 2  # two streams: one per leader
        assert marker.read_text().splitlines() == ["run"]
        assert "WatchWorkflow" in standby.methods and "Connect" in standby.methods
    finally:
        await asyncio.to_thread(stop, agent)
        if successor is not None:
            await asyncio.to_thread(stop, successor)
        if leader.poll() is None:
            await asyncio.to_thread(stop, leader)
        await standby.stop()


async def _wait_connected(client: Client, name: str, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not any(a.name == name and a.state == "connected" for a in await client.list_agents()):
            await asyncio.sleep(0.1)
