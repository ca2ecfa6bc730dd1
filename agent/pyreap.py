"""Ending python workers: a worker and everything it started, and the workers a dead agent left.

:func:`stop_worker` kills a worker's whole tree without ever waiting on a pipe; :func:`settle_orphans`
lets a starting agent wait until the workers of its dead predecessor have taken their tasks over.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import structlog

if TYPE_CHECKING:
    from corral.agent.pyconn import PyWorker

__all__ = ["ORPHAN_SETTLE_S", "lock_name", "remove_stale_workers", "settle_orphans", "stop_worker"]

log = structlog.get_logger("corral.agent.pyreap")

_KILL_POLL_S = 0.02
_FREEZE_WAIT_S = 1.0
_KILL_WAIT_S = 5.0
#: The most a starting pool waits for the workers of a dead agent to take over their tasks.
ORPHAN_SETTLE_S = 3.0


def lock_name(index: int, agent_pid: int) -> str:
    """``worker-<index>.<agent pid>.lock``: held by the worker for its whole life, empty until the
    worker outlives its agent and takes its task over (then it holds the worker's pid)."""
    return f"worker-{index}.{agent_pid}.lock"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _orphans_unsettled(work_dir: Path) -> bool:
    """Whether a worker whose agent is gone is alive but has not (yet) registered its task."""
    folder = work_dir / "pyworkers"
    try:
        locks = [entry for entry in folder.iterdir() if entry.suffix == ".lock"]
    except OSError:
        return False
    for lock in locks:
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            continue  # free: that worker is gone
        except OSError:
            pass
        finally:
            os.close(fd)
        agent = lock.name.split(".")[1] if lock.name.count(".") == 2 else ""
        if agent.isdigit() and _alive(int(agent)):
            continue  # a worker of a live pool
        with contextlib.suppress(OSError):
            if not lock.read_text().strip():
                return True  # held, its agent gone, its task not registered yet
    return False


async def settle_orphans(work_dir: Path, timeout_s: float = ORPHAN_SETTLE_S) -> None:
    """Wait (bounded) until every worker that outlived an earlier agent of ``work_dir`` has either
    exited (it was idle) or registered its task under ``supervise/`` (so the adoption scan finds it).

    Call before scanning ``supervise/``: it closes the window between an agent's death and its busy
    workers noticing it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while await asyncio.to_thread(_orphans_unsettled, work_dir.resolve()):
        if loop.time() >= deadline:
            log.warning("python workers of an earlier agent did not settle", work_dir=str(work_dir))
            return
        await asyncio.sleep(_KILL_POLL_S)


def _members(worker: PyWorker) -> list[psutil.Process]:
    """The worker's live processes other than its template: its tree and its cgroup."""
    found: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        for proc in psutil.Process(worker.pid).children(recursive=True):
            found[proc.pid] = proc
    if worker.cgroup is not None:
        for pid in worker.cgroup.pids() - found.keys() - {worker.pid}:
            with contextlib.suppress(psutil.Error):
                found[pid] = psutil.Process(pid)
    alive = []
    for proc in found.values():
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
    return alive


def _signal(procs: list[psutil.Process], sig: signal.Signals) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


async def stop_worker(worker: PyWorker, grace_s: float, *, force: bool) -> None:
    """Kill a worker and everything it started; return once all of it is gone.

    The template is stopped first (SIGSTOP): it stays alive as the subreaper that every orphan of
    its tasks comes back to, and can neither reap nor fork. Then SIGTERM to the rest, up to
    ``grace_s`` for them to exit (none without ``force``), and SIGKILL: the frozen cgroup at once
    when there is one, else the template's tree until it is empty. Never a wait on a pipe.
    """
    loop = asyncio.get_running_loop()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(worker.pid, signal.SIGSTOP)
    if not force and grace_s > 0:
        deadline = loop.time() + grace_s
        signalled: set[int] = set()
        while procs := _members(worker):
            if loop.time() >= deadline:
                break
            _signal([p for p in procs if p.pid not in signalled], signal.SIGTERM)
            signalled.update(p.pid for p in procs)
            await asyncio.sleep(_KILL_POLL_S)
    cgroup = worker.cgroup
    if cgroup is not None:
        cgroup.freeze(True)
        deadline = loop.time() + _FREEZE_WAIT_S
        while not cgroup.is_frozen() and loop.time() < deadline:
            await asyncio.sleep(_KILL_POLL_S / 4)
        cgroup.kill_all()
        cgroup.freeze(False)
    deadline = loop.time() + _KILL_WAIT_S
    while (procs := _members(worker)) and loop.time() < deadline:
        _signal(procs, signal.SIGKILL)
        await asyncio.sleep(_KILL_POLL_S / 4)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(worker.pid, signal.SIGKILL)
    await worker.proc.wait()


def remove_stale_workers(folder: Path) -> int:
    """Remove the folders and lock files gone workers left in ``folder``; the first free index.

    A worker holds the flock of its lock file (:func:`lock_name`) for its whole life (the pool
    hands it the locked file): a lock that can be taken belongs to a worker that is gone.
    """
    busy: set[str] = set()
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    for lock in [e for e in entries if e.suffix == ".lock"]:
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock.unlink(missing_ok=True)
        except OSError:
            busy.add(lock.name.split(".")[0])
        finally:
            os.close(fd)
    for entry in entries:
        if entry.suffix != ".lock" and entry.name not in busy:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    indexes = [int(name.rpartition("-")[2]) for name in busy if name.rpartition("-")[2].isdigit()]
    return max(indexes) + 1 if indexes else 0
