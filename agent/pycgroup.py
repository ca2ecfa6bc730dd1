"""A cgroup per warm python worker (v1 ``memory``/``pids``/``freezer``), when the host offers one.

``<hierarchy>/corral-py/<pool>/w<index>`` in each controller, ``<pool>`` being ``<agent pid>-<random>``
so pools of several agents (or an agent restarted while its old workers finish) never share one.
It bounds the worker's processes (``pids.max``) and kills its whole tree at once: freeze, SIGKILL
every member, thaw. Without cgroups the pool falls back to the worker's subreaper tree.

(Small local helpers; :mod:`corral.agent.cgroup` is the shared implementation to switch to.)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from pathlib import Path

import structlog

__all__ = ["PIDS_MAX", "WorkerCgroup", "cgroup_root", "new_pool_name", "remove_pool", "remove_stale"]

log = structlog.get_logger("corral.agent.pycgroup")

#: The most processes one worker (its template, children and everything its tasks start) may have.
PIDS_MAX = 4096
_CONTROLLERS = ("memory", "pids", "freezer")
_PARENT = "corral-py"


def cgroup_root() -> Path | None:
    """The v1 hierarchy root when memory, pids and freezer are mounted there and writable (root)."""
    root = Path(os.environ.get("CORRAL_CGROUP_ROOT", "/sys/fs/cgroup"))
    for controller in _CONTROLLERS:
        if not os.access(root / controller / "cgroup.procs", os.W_OK):
            return None
    return root


def new_pool_name() -> str:
    """A pool's own folder name: the agent's pid (to find stale ones) and a random part."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


class WorkerCgroup:
    """One worker's folder in each controller."""

    def __init__(self, root: Path, pool: str, index: int) -> None:
        self.dirs = [root / controller / _PARENT / pool / f"w{index}" for controller in _CONTROLLERS]
        self.freezer = self.dirs[2]

    @classmethod
    def create(cls, root: Path, pool: str, index: int, uid: int | None = None) -> WorkerCgroup | None:
        """Make the folders (None, logged, when the host refuses); ``uid`` may then join it."""
        cgroup = cls(root, pool, index)
        try:
            for folder in cgroup.dirs:
                folder.mkdir(parents=True, exist_ok=True)
                if uid is not None:
                    # The worker joins by itself (before it forks anything): as --run-as it needs this.
                    os.chown(folder / "cgroup.procs", uid, -1)
            (cgroup.dirs[1] / "pids.max").write_text(str(PIDS_MAX))
        except OSError as exc:
            log.warning("no cgroup for a python worker", error=str(exc))
            cgroup.remove()
            return None
        return cgroup

    def describe(self) -> dict[str, object]:
        """{"version": 1, "dirs": {controller: folder}} (the shared ``cgroup.json`` format)."""
        return {"version": 1, "dirs": {c: str(d) for c, d in zip(_CONTROLLERS, self.dirs, strict=True)}}

    def pids(self) -> set[int]:
        """Every process in the worker's cgroup."""
        found: set[int] = set()
        with contextlib.suppress(OSError, ValueError):
            found.update(int(line) for line in (self.freezer / "cgroup.procs").read_text().split())
        return found

    def freeze(self, frozen: bool) -> None:
        """Freeze (nothing in it runs or forks) or thaw the cgroup."""
        with contextlib.suppress(OSError):
            (self.freezer / "freezer.state").write_text("FROZEN" if frozen else "THAWED")

    def is_frozen(self) -> bool:
        """Whether freezing has completed."""
        try:
            return (self.freezer / "freezer.state").read_text().strip() == "FROZEN"
        except OSError:
            return True

    def kill_all(self) -> None:
        """SIGKILL every member (call frozen: none can fork meanwhile)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        """Remove the (empty) folders."""
        for folder in self.dirs:
            with contextlib.suppress(OSError):
                folder.rmdir()


def remove_stale(root: Path) -> None:
    """Remove the empty worker cgroups of pools whose agent process is gone (a busy one stays)."""
    for controller in _CONTROLLERS:
        parent = root / controller / _PARENT
        with contextlib.suppress(OSError):
            for pool in parent.iterdir():
                owner = pool.name.partition("-")[0]
                if owner.isdigit() and _alive(int(owner)):
                    continue
                with contextlib.suppress(OSError):
                    for worker in pool.iterdir():
                        with contextlib.suppress(OSError):
                            worker.rmdir()
                    pool.rmdir()


def remove_pool(root: Path, pool: str) -> None:
    """Remove a closed pool's (empty) folder in each controller."""
    for controller in _CONTROLLERS:
        with contextlib.suppress(OSError):
            (root / controller / _PARENT / pool).rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
