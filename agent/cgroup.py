"""The host's process container for one attempt: a cgroup (v2, or v1 memory + pids + freezer).

A supervisor puts its task in a fresh cgroup, so a memory limit, a pids limit and a kill reach every
process the task ever started, whatever it did to leave its session (double fork, ``setsid``). The
cgroup nests under the agent's own one (read from ``/proc/self/cgroup``), so it stays inside the
service that runs the agent: ``<agent's cgroup>/corral/<agent name>/<attempt id>``.

Standard library only: the supervisor imports this module on the start path of every shell task.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from pathlib import Path

# typing costs ~5 ms to import and is only needed by the type checker (mypy treats any name
# TYPE_CHECKING as true): this module is on the start path of every shell task.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "AGENT_LEAF",
    "CGROUP_ROOT",
    "Cgroup",
    "CgroupV1",
    "CgroupV2",
    "create",
    "detect",
    "load",
    "prepare_agent",
    "sweep_stale",
]

CGROUP_ROOT = Path("/sys/fs/cgroup")
_V1_HIERARCHIES = ("memory", "pids", "freezer")
#: cgroup v2: the leaf the agent moves itself into (see prepare_agent).
AGENT_LEAF = "corral-agent"
# A kill gives up after this long (a process stuck in the kernel dies when it leaves it, not before).
_KILL_S = 5.0
_SETTLE_S = 1.0


def _own_paths(proc_cgroup: Path = Path("/proc/self/cgroup")) -> dict[str, str]:
    """Controller (``""`` for the v2 unified one) -> this process's cgroup path, from /proc."""
    paths: dict[str, str] = {}
    try:
        text = proc_cgroup.read_text()
    except OSError:
        return paths
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            paths[controller] = parts[2]
    return paths


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


def _write(path: Path, value: str) -> None:
    with open(path, "w") as file:
        file.write(value)


def _read_ints(path: Path) -> list[int]:
    try:
        return [int(word) for word in path.read_text().split()]
    except (OSError, ValueError):
        return []


def detect(root: Path = CGROUP_ROOT) -> tuple[int, dict[str, Path]] | None:
    """(version, controller -> the agent's own cgroup directory), or None without a usable one.

    v2 needs the unified hierarchy at ``root`` with memory and pids available; v1 needs the memory,
    pids and freezer hierarchies mounted under ``root`` and our cgroup in each writable (we are root).
    """
    own = _own_paths()
    unified = root / "cgroup.controllers"
    if unified.exists():
        base = root / own.get("", "/").lstrip("/")
        if base.name == AGENT_LEAF:
            # The agent moved itself into a leaf (see prepare_agent): attempts go beside it.
            base = base.parent
        try:
            available = set((base / "cgroup.controllers").read_text().split())
        except OSError:
            return None
        if {"memory", "pids"} <= available and _writable_dir(base):
            return 2, {"": base}
        return None
    dirs: dict[str, Path] = {}
    for name in _V1_HIERARCHIES:
        base = root / name / own.get(name, "/").lstrip("/")
        if not _writable_dir(base) or not (root / name / "cgroup.procs").exists():
            return None
        dirs[name] = base
    return 1, dirs


def prepare_agent(root: Path = CGROUP_ROOT) -> str:
    """On cgroup v2, move this (agent) process into a leaf ``<its cgroup>/corral-agent``: "" or why not.

    v2 lets a cgroup hand controllers to its children only when it holds no process itself, so the
    agent (and the supervisors it starts, which inherit its cgroup) leave the service's cgroup for a
    leaf, and attempts' cgroups are made beside that leaf. Needs a delegated subtree (systemd
    ``Delegate=yes``). A no-op on v1 and when already done.
    """
    if not (root / "cgroup.controllers").exists():
        return ""
    own = root / _own_paths().get("", "/").lstrip("/")
    if own.name == AGENT_LEAF:
        return ""
    try:
        leaf = own / AGENT_LEAF
        leaf.mkdir(exist_ok=True)
        # The agent first, then whatever else is in the service's cgroup (its workers, a fork server).
        for pid in [os.getpid(), *_read_ints(own / "cgroup.procs")]:
            with contextlib.suppress(ProcessLookupError):
                _write(leaf / "cgroup.procs", str(pid))
        _enable_v2(own)
    except OSError as exc:
        return f"cannot prepare the agent's cgroup for attempts' cgroups: {exc}"
    return ""


def sweep_stale(parent: str = "corral", older_than_s: float = 600.0, root: Path = CGROUP_ROOT) -> int:
    """Remove empty, idle directories below ``<own cgroup>/<parent>``; returns how many went.

    An agent that was killed leaves its per-work-dir level (``corral/<digest>``) behind once its
    attempts' cgroups are gone, and a test suite with temp work dirs leaves one per agent. Only
    directories with no process and no child, untouched for ``older_than_s``, are removed, so a
    live agent's level is never taken from under it (and ``create`` retries if a level vanishes
    between its mkdirs anyway). rmdir refuses a non-empty cgroup, which makes this safe to race.
    """
    found = detect(root)
    if found is None:
        return 0
    _, bases = found
    removed = 0
    cutoff = time.time() - older_than_s
    for base in bases.values():
        top = base / parent
        try:
            levels = [entry for entry in top.iterdir() if entry.is_dir()]
        except OSError:
            continue
        for level in levels:
            try:
                if level.stat().st_mtime > cutoff or any(entry.is_dir() for entry in level.iterdir()):
                    continue
                level.rmdir()
                removed += 1
            except OSError:
                continue  # busy (a process joined) or gone: leave it
    return removed


class Cgroup:
    """One attempt's cgroup (either version): limits, membership, kill, OOM report, removal."""

    def describe(self) -> dict[str, Any]:
        """A JSON description :func:`load` turns back into the group (for whoever cleans up after us)."""
        raise NotImplementedError

    def memory_limit(self, mb: int) -> None:
        """Cap the memory of every process in the cgroup at ``mb`` MiB (the kernel OOM-kills past it)."""
        raise NotImplementedError

    def pids_limit(self, count: int) -> None:
        """At most ``count`` processes and threads in the cgroup (a fork bomb stops there)."""
        raise NotImplementedError

    def procs_files(self) -> list[Path]:
        """The ``cgroup.procs`` files a new process writes itself into (one per hierarchy)."""
        raise NotImplementedError

    def add(self, pid: int) -> None:
        """Move ``pid`` into the cgroup (0: the calling process)."""
        for path in self.procs_files():
            _write(path, str(pid))

    def pids(self) -> list[int]:
        """The processes in the cgroup now."""
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL every process in the cgroup, including ones forking meanwhile; returns once it is empty
        (or after a bounded time)."""
        raise NotImplementedError

    def oom_killed(self) -> bool:
        """Whether the kernel OOM-killed a process of the cgroup (its memory limit was hit)."""
        raise NotImplementedError

    def memory_peak(self) -> int | None:
        """The cgroup's memory high-water mark in bytes (page cache included), None when unknown."""
        raise NotImplementedError

    def cpu_seconds(self) -> float | None:
        """CPU seconds used by the cgroup's processes so far, None when the cgroup does not say."""
        return None

    def remove(self) -> None:
        """Delete the (empty) cgroup; best effort."""
        raise NotImplementedError


def _wait_empty(group: Cgroup, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while group.pids():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _rmdir(path: Path) -> None:
    # A just-killed process leaves the cgroup a moment after its death: retry briefly on EBUSY.
    deadline = time.monotonic() + _SETTLE_S
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                return
            time.sleep(0.01)


def _prune(directory: Path, levels: int) -> None:
    # Parents shared with other attempts: removed only when empty (rmdir fails otherwise), no retry.
    for parent in list(directory.parents)[:levels]:
        try:
            parent.rmdir()
        except OSError:
            return


class CgroupV1(Cgroup):
    """A cgroup v1 in the memory, pids and freezer hierarchies."""

    def __init__(self, dirs: dict[str, Path], parents: int = 0) -> None:
        self.dirs = dirs
        self.parents = parents  # how many levels above it are ours to remove once empty

    @property
    def path(self) -> Path:
        """The freezer directory (the one that names the group in messages)."""
        return self.dirs["freezer"]

    def describe(self) -> dict[str, Any]:
        """{"version": 1, "dirs": {hierarchy: directory}}."""
        return {"version": 1, "dirs": {name: str(path) for name, path in self.dirs.items()}}

    def memory_limit(self, mb: int) -> None:
        """memory.limit_in_bytes, and memsw the same when swap is accounted (no escape into swap)."""
        limit = str(mb * 1024 * 1024)
        memory = self.dirs["memory"]
        _write(memory / "memory.limit_in_bytes", limit)
        memsw = memory / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            with contextlib.suppress(OSError):
                _write(memsw, limit)

    def pids_limit(self, count: int) -> None:
        """pids.max."""
        _write(self.dirs["pids"] / "pids.max", str(count))

    def procs_files(self) -> list[Path]:
        """cgroup.procs of each hierarchy."""
        return [d / "cgroup.procs" for d in self.dirs.values()]

    def pids(self) -> list[int]:
        """Members (the freezer hierarchy's view; every hierarchy holds the same processes)."""
        return _read_ints(self.dirs["freezer"] / "cgroup.procs")

    def _freeze(self, state: str) -> None:
        path = self.dirs["freezer"] / "freezer.state"
        with contextlib.suppress(OSError):
            _write(path, state)
        if state == "FROZEN":
            # Freezing is asynchronous: wait until every member is frozen (bounded).
            deadline = time.monotonic() + _SETTLE_S
            while time.monotonic() < deadline:
                try:
                    if path.read_text().strip() == "FROZEN":
                        return
                except OSError:
                    return
                time.sleep(0.002)

    def kill(self) -> None:
        """Freeze (nothing can fork), SIGKILL every member, thaw (the kills land); until empty."""
        deadline = time.monotonic() + _KILL_S
        while time.monotonic() < deadline:
            if not self.pids():
                return
            self._freeze("FROZEN")
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            self._freeze("THAWED")
            if _wait_empty(self, 0.2):
                return

    def oom_killed(self) -> bool:
        """memory.oom_control's ``oom_kill`` counter (kernel >= 4.13), else memory.failcnt with a full cgroup."""
        memory = self.dirs["memory"]
        try:
            for line in (memory / "memory.oom_control").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value) > 0
        except (OSError, ValueError):
            pass
        failcnt = _read_ints(memory / "memory.failcnt")
        return bool(failcnt and failcnt[0] > 0)

    def memory_peak(self) -> int | None:
        """memory.max_usage_in_bytes.

        (No CPU: the cpuacct hierarchy is not one the group joins; the supervisor's
        ``RUSAGE_CHILDREN`` counts the same processes, see :mod:`corral.agent.usage`.)
        """
        peak = _read_ints(self.dirs["memory"] / "memory.max_usage_in_bytes")
        return peak[0] if peak else None

    def remove(self) -> None:
        """rmdir in every hierarchy, and the agent's parent levels once they are empty."""
        for directory in self.dirs.values():
            _rmdir(directory)
            _prune(directory, self.parents)


class CgroupV2(Cgroup):
    """A cgroup in the unified (v2) hierarchy."""

    def __init__(self, path: Path, parents: int = 0) -> None:
        self.path = path
        self.parents = parents  # how many levels above it are ours to remove once empty

    def describe(self) -> dict[str, Any]:
        """{"version": 2, "path": directory}."""
        return {"version": 2, "path": str(self.path)}

    def memory_limit(self, mb: int) -> None:
        """memory.max, and no swap (memory.swap.max 0) when swap is controlled."""
        _write(self.path / "memory.max", str(mb * 1024 * 1024))
        swap = self.path / "memory.swap.max"
        if swap.exists():
            with contextlib.suppress(OSError):
                _write(swap, "0")

    def pids_limit(self, count: int) -> None:
        """pids.max."""
        _write(self.path / "pids.max", str(count))

    def procs_files(self) -> list[Path]:
        """cgroup.procs."""
        return [self.path / "cgroup.procs"]

    def pids(self) -> list[int]:
        """Members."""
        return _read_ints(self.path / "cgroup.procs")

    def kill(self) -> None:
        """cgroup.kill (kernel >= 5.14) kills every member atomically; else freeze, kill, thaw."""
        kill_file = self.path / "cgroup.kill"
        freeze_file = self.path / "cgroup.freeze"
        deadline = time.monotonic() + _KILL_S
        while time.monotonic() < deadline:
            if not self.pids():
                return
            if kill_file.exists():
                with contextlib.suppress(OSError):
                    _write(kill_file, "1")
            else:
                with contextlib.suppress(OSError):
                    _write(freeze_file, "1")
                for pid in self.pids():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(OSError):
                    _write(freeze_file, "0")
            if _wait_empty(self, 0.2):
                return

    def oom_killed(self) -> bool:
        """memory.events' ``oom_kill`` counter."""
        try:
            for line in (self.path / "memory.events").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value) > 0
        except (OSError, ValueError):
            pass
        return False

    def memory_peak(self) -> int | None:
        """memory.peak (kernel >= 5.19), None on older kernels."""
        peak = _read_ints(self.path / "memory.peak")
        return peak[0] if peak else None

    def cpu_seconds(self) -> float | None:
        """cpu.stat's ``usage_usec`` (present with or without the cpu controller)."""
        try:
            for line in (self.path / "cpu.stat").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "usage_usec":
                    return int(value) / 1e6
        except (OSError, ValueError):
            pass
        return None

    def remove(self) -> None:
        """rmdir, and the agent's parent levels once they are empty."""
        _rmdir(self.path)
        _prune(self.path, self.parents)


def _enable_v2(directory: Path) -> None:
    # Children of `directory` get the memory and pids controllers. This fails (EBUSY) when the
    # directory itself holds processes (the v2 "no internal processes" rule): see the deploy notes.
    controllers = set((directory / "cgroup.subtree_control").read_text().split())
    missing = [c for c in ("memory", "pids") if c not in controllers]
    if missing:
        _write(directory / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))


def load(description: Any) -> Cgroup | None:
    """The group :meth:`Cgroup.describe` described, or None when the description is not one (or the
    group is gone)."""
    if not isinstance(description, dict):
        return None
    try:
        if description.get("version") == 2:
            path = Path(str(description["path"]))
            return CgroupV2(path) if path.is_dir() else None
        dirs = {str(k): Path(str(v)) for k, v in dict(description["dirs"]).items()}
    except (KeyError, TypeError, ValueError):
        return None
    if set(dirs) != set(_V1_HIERARCHIES) or not all(d.is_dir() for d in dirs.values()):
        return None
    return CgroupV1(dirs)


def _make(version: int, bases: dict[str, Path], relative: list[str]) -> Cgroup:
    parents = len(relative) - 1
    if version == 2:
        directory = bases[""]
        for part in relative:
            _enable_v2(directory)
            directory = directory / part
            directory.mkdir(exist_ok=True)
        return CgroupV2(directory, parents)
    dirs = {}
    for controller, base in bases.items():
        directory = base.joinpath(*relative)
        directory.mkdir(parents=True, exist_ok=True)
        dirs[controller] = directory
    return CgroupV1(dirs, parents)


def create(parent: str, name: str, root: Path = CGROUP_ROOT) -> tuple[Cgroup | None, str]:
    """A fresh cgroup ``<agent's cgroup>/<parent>/<name>``: (the group, "") or (None, why not).

    ``parent`` is a relative path (e.g. ``corral/agent-1``); an existing group of that name (a
    leftover of a dead supervisor) is killed and reused.
    """
    found = detect(root)
    if found is None:
        return None, "no writable cgroup v2 (memory, pids) or v1 (memory, pids, freezer) hierarchy"
    version, bases = found
    relative = [p for p in (*Path(parent).parts, name) if p not in ("", "/", ".", "..")]
    group: Cgroup | None = None
    for _ in range(3):
        try:
            group = _make(version, bases, relative)
            break
        except FileNotFoundError:
            continue  # a sibling attempt's remove() pruned a parent level between our mkdirs: again
        except OSError as exc:
            return None, f"cannot create the attempt's cgroup: {exc}"
    if group is None:
        return None, "cannot create the attempt's cgroup: its parent keeps disappearing"
    if group.pids():
        group.kill()
    return group, ""
