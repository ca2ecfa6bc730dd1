"""Measured usage of an attempt: its peak resident memory and the CPU seconds it used.

Two meters, one per way an attempt runs:

- **Supervised** (shell and operator-declared agent types, :mod:`corral.agent.supervisor`): after
  the task's whole tree is dead and reaped, :func:`supervised_usage` takes the attempt cgroup's
  memory high-water mark (v2 ``memory.peak``, v1 ``memory.max_usage_in_bytes``: every process of
  the tree at once, page cache included, the figure the memory limit applies to) and its CPU
  (v2 ``cpu.stat``). Without those it falls back to ``getrusage(RUSAGE_CHILDREN)`` of the
  supervisor: exact for CPU (the supervisor is the subreaper, so every process of the tree is
  waited for by it or by a reaped ancestor), and for memory the largest single process's peak.
- **Python tasks** in warm workers (:mod:`corral.agent.pyworker`): :class:`TaskMeter` in the child
  that runs the tasks, one ``getrusage`` per task (see its docstring for the approximation).

The values go into the Finished report (``peak_rss_bytes``, ``cpu_s``) and, for an attempt that
outlives its agent, into ``status.json``. :func:`clean` bounds whatever a meter (or a status file)
produced, so the agent never reports a value the controller would refuse.

Standard library only: the supervisor imports this module on the start path of every shell task.
"""

from __future__ import annotations

import math
import os
import resource
import time

# typing costs ~5 ms to import and is only needed by the type checker (see supervisor.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from corral.agent.cgroup import Cgroup

__all__ = ["CHILDREN_AFTER_S", "MAX_CPU_S", "MAX_RSS_BYTES", "TaskMeter", "clean", "from_status", "supervised_usage"]

#: The largest values reported; the controller's limits are wider (1 EiB, max_cpu_cores x a year).
MAX_RSS_BYTES = 1 << 60
MAX_CPU_S = 4096.0 * 366 * 24 * 3600
#: A python task that raised the worker's memory high-water mark by more than this resets it, so
#: the next task's peak is its own (a write to /proc/self/clear_refs: only paid after such a task).
_RESET_ABOVE_KIB = 1024
#: A python task that took this long (wall clock) also reads its children's CPU (see TaskMeter).
CHILDREN_AFTER_S = 0.001


def clean(peak_rss_bytes: Any, cpu_s: Any) -> tuple[int, float]:
    """(peak_rss_bytes, cpu_s) as an int and a float, each finite, >= 0 and within its bound; a
    value that is not a number counts as 0 (not measured)."""
    try:
        rss = int(peak_rss_bytes)
    except (TypeError, ValueError, OverflowError):
        rss = 0
    try:
        cpu = float(cpu_s)
    except (TypeError, ValueError, OverflowError):
        cpu = 0.0
    if not math.isfinite(cpu) or cpu < 0:
        cpu = 0.0
    return min(max(rss, 0), MAX_RSS_BYTES), min(cpu, MAX_CPU_S)


def from_status(status: dict[str, Any]) -> tuple[int, float]:
    """The usage recorded in an attempt's ``status.json`` (0, 0.0 when it has none)."""
    return clean(status.get("peak_rss_bytes", 0), status.get("cpu_s", 0.0))


def supervised_usage(cgroup: Cgroup | None) -> dict[str, Any]:
    """``{"peak_rss_bytes", "cpu_s"}`` of a supervised attempt; call after its tree is reaped."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    rss = children.ru_maxrss * 1024  # KiB on Linux
    cpu = children.ru_utime + children.ru_stime
    if cgroup is not None:
        peak = cgroup.memory_peak()
        if peak is not None:
            rss = peak
        used = cgroup.cpu_seconds()
        if used is not None:
            cpu = used
    rss, cpu = clean(rss, cpu)
    return {"peak_rss_bytes": rss, "cpu_s": round(cpu, 6)}


def _reset_peak() -> bool:
    """Reset this process's RSS high-water mark to its current RSS (Linux >= 4.0); False if refused."""
    try:
        fd = os.open("/proc/self/clear_refs", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(fd, b"5")
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


class TaskMeter:
    """Per-task usage in the process that runs python tasks one after another.

    CPU is the ``getrusage(RUSAGE_SELF)`` user + system time since the previous reading (taken when
    the previous task ended, or when this process started): the few microseconds between two tasks
    (reading and decoding the next request) count to the next one. A task that took
    :data:`CHILDREN_AFTER_S` or more also reads ``RUSAGE_CHILDREN``, so the CPU of the processes it
    started and reaped (or that were killed and reaped after it) counts as well. Shorter tasks skip
    that second syscall: starting and reaping a process takes longer than that, and whatever CPU a
    child of a short task did use is not lost, it counts to the next task that reads it. So the
    common case is one ``getrusage`` per task.

    Peak RSS is the process's high-water mark (``ru_maxrss``): the worker's own memory (the
    interpreter and modules, shared with the worker template) plus what the task added. It is a
    mark, not a per-task figure, so after a task that raised it by more than 1 MiB this resets it
    (``/proc/self/clear_refs``) and a later, smaller task reports its own peak. A mark held by an
    exited thread of the process is not reset by that, and a task whose processes were reaped
    reports the larger of its own peak and that of the largest process this worker child ever
    reaped: both over-estimate.
    """

    __slots__ = ("_children_cpu", "_cpu", "_maxrss", "_started")

    def __init__(self) -> None:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self._cpu = ru.ru_utime + ru.ru_stime
        self._maxrss = ru.ru_maxrss
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._children_cpu = children.ru_utime + children.ru_stime
        self._started = time.monotonic()

    def begin(self) -> None:
        """A task starts."""
        self._started = time.monotonic()

    def take(self) -> tuple[int, float]:
        """(peak_rss_bytes, cpu_s) of the task that just ended (its processes already reaped)."""
        ru = resource.getrusage(resource.RUSAGE_SELF)
        cpu_now = ru.ru_utime + ru.ru_stime
        cpu = cpu_now - self._cpu
        self._cpu = cpu_now
        maxrss = ru.ru_maxrss
        peak = maxrss
        if time.monotonic() - self._started >= CHILDREN_AFTER_S:
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            children_cpu = children.ru_utime + children.ru_stime
            if children_cpu > self._children_cpu:
                # Processes were reaped: the largest of them (ever, in this process) is a candidate.
                cpu += children_cpu - self._children_cpu
                self._children_cpu = children_cpu
                peak = max(peak, children.ru_maxrss)
        if maxrss > self._maxrss + _RESET_ABOVE_KIB and _reset_peak():
            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self._maxrss = maxrss
        return peak * 1024, max(cpu, 0.0)
