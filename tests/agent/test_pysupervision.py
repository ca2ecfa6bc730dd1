"""Warm python workers supervise their tasks: tree kills, no leftovers, self-fencing, surviving the agent.

Real workers, real subprocesses, real cgroups (v1, as root; the cgroup cases skip otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from corral.agent import pywatch
from corral.agent.attempt import AttemptResult
from corral.agent.executor import Executor
from corral.agent.pycgroup import cgroup_root, remove_pool
from corral.agent.pypool import WorkerPool
from corral.agent.pyreap import settle_orphans
from corral.v1 import types_pb2

from .conftest import REPO, RecordingSink, eventually

SUCCEEDED = types_pb2.ATTEMPT_OUTCOME_SUCCEEDED
TIMED_OUT = types_pb2.ATTEMPT_OUTCOME_TIMED_OUT
FENCED = types_pb2.ATTEMPT_OUTCOME_FENCED
GRACE_S = 0.5


def task(attempt_id: str, function: str, *args: Any, timeout_s: float = 0, keep: bool = False) -> Any:
    """A python assignment of ``tests.agent.pysup_tasks:<function>``."""
    payload = {"function": f"tests.agent.pysup_tasks:{function}", "args": list(args)}
    return types_pb2.TaskAssignment(
        attempt_id=attempt_id,
        task_id=f"task-{attempt_id}",
        workflow_id="wf-1",
        task_name=attempt_id,
        agent_type="python",
        payload_json=json.dumps(payload).encode(),
        timeout_s=timeout_s,
        attempt_number=1,
        on_disconnect=types_pb2.ON_DISCONNECT_KEEP if keep else types_pb2.ON_DISCONNECT_STOP,
    )


def gone(pid: int) -> bool:
    """No such process, or only its zombie (this machine's init does not reap)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def in_cgroup(pid: int) -> bool:
    return "corral-py/" in Path(f"/proc/{pid}/cgroup").read_text()


Setup = Callable[..., Awaitable[tuple[Executor, WorkerPool]]]


@pytest.fixture
async def setup(tmp_path: Path, sink: RecordingSink, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Setup]:
    """An executor with one warm worker (cgroups on or off) and a kill grace of 0.5 s."""
    made: list[tuple[Executor, WorkerPool]] = []

    async def make(*, cgroups: bool = False, workers: int = 1) -> tuple[Executor, WorkerPool]:
        if cgroups:
            if cgroup_root() is None:
                pytest.skip("needs root and cgroup v1 memory/pids/freezer under /sys/fs/cgroup")
        else:
            monkeypatch.setenv("CORRAL_CGROUP_ROOT", str(tmp_path / "no-cgroups"))
        pool = WorkerPool(workers, tmp_path, 1 << 20, [REPO], kill_grace_s=GRACE_S)
        await pool.start()
        executor = Executor(
            slots=workers, agent_types=("python",), work_dir=tmp_path, sink=sink, pool=pool, kill_grace_s=GRACE_S
        )
        executor.start()
        made.append((executor, pool))
        return executor, pool

    yield make
    for executor, pool in made:
        await executor.kill_all()
        await executor.close()
        await pool.close()


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroup", "subreaper"])
async def test_a_timeout_kills_the_whole_tree_at_timeout_plus_grace(
    setup: Setup, sink: RecordingSink, tmp_path: Path, cgroups: bool
) -> None:
    executor, pool = await setup(cgroups=cgroups)
    worker_pid = pool.pids[0]
    assert in_cgroup(worker_pid) is cgroups
    pid_file = tmp_path / "sleeper.pid"
    loop = asyncio.get_running_loop()
    began = loop.time()
    executor.submit([task("t1", "stubborn_double_fork", str(pid_file), 60, timeout_s=1.0)])
    result = await sink.result("t1")
    elapsed = loop.time() - began
    assert result.outcome == TIMED_OUT, result
    # The task ignores SIGTERM, so the whole grace is spent; the sleeper holding stdout does not matter.
    print(f"\nended {elapsed:.2f} s after submit (timeout 1 s + grace {GRACE_S:g} s)")
    assert 1.0 <= elapsed <= 3 * (1.0 + GRACE_S), elapsed  # not before the timeout; 3x slack on the end
    sleeper = int(pid_file.read_text())
    assert gone(sleeper) and gone(worker_pid)
    # The worker was replaced, and its replacement serves the next task.
    executor.submit([task("t2", "mark_and_sleep", str(tmp_path / "m2"), 0, 3)])
    assert json.loads((await sink.result("t2")).result_json)["value"] == 3
    assert pool.pids != [worker_pid]


async def test_what_a_task_leaves_behind_is_killed_before_its_answer(
    setup: Setup, sink: RecordingSink, tmp_path: Path
) -> None:
    executor, _ = await setup()
    executor.submit([task("left", "leave_a_sleeper", str(tmp_path / "sleeper.pid"))])
    result = await sink.result("left")
    assert result.outcome == SUCCEEDED, result
    # Killed and reaped (by the task's process, its subreaper) before the answer was written.
    sleeper = json.loads(result.result_json)
    assert not psutil.pid_exists(sleeper)
    executor.submit([task("next", "mark_and_sleep", str(tmp_path / "m"), 0, 1)])
    assert (await sink.result("next")).outcome == SUCCEEDED
    assert sink.pids["next"] == sink.pids["left"]  # the same worker: a normal end does not retire it


async def test_the_task_process_dies_with_its_worker(setup: Setup, sink: RecordingSink, tmp_path: Path) -> None:
    executor, pool = await setup()
    marker = tmp_path / "marker"
    executor.submit([task("w1", "mark_and_sleep", str(marker), 60)])
    task_pid = int(await eventually(lambda: marker.exists() and marker.read_text(), what="the task"))
    os.kill(pool.pids[0], signal.SIGKILL)  # the OOM killer, say
    result = await sink.result("w1")
    assert result.outcome == types_pb2.ATTEMPT_OUTCOME_FAILED and result.retryable, result
    assert gone(task_pid)


async def test_a_worker_past_its_lease_fences_its_task(setup: Setup, sink: RecordingSink, tmp_path: Path) -> None:
    executor, pool = await setup(cgroups=cgroup_root() is not None)
    worker_pid = pool.pids[0]
    lease = tmp_path / "lease"
    lease.write_text(f"{pywatch._boottime() + 600:.3f}\n")
    marker = tmp_path / "marker"
    executor.submit([task("f1", "mark_and_sleep", str(marker), 60)])
    task_pid = int((await eventually(lambda: marker.exists() and marker.read_text(), what="the task")) or 0)
    loop = asyncio.get_running_loop()
    began = loop.time()
    lease.write_text(f"{pywatch._boottime() - 1:.3f}\n")  # the agent stopped renewing it
    result = await sink.result("f1")
    # A lease look every 0.5 s; SIGTERM ends the sleeping task at once.
    assert loop.time() - began < 3 * (pywatch.TICK_S + GRACE_S), loop.time() - began
    assert result.outcome == FENCED and result.error.startswith("fenced"), result
    assert gone(task_pid) and gone(worker_pid)
    # The fenced worker retired itself; a fresh one replaces it.
    await eventually(lambda: pool.pids and pool.pids != [worker_pid], what="a replacement worker")


async def test_a_stop_task_is_not_started_past_the_lease(setup: Setup, sink: RecordingSink, tmp_path: Path) -> None:
    executor, pool = await setup()
    worker_pid = pool.pids[0]
    (tmp_path / "lease").write_text(f"{pywatch._boottime() - 10:.3f}\n")
    marker = tmp_path / "marker"
    executor.submit([task("r1", "mark_and_sleep", str(marker), 0)])
    result = await sink.result("r1")
    assert result.outcome == FENCED and result.error == "fenced: not started", result
    assert not marker.exists()  # the function never ran
    # The worker stays; a keep task still runs on it.
    executor.submit([task("r2", "mark_and_sleep", str(marker), 0, 2, keep=True)])
    assert (await sink.result("r2")).outcome == SUCCEEDED
    assert pool.pids == [worker_pid] and sink.pids["r2"] == worker_pid


async def test_a_keep_task_runs_through_an_expired_lease(setup: Setup, sink: RecordingSink, tmp_path: Path) -> None:
    executor, _ = await setup()
    (tmp_path / "lease").write_text(f"{pywatch._boottime() - 10:.3f}\n")
    executor.submit([task("k1", "mark_and_sleep", str(tmp_path / "marker"), 1.2, 7, keep=True)])
    result = await sink.result("k1")
    assert result.outcome == SUCCEEDED, result
    assert json.loads(result.result_json)["value"] == 7


def test_a_missing_lease_counts_as_none_yet_only_until_one_appeared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr(pywatch, "_boottime", lambda: clock[0])
    shared = pywatch.Shared()
    lease = tmp_path / "lease"
    watcher = pywatch.Watcher(shared, {"lease": str(lease)}, -1, -1)
    assert not watcher._lease_expired()  # idle: never looked at
    shared.begin(b"a1", False, 0.0, 1.0)
    assert not watcher._lease_expired()  # no lease yet
    lease.write_text("150.000\n")
    assert not watcher._lease_expired()
    clock[0] = 150.5
    assert watcher._lease_expired()
    clock[0] = 120.0
    lease.unlink()
    assert watcher._lease_expired()  # gone after it had appeared
    shared.begin(b"a2", True, 0.0, 1.0)
    assert not watcher._lease_expired()  # keep: never fenced
    shared.idle()
    assert not watcher._lease_expired()


# -- the agent dies while a task runs ------------------------------------------------------------------

# The "agent": a pool that starts one task, says so, and waits to be killed.
_AGENT = """
import asyncio, json, sys
from pathlib import Path
from corral.agent.pypool import WorkerPool
from corral.agent.pyreap import settle_orphans
from corral.v1 import types_pb2

async def main():
    work, repo, spec = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    pool = WorkerPool(2, work, 1 << 20, [repo], kill_grace_s=0.5)
    await pool.start()
    assignment = types_pb2.TaskAssignment(
        attempt_id=spec["attempt_id"], task_id="t", workflow_id="wf", task_name="t", agent_type="python",
        payload_json=json.dumps(spec["payload"]).encode(), timeout_s=spec["timeout_s"], attempt_number=1)
    run = await pool.start_task(assignment, False)
    print(json.dumps({"worker": run.pid, "pids": pool.pids}), flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""

# What plays init (this machine's does not reap): a subreaper that reports every process it reaps.
_REAPER = """
import ctypes, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
agent = subprocess.Popen([sys.executable, "-c", sys.argv[1], *sys.argv[2:]])
print("agent " + str(agent.pid), flush=True)
while True:
    try:
        pid, _ = os.wait()
    except ChildProcessError:
        break
    print("reaped " + str(pid), flush=True)
"""


class Lines:
    """The reaper's stdout, line by line, with bounded waits."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.reaped: set[int] = set()
        assert proc.stdout is not None
        stdout = proc.stdout
        self.reader = threading.Thread(target=lambda: [self.lines.put(line.strip()) for line in stdout], daemon=True)
        self.reader.start()

    def next(self, timeout: float = 20.0) -> str:
        line = self.lines.get(timeout=timeout)
        if line.startswith("reaped "):
            self.reaped.add(int(line.split()[1]))
            return self.next(timeout)
        return line

    def wait_reaped(self, pids: set[int], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not pids <= self.reaped:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"not reaped: {pids - self.reaped}") from None
            if line.startswith("reaped "):
                self.reaped.add(int(line.split()[1]))


@pytest.fixture
def orphan_agent(tmp_path: Path) -> Iterator[Callable[..., tuple[Lines, int, dict[str, Any]]]]:
    procs: list[tuple[subprocess.Popen[str], Lines]] = []

    def start(attempt_id: str, payload: dict[str, Any], timeout_s: float = 0) -> tuple[Lines, int, dict[str, Any]]:
        spec = json.dumps({"attempt_id": attempt_id, "payload": payload, "timeout_s": timeout_s})
        argv = [sys.executable, "-c", _REAPER, _AGENT, str(tmp_path), str(REPO), spec]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        lines = Lines(proc)
        procs.append((proc, lines))
        agent_pid = int(lines.next().split()[1])
        return lines, agent_pid, json.loads(lines.next())

    yield start
    for proc, lines in procs:
        for child in psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []:
            child.kill()
        proc.kill()
        proc.wait()
        lines.reader.join(10)
        assert proc.stdout is not None
        proc.stdout.close()


def _wait_file(path: Path, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path.name}"
        time.sleep(0.02)
    return path.read_text()


def _lock_held(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_task_outlives_its_agent_and_leaves_its_result(tmp_path: Path, orphan_agent: Any) -> None:
    marker = tmp_path / "marker"
    payload = {"function": "tests.agent.pysup_tasks:mark_and_sleep", "args": [str(marker), 2.0, 5]}
    lines, agent_pid, started = orphan_agent("a1", payload)
    task_pid = int(_wait_file(marker))
    os.kill(agent_pid, signal.SIGKILL)
    control = tmp_path / "supervise" / "a1"
    # The worker noticed at once and took the task over: it holds the lock while the task runs.
    assert int(_wait_file(control / "task.pid", 5.0)) == task_pid
    assert int(_wait_file(control / "supervisor.pid")) == started["worker"]
    assert _lock_held(control / "lock")
    assert not (control / "status.json").exists()
    # Its worker lock says it took its task over (a restarted agent's settle_orphans waits for that).
    locks = {p.read_text().strip() for p in (tmp_path / "pyworkers").glob(f"worker-*.{agent_pid}.lock")}
    assert locks == {str(started["worker"]), ""}  # the busy worker; the idle one wrote nothing
    status = json.loads(_wait_file(control / "status.json"))
    assert status["outcome"] == "succeeded", status
    # The same process ran to the end.
    assert json.loads(status["result_json"]) == {"value": 5, "pid": task_pid}
    # With the usage the task's process measured, for the restarted agent's Finished report.
    assert status["peak_rss_bytes"] > 1 << 20 and status["cpu_s"] >= 0.0, status
    # Also where the shared adoption code reads results, and the cgroup to clean up through.
    assert (tmp_path / "attempts" / "a1" / "result.json").read_text() == status["result_json"]
    assert (control / "cgroup.json").exists() is (cgroup_root() is not None)
    # Every process of the workers (the busy one, its task, the idle one) ended and was reaped.
    lines.wait_reaped(set(started["pids"]))
    assert all(gone(pid) for pid in (task_pid, *started["pids"]))
    assert not _lock_held(control / "lock")


@pytest.mark.parametrize("how", ["timeout", "stop"])
def test_an_orphaned_worker_enforces_timeout_and_stop_requests(tmp_path: Path, orphan_agent: Any, how: str) -> None:
    marker = tmp_path / "marker"
    payload = {"function": "tests.agent.pysup_tasks:stubborn_double_fork", "args": [str(marker), 60]}
    timeout_s = 2.0 if how == "timeout" else 0
    lines, agent_pid, started = orphan_agent("a2", payload, timeout_s)
    sleeper = int(_wait_file(marker))
    os.kill(agent_pid, signal.SIGKILL)
    control = tmp_path / "supervise" / "a2"
    _wait_file(control / "supervisor.pid")
    began = time.monotonic()
    if how == "stop":
        (control / "stop").write_text(json.dumps({"reason": "cancelled", "grace_s": 0.3, "force": False}))
        os.kill(started["worker"], signal.SIGUSR1)
    status = json.loads(_wait_file(control / "status.json"))
    assert status["outcome"] == ("timed_out" if how == "timeout" else "cancelled"), status
    # Timeout 2 s (counted from the task's start) + 0.5 s grace; a stop: its 0.3 s grace.
    assert time.monotonic() - began < 3 * (timeout_s + GRACE_S), time.monotonic() - began
    lines.wait_reaped(set(started["pids"]))
    assert gone(sleeper)


async def test_a_detached_pool_leaves_its_task_to_its_worker_and_the_next_pool_spares_it(tmp_path: Path) -> None:
    first = WorkerPool(2, tmp_path, 1 << 20, [REPO], kill_grace_s=GRACE_S)
    await first.start()
    marker = tmp_path / "marker"
    run = await first.start_task(task("d1", "mark_and_sleep", str(marker), 1.5, 9), False)
    assert not isinstance(run, AttemptResult)
    task_pid = int(await eventually(lambda: marker.exists() and marker.read_text(), what="the task"))
    busy, idle = run.pid, next(pid for pid in first.pids if pid != run.pid)
    cgroups = [w.cgroup for w in first._all if w.cgroup is not None]
    first.detach()  # an agent going away without stopping its tasks
    second = WorkerPool(1, tmp_path, 1 << 20, [REPO], kill_grace_s=GRACE_S)
    try:
        await second.start()
        # The busy worker registers its task for the adoption scan; its folder stays.
        control = tmp_path / "supervise" / "d1"
        await eventually(lambda: (control / "supervisor.pid").exists(), what="the registration")
        assert int((control / "supervisor.pid").read_text()) == busy
        assert busy not in second.pids and (tmp_path / "pyworkers" / "worker-0").is_dir()
        assert list((tmp_path / "pyworkers").glob(f"worker-*.{os.getpid()}.lock"))
        status_file = control / "status.json"
        status = await eventually(lambda: status_file.exists() and json.loads(status_file.read_text()))
        assert status["outcome"] == "succeeded"
        assert json.loads(status["result_json"]) == {"value": 9, "pid": task_pid}
        await eventually(lambda: gone(busy) and gone(idle), what="the detached workers to exit")
        # The second pool still works.
        again = await second.start_task(task("d2", "mark_and_sleep", str(tmp_path / "m2"), 0, 1), False)
        assert not isinstance(again, AttemptResult)
        assert (await again.finish()).outcome == SUCCEEDED
    finally:
        await second.close()
        for pid in (busy, idle, task_pid):
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        await eventually(lambda: gone(busy) and gone(idle), what="the detached workers to exit")
        for cgroup in cgroups:
            cgroup.remove()
        root = cgroup_root()
        if root is not None:
            remove_pool(root, first._pool_name)


async def test_settling_waits_only_for_unregistered_workers_of_a_dead_agent(tmp_path: Path) -> None:
    folder = tmp_path / "pyworkers"
    folder.mkdir()
    gone_pid = psutil.Popen(["true"])  # a finished process: its pid is that of a dead agent
    gone_pid.wait()
    live_lock = folder / f"worker-0.{os.getpid()}.lock"  # a worker of a live pool: never waited for
    orphan_lock = folder / f"worker-3.{gone_pid.pid}.lock"
    live_lock.touch()
    orphan_lock.touch()
    fds = [os.open(live_lock, os.O_RDWR), os.open(orphan_lock, os.O_RDWR)]
    loop = asyncio.get_running_loop()
    try:
        for fd in fds:
            fcntl.flock(fd, fcntl.LOCK_EX)
        began = loop.time()
        await settle_orphans(tmp_path, timeout_s=0.3)
        assert loop.time() - began >= 0.3  # waited for the orphan, up to the bound
        os.write(fds[1], b"12345\n")  # what the orphan writes once its task is registered
        began = loop.time()
        await settle_orphans(tmp_path, timeout_s=10)
        assert loop.time() - began < 3.0
        os.ftruncate(fds[1], 0)
    finally:
        for fd in fds:
            os.close(fd)
    began = loop.time()
    await settle_orphans(tmp_path, timeout_s=10)
    assert loop.time() - began < 3.0  # the lock is free: that worker is gone
