"""The per-attempt supervisor with real processes and real cgroups: trees die, nothing escapes or stays
a zombie, timeouts end at timeout + grace whatever holds the pipes, fencing, limits, adoption."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from corral.agent import adopt, cgroup
from corral.agent.attempt import AttemptResult, StopReason
from corral.agent.lease import LeaseFile, boottime
from corral.agent.runner import ShellContext, SupervisedRun, kill_leftovers, start_shell
from corral.v1 import types_pb2

from .conftest import REPO, eventually, shell_task

SUCCEEDED = types_pb2.ATTEMPT_OUTCOME_SUCCEEDED
FAILED = types_pb2.ATTEMPT_OUTCOME_FAILED
TIMED_OUT = types_pb2.ATTEMPT_OUTCOME_TIMED_OUT
CANCELLED = types_pb2.ATTEMPT_OUTCOME_CANCELLED
FENCED = types_pb2.ATTEMPT_OUTCOME_FENCED

HAS_CGROUP = os.geteuid() == 0 and cgroup.detect() is not None
needs_cgroup = pytest.mark.skipif(not HAS_CGROUP, reason="needs root and a writable cgroup v1/v2 hierarchy")
# Both ways of owning a tree: the cgroup (when the host has one) and the subreaper alone.
TREE_MODES = [pytest.param(True, marks=needs_cgroup, id="cgroup"), pytest.param(False, id="subreaper")]

# A background process in its own session keeps stdout open long after the task's main process ends.
PIPE_HOLDER = "( setsid sh -c 'echo $$ >> pids; exec sleep 60' & ); echo $$ >> pids; sleep 1; echo 7"
# Ignores SIGTERM everywhere (inherited), holds stdout from a setsid process, double-forks a grandchild.
STUBBORN = (
    "trap '' TERM; "
    "( setsid sh -c 'echo $$ >> pids; exec sleep 60' & ); "
    "( sh -c 'sleep 61 & echo $! >> pids' & ); "
    "echo $$ >> pids; sleep 62; echo never"
)


@pytest.fixture(autouse=True)
def _kill_leftovers(tmp_path: Path) -> Iterator[None]:
    """A failed test must not leave a supervisor (and its task) running on the host: stop them all."""
    yield
    root = tmp_path / "supervise"
    for control in root.iterdir() if root.is_dir() else []:
        if adopt.supervisor_alive(control):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int((control / "supervisor.pid").read_text()), signal.SIGKILL)
        try:
            task_pid = int((control / "task.pid").read_text())
        except (OSError, ValueError):
            task_pid = 0
        kill_leftovers(control, task_pid)


def _id(name: str) -> str:
    # Unique per run: cgroups and the process marker are host-wide, other test runs share them.
    return f"{name}-{uuid.uuid4().hex[:10]}"


def _ctx(tmp_path: Path, *, cgroups: bool = True, grace: float = 0.5, **kw: Any) -> ShellContext:
    return ShellContext(work_dir=tmp_path, output_cap=1 << 20, kill_grace_s=grace, cgroups=cgroups, **kw)


def _pids(tmp_path: Path, attempt_id: str) -> list[int]:
    path = tmp_path / "attempts" / attempt_id / "pids"
    return [int(w) for w in path.read_text().split()] if path.exists() else []


def _marked(attempt_id: str) -> list[int]:
    """Live processes carrying the attempt's CORRAL_ATTEMPT_ID (every process of its tree does)."""
    found = []
    needle = f"CORRAL_ATTEMPT_ID={attempt_id}".encode()
    for proc in psutil.process_iter():
        try:
            with open(f"/proc/{proc.pid}/environ", "rb") as file:
                if needle in file.read().split(b"\0"):
                    found.append(proc.pid)
        except OSError:
            continue
    return found


def _gone(pid: int) -> bool:
    """Not running and not a zombie either (reaped)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_DEAD
    except psutil.NoSuchProcess:
        return True


def _assert_clean(tmp_path: Path, attempt_id: str, run: SupervisedRun | None = None, *, reaped: bool = True) -> None:
    pids = _pids(tmp_path, attempt_id)
    if run is not None:
        pids.append(run.pid)
    assert [p for p in pids if not _gone(p)] == [], "a process of the tree is alive or a zombie"
    assert _marked(attempt_id) == [], "a process of the attempt is alive"
    if run is not None and reaped:
        assert _gone(run.supervisor_pid), "the supervisor is alive or a zombie"
    described = tmp_path / "supervise" / attempt_id / "cgroup.json"
    if described.exists():
        description = json.loads(described.read_text())
        assert cgroup.load(description) is None, "the attempt's cgroup was not removed"
        # The agent's level above it (unique to this work dir) went too, once empty.
        for directory in description.get("dirs", {}).values() or [description.get("path")]:
            assert not Path(directory).parent.exists(), directory


async def _start(assignment: types_pb2.TaskAssignment, ctx: ShellContext) -> SupervisedRun:
    run = await start_shell(assignment, ctx)
    assert isinstance(run, SupervisedRun), run
    return run


@pytest.mark.parametrize("use_cgroup", TREE_MODES)
async def test_a_pipe_holding_background_process_does_not_delay_the_end(tmp_path: Path, use_cgroup: bool) -> None:
    attempt_id = _id("holder")
    started = time.monotonic()
    run = await _start(shell_task(attempt_id, PIPE_HOLDER), _ctx(tmp_path, cgroups=use_cgroup))
    result = await run.finish()
    elapsed = time.monotonic() - started
    assert result.outcome == SUCCEEDED, result
    assert result.result_json == b"7"
    assert elapsed < 3.0, elapsed  # a 1 s task; before the supervisor it waited 60 s on the pipe
    assert len(_pids(tmp_path, attempt_id)) == 2
    _assert_clean(tmp_path, attempt_id, run)
    stdout, _, truncated = run.take_output()
    assert stdout == b"7\n" and not truncated


@pytest.mark.parametrize("use_cgroup", TREE_MODES)
async def test_a_pid_hopping_forker_cannot_run_away(tmp_path: Path, use_cgroup: bool) -> None:
    attempt_id = _id("hopper")
    # Each process forks a child, which leaves for a session of its own, and exits at once: a group
    # kill misses it and a tree walk always finds a new pid. The main process exits first, so the
    # whole chain must be killed as "what is left of the tree".
    hopper = (
        "import os\n"
        "if os.fork() == 0:\n"
        "    while True:\n"
        "        if os.fork():\n"
        "            os._exit(0)\n"
        "        os.setsid()\n"
    )
    run = await _start(shell_task(attempt_id, command=["python3", "-c", hopper]), _ctx(tmp_path, cgroups=use_cgroup))
    result = await asyncio.wait_for(run.finish(), 20.0)
    assert result.outcome == SUCCEEDED, result
    await eventually(lambda: _marked(attempt_id) == [], timeout=5.0, what="the hopping chain to be dead")
    _assert_clean(tmp_path, attempt_id, run)


@pytest.mark.parametrize("use_cgroup", TREE_MODES)
async def test_timeout_ends_at_timeout_plus_grace_whatever_the_tree_does(tmp_path: Path, use_cgroup: bool) -> None:
    attempt_id = _id("stubborn")
    assignment = shell_task(attempt_id, STUBBORN, timeout_s=2.0)
    run = await _start(assignment, _ctx(tmp_path, cgroups=use_cgroup, grace=1.0))
    started = time.monotonic()  # the attempt's Started
    await eventually(lambda: len(_pids(tmp_path, attempt_id)) == 3, what="the tree to start")
    result = await run.finish()
    elapsed = time.monotonic() - started
    assert result.outcome == TIMED_OUT, result
    # Never before the timeout; the end (2 s + 1 s grace) with 3x slack. make chaos measures it.
    print(f"\nended {elapsed:.2f} s after Started (timeout 2 s + grace 1 s)")
    assert 2.0 <= elapsed <= 3 * 3.0, elapsed
    _assert_clean(tmp_path, attempt_id, run)


_INTERMEDIATE = """
import asyncio, sys
from pathlib import Path
from corral.agent.runner import ShellContext, start_shell
from corral.v1 import types_pb2

async def main():
    assignment = types_pb2.TaskAssignment(
        attempt_id=sys.argv[2], task_id="t", agent_type="shell",
        payload_json=b'{"shell": "echo early; while [ ! -e go ]; do sleep 0.05; done; echo late; echo 42"}',
    )
    run = await start_shell(assignment, ShellContext(work_dir=Path(sys.argv[1]), output_cap=1 << 20))
    print(run.pid, flush=True)
    await asyncio.sleep(1000)

asyncio.run(main())
"""


async def test_the_supervisor_outlives_its_agent_and_is_adopted(tmp_path: Path) -> None:
    attempt_id = _id("adopt")
    # The "agent": a process that starts the attempt and is then SIGKILLed with its whole process group.
    agent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _INTERMEDIATE,
        str(tmp_path),
        attempt_id,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
        start_new_session=True,
    )
    assert agent.stdout is not None
    task_pid = int((await asyncio.wait_for(agent.stdout.readline(), 20.0)).strip())
    log = tmp_path / "supervise" / attempt_id / "stdout.log"
    await eventually(lambda: log.exists() and b"early" in log.read_bytes(), what="the first output")
    os.killpg(agent.pid, signal.SIGKILL)
    await agent.wait()
    assert psutil.Process(task_pid).is_running(), "the task died with its agent"

    found = adopt.scan(tmp_path, None)
    assert [a.attempt_id for a in found] == [attempt_id]
    run = found[0].run
    assert isinstance(run, SupervisedRun) and found[0].result is None and not found[0].died
    assert run.pid == task_pid  # the same task, not a restart
    assert run.take_output()[0] == b""  # what the dead agent had: not streamed twice
    (tmp_path / "attempts" / attempt_id / "go").touch()
    result = await asyncio.wait_for(run.finish(), 20.0)
    assert result.outcome == SUCCEEDED, result
    assert result.result_json == b"42"
    assert run.take_output()[0] == b"late\n42\n"
    # The supervisor was reparented away from us: only check that it has exited.
    assert not psutil.pid_exists(run.supervisor_pid) or psutil.Process(run.supervisor_pid).status() in (
        psutil.STATUS_ZOMBIE,
        psutil.STATUS_DEAD,
    )
    _assert_clean(tmp_path, attempt_id, reaped=False)

    # Scanned again, the finished attempt is reported from its status file; removed after the ack.
    again = adopt.scan(tmp_path, None)
    assert [(a.attempt_id, a.result) for a in again] == [(attempt_id, result)]
    adopt.remove(tmp_path, attempt_id)
    assert adopt.scan(tmp_path, None) == []
    assert not (tmp_path / "attempts" / attempt_id).exists()


async def test_a_supervisor_dead_without_status_died_with_the_agent(tmp_path: Path) -> None:
    attempt_id = _id("died")
    run = await _start(shell_task(attempt_id, "echo $$ >> pids; sleep 60"), _ctx(tmp_path))
    await eventually(lambda: _pids(tmp_path, attempt_id), what="the task to start")
    os.kill(run.supervisor_pid, signal.SIGKILL)
    result = await run.finish()
    # Its task is killed (cgroup, or its tree by pid once it is sure the pid is still the attempt's).
    assert result.outcome == FAILED and "supervisor died" in result.error
    await eventually(lambda: _marked(attempt_id) == [], what="the orphaned task to be killed")
    # A restarted agent finds no status: died with the agent, folders removed.
    (tmp_path / "supervise" / attempt_id / "status.json").unlink(missing_ok=True)
    assert adopt.scan(tmp_path, None) == [adopt.Adopted(attempt_id, died=True)]
    assert not (tmp_path / "supervise" / attempt_id).exists()


# -- fencing ------------------------------------------------------------------------------------------


async def test_an_expiring_lease_fences_a_stop_attempt(tmp_path: Path) -> None:
    lease = LeaseFile(tmp_path / "lease")
    lease.renew(boottime() + 1.5)
    attempt_id = _id("fence")
    started = time.monotonic()
    run = await _start(
        shell_task(attempt_id, "trap '' TERM; echo $$ >> pids; sleep 60"), _ctx(tmp_path, lease_path=lease.path)
    )
    result = await run.finish()
    elapsed = time.monotonic() - started
    assert result.outcome == FENCED, result
    assert "fenced" in result.error and result.retryable
    # Killed at lease (1.5 s, read every 0.5 s) + grace (0.5 s: it ignores SIGTERM).
    print(f"\nfenced {elapsed:.2f} s after Started")
    assert 1.9 <= elapsed <= 3 * 2.5, elapsed  # not before the lease; 3x slack on lease + check + grace
    _assert_clean(tmp_path, attempt_id, run)


async def test_a_removed_lease_file_fences(tmp_path: Path) -> None:
    lease = LeaseFile(tmp_path / "lease")
    lease.renew(boottime() + 600)
    attempt_id = _id("unleased")
    run = await _start(shell_task(attempt_id, "sleep 60"), _ctx(tmp_path, lease_path=lease.path))
    lease.path.unlink()
    result = await asyncio.wait_for(run.finish(), 10.0)
    assert result.outcome == FENCED, result
    _assert_clean(tmp_path, attempt_id, run)


async def test_an_expired_lease_refuses_the_start(tmp_path: Path) -> None:
    lease = LeaseFile(tmp_path / "lease")
    lease.renew(boottime() - 1.0)
    attempt_id = _id("late")
    result = await start_shell(shell_task(attempt_id, "touch started"), _ctx(tmp_path, lease_path=lease.path))
    assert isinstance(result, AttemptResult) and result.outcome == FENCED, result
    assert not (tmp_path / "attempts" / attempt_id / "started").exists()


async def test_a_keep_attempt_runs_through_an_expired_lease(tmp_path: Path) -> None:
    lease = LeaseFile(tmp_path / "lease")
    lease.renew(boottime() - 1.0)
    attempt_id = _id("keep")
    assignment = shell_task(attempt_id, "sleep 1.2; echo 5")
    assignment.on_disconnect = types_pb2.ON_DISCONNECT_KEEP
    run = await _start(assignment, _ctx(tmp_path, lease_path=lease.path))
    result = await run.finish()
    assert result.outcome == SUCCEEDED and result.result_json == b"5", result


# -- limits ---------------------------------------------------------------------------------------------


@needs_cgroup
async def test_memory_limit_oom_kills_and_says_so(tmp_path: Path) -> None:
    attempt_id = _id("oom")
    assignment = shell_task(attempt_id, command=["python3", "-c", "x = b'x' * (400 << 20); print('survived')"])
    assignment.resources.memory_mb = 64
    run = await _start(assignment, _ctx(tmp_path))
    result = await asyncio.wait_for(run.finish(), 20.0)
    assert result.outcome == FAILED, result
    assert result.oom_killed
    assert result.error == "out of memory (limit 64 MB)"
    _assert_clean(tmp_path, attempt_id, run)


@needs_cgroup
async def test_pids_limit_holds_a_fork_bomb(tmp_path: Path) -> None:
    attempt_id = _id("forks")
    # 200 forks (each child sleeping), then it stays alive itself: the limit must hold them at 20.
    bomb = (
        "import os, sys, time\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "    except OSError as exc:\n"
        "        print('fork refused:', exc, flush=True)\n"
        "        break\n"
        "time.sleep(60)\n"
    )
    run = await _start(shell_task(attempt_id, command=["python3", "-c", bomb]), _ctx(tmp_path, pids_max=20))
    control = tmp_path / "supervise" / attempt_id
    await eventually(lambda: b"fork refused" in (control / "stdout.log").read_bytes(), what="a refused fork")
    assert 0 < len(_marked(attempt_id)) <= 20
    run.request_stop(StopReason.CANCELLED, force=True, grace_s=0)
    result = await asyncio.wait_for(run.finish(), 10.0)
    assert result.outcome in (CANCELLED, FAILED), result
    _assert_clean(tmp_path, attempt_id, run)


# -- stop requests ----------------------------------------------------------------------------------


async def test_cancel_with_grace_lets_sigterm_work(tmp_path: Path) -> None:
    attempt_id = _id("grace")
    script = "trap 'echo bye; exit 0' TERM; echo $$ >> pids; sleep 60 & echo $! >> pids; wait"
    run = await _start(shell_task(attempt_id, script), _ctx(tmp_path))
    await eventually(lambda: len(_pids(tmp_path, attempt_id)) == 2, what="the task to start")
    started = time.monotonic()
    run.request_stop(StopReason.CANCELLED, force=False, grace_s=30.0)
    result = await asyncio.wait_for(run.finish(), 10.0)
    assert result.outcome == CANCELLED, result
    assert time.monotonic() - started < 5.0  # SIGTERM was enough: the 30 s grace is not waited out
    assert run.take_output()[0].endswith(b"bye\n")
    _assert_clean(tmp_path, attempt_id, run)


async def test_a_forced_stop_escalates_a_graceful_one(tmp_path: Path) -> None:
    attempt_id = _id("force")
    run = await _start(shell_task(attempt_id, STUBBORN), _ctx(tmp_path))
    await eventually(lambda: len(_pids(tmp_path, attempt_id)) == 3, what="the tree to start")
    started = time.monotonic()
    run.request_stop(StopReason.CANCELLED, force=False, grace_s=60.0)
    run.request_stop(StopReason.CANCELLED, force=False, grace_s=60.0)  # idempotent
    run.request_stop(StopReason.CANCELLED, force=True, grace_s=60.0)
    result = await asyncio.wait_for(run.finish(), 10.0)
    assert result.outcome == CANCELLED, result
    assert time.monotonic() - started < 5.0
    _assert_clean(tmp_path, attempt_id, run)


# -- the fork server -----------------------------------------------------------------------------------


async def test_the_fork_server_is_restarted_when_it_died(tmp_path: Path) -> None:
    from corral.agent import supervised

    first = await _start(shell_task(_id("fs"), "echo 1"), _ctx(tmp_path))
    assert (await first.finish()).result_json == b"1"
    server = supervised._FORK_SERVER._proc
    assert server is not None and server.poll() is None
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    # The next attempt notices, starts a new server, and runs; a supervisor is never our child.
    second = await _start(shell_task(_id("fs"), "echo 2"), _ctx(tmp_path))
    assert (await second.finish()).result_json == b"2"
    assert supervised._FORK_SERVER._proc is not None and supervised._FORK_SERVER._proc.pid != server.pid
    assert second.supervisor_pid not in [c.pid for c in psutil.Process().children()]


async def test_a_repeated_start_attaches_instead_of_running_twice(tmp_path: Path) -> None:
    attempt_id = _id("twice")
    ctx = _ctx(tmp_path)
    first = await _start(shell_task(attempt_id, "echo $$ >> pids; sleep 60"), ctx)
    await eventually(lambda: _pids(tmp_path, attempt_id), what="the task to start")
    second = await _start(shell_task(attempt_id, "echo $$ >> pids; sleep 60"), ctx)
    assert second.pid == first.pid and second.supervisor_pid == first.supervisor_pid
    second.request_stop(StopReason.CANCELLED, force=True, grace_s=0)
    assert (await asyncio.wait_for(first.finish(), 10.0)).outcome == CANCELLED
    assert (await asyncio.wait_for(second.finish(), 10.0)).outcome == CANCELLED
    assert len(_pids(tmp_path, attempt_id)) == 1
    _assert_clean(tmp_path, attempt_id, first)
