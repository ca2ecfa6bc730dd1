"""Expected task durations: the user's estimate, else what earlier runs taught us, else structure.

Preference order (first known wins), named by :class:`DurationSource`:

1. ``estimate``: the task's ``estimated_duration``;
2. ``learned``: an EWMA of the completed run times of the same (namespace, workflow name, task
   name), so a recurring workflow is ranked well from its second run;
3. ``fingerprint``: an EWMA per payload fingerprint in the namespace (python: the ``function``;
   shell: argv[0] of the command; other agent types: the agent type), so a new workflow calling
   a known function starts with a fair guess;
4. ``structural``: nothing is known; the ranks come from the graph alone (``rank.structural_ranks``).

The book is pure and bounded: at most ``max_entries`` entries, the least recently used evicted
first (reading an entry counts as use: a workflow that runs daily keeps its entries). Entries
learned or evicted are collected for the store (:meth:`DurationBook.take_changes`), so they
commit with the tick that learned them; the store's table is as bounded as the book.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "DurationBook",
    "DurationChanges",
    "DurationKey",
    "DurationSource",
    "GroupKey",
    "LearnedDuration",
    "fast_fingerprint",
    "fingerprint",
]

# (kind, namespace, workflow name or "", task name or fingerprint). kind: "task" or "fingerprint".
DurationKey = tuple[str, str, str, str]
# The first three parts: the entries stored together in one row (one workflow's tasks, or one
# namespace's fingerprints), so learning a 20k-task workflow writes one row, not 20k.
GroupKey = tuple[str, str, str]

TASK = "task"
FINGERPRINT = "fingerprint"
_MAX_FINGERPRINT = 256  # characters kept of a fingerprint (argv[0] can be long)


class DurationSource(StrEnum):
    """Where an expected duration came from (TaskStatus.duration_source)."""

    ESTIMATE = "estimate"
    LEARNED = "learned"
    FINGERPRINT = "fingerprint"
    STRUCTURAL = "structural"


@dataclass(slots=True)
class LearnedDuration:
    """One learned duration: the EWMA in seconds, how many runs fed it, when it last changed.

    ``name`` is the task's name, or the fingerprint; its group (:data:`GroupKey`) is where the
    entry is kept (:class:`DurationBook`, :class:`DurationChanges`, the store's rows).
    """

    name: str
    seconds: float
    samples: int
    updated_at: float
    # Measured usage of the same runs (EWMA; 0 until a run reported it): peak memory and CPU.
    peak_rss_bytes: float = 0.0
    cpu_s: float = 0.0


@dataclass(slots=True)
class DurationChanges:
    """Groups whose entries changed, each with all its current entries (empty: delete the group)."""

    groups: dict[GroupKey, tuple[LearnedDuration, ...]]

    def __bool__(self) -> bool:
        return bool(self.groups)

    def entries(self) -> int:
        """How many entries the changed groups hold (a measure of the commit's size)."""
        return sum(len(entries) for entries in self.groups.values())


def fingerprint(agent_type: str, payload: bytes) -> str:
    """What a task runs, as a short string: python ``function``, shell argv[0], else the agent type.

    A payload that cannot be read (it was validated at submit, so this is only a guard) gives the
    agent type, which is always a fair (if coarse) class.
    """
    fast = fast_fingerprint(agent_type, payload)
    if fast is not None:
        return fast
    try:
        body = json.loads(payload) if agent_type in ("python", "shell") else None
    except ValueError:
        body = None
    found = ""
    if isinstance(body, dict):
        if agent_type == "python":
            function = body.get("function")
            found = function if isinstance(function, str) else ""
        else:
            command = body.get("command")
            shell = body.get("shell")
            if isinstance(command, list) and command and isinstance(command[0], str):
                found = command[0]
            elif isinstance(shell, str) and shell.split():
                found = shell.split()[0]
    return f"{agent_type}:{found[:_MAX_FINGERPRINT]}" if found else agent_type


# Payloads as clients usually encode them: the first key read without parsing the whole JSON
# (a parse is most of the cost of a fingerprint, and every completed task needs one). No
# backslash allowed in the value: escapes are left to the JSON parser.
_FAST = {
    "python": re.compile(rb'\{"function": ?"([^"\\]+)"'),
    "shell": re.compile(rb'\{"command": ?\["([^"\\]+)"'),
}


def fast_fingerprint(agent_type: str, payload: bytes) -> str | None:
    """The fingerprint when the payload starts with its key, else None (then it is parsed)."""
    pattern = _FAST.get(agent_type)
    match = pattern.match(payload) if pattern is not None else None
    if match is None:
        return None
    try:
        return f"{agent_type}:{match.group(1).decode()[:_MAX_FINGERPRINT]}"
    except UnicodeDecodeError:
        return None


class DurationBook:
    """Learned durations by (namespace, workflow, task) and by fingerprint; bounded, LRU-evicted.

    ``alpha`` is the EWMA weight of a new run time: 0.3 follows a real change within a few runs
    without letting one outlier (a cold cache, a slow host) move the estimate most of the way.

    Recency is kept per group (a workflow's tasks, a namespace's fingerprints), not per entry:
    a workflow's durations are read and learned together, every run, so they age together.
    Eviction takes the least recently used group's oldest learned entries first. An entry is
    then its name and its numbers (~100 bytes), not also a key tuple and a node of an ordered
    dict (~250 bytes; docs/DECISIONS.md, "Fifteenth wave").
    """

    def __init__(self, max_entries: int = 100_000, alpha: float = 0.3) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.max_entries = max_entries
        self.alpha = alpha
        # Least recently used group first; each group's entries by name, oldest learned first.
        self._groups: OrderedDict[GroupKey, dict[str, LearnedDuration]] = OrderedDict()
        self._size = 0  # entries in all groups
        self._dirty: set[GroupKey] = set()  # groups changed since the last take_changes
        self._prints: dict[str, int] = {}  # namespace -> fingerprint entries held

    def __len__(self) -> int:
        return self._size

    def get(self, key: DurationKey) -> LearnedDuration | None:
        """The entry under ``key`` (its group marked as recently used), or None."""
        group = key[:3]
        members = self._groups.get(group)
        entry = members.get(key[3]) if members is not None else None
        if entry is not None:
            self._groups.move_to_end(group)
        return entry

    def knows_fingerprints(self, namespace: str) -> bool:
        """Whether any fingerprint of ``namespace`` was learned (else computing one is wasted)."""
        return self._prints.get(namespace, 0) > 0

    def restore(self, entries: list[tuple[GroupKey, LearnedDuration]]) -> None:
        """Load stored entries (a group's last ``updated_at`` orders its recency; oldest first)."""
        groups = self._groups
        for group, entry in sorted(entries, key=lambda pair: pair[1].updated_at):
            members = groups.get(group)
            if members is None:
                members = groups[group] = {}
            else:
                groups.move_to_end(group)
            if entry.name not in members:
                self._counted(group, 1)
            members[entry.name] = entry
        self._evict()

    def expected(
        self, namespace: str, workflow: str, task: str, estimate: float, print_: str
    ) -> tuple[float, DurationSource]:
        """The expected duration of a task and where it came from (0 with ``structural``).

        ``print_`` is the task's :func:`fingerprint`, or "" to skip that level (its cost is a
        payload parse, paid only when the task's own history is missing).
        """
        if estimate > 0 and math.isfinite(estimate):
            return estimate, DurationSource.ESTIMATE
        entry = self.get((TASK, namespace, workflow, task))
        if entry is not None:
            return entry.seconds, DurationSource.LEARNED
        if print_:
            entry = self.get((FINGERPRINT, namespace, "", print_))
            if entry is not None:
                return entry.seconds, DurationSource.FINGERPRINT
        return 0.0, DurationSource.STRUCTURAL

    def usage(self, namespace: str, workflow: str, task: str) -> LearnedDuration | None:
        """The task's learned entry when it holds measured usage (peak memory or CPU), else None.

        By task name only: usage is shown for waiting and running tasks, and a fingerprint would
        cost a payload look per task on every status read. Not marked as recently used (a read).
        """
        members = self._groups.get((TASK, namespace, workflow))
        entry = members.get(task) if members is not None else None
        if entry is None or not (entry.peak_rss_bytes or entry.cpu_s):
            return None
        return entry

    def learn(
        self,
        namespace: str,
        workflow: str,
        task: str,
        print_: str,
        seconds: float,
        now: float,
        peak_rss_bytes: int = 0,
        cpu_s: float = 0.0,
    ) -> None:
        """Feed one completed run (its time, and its measured usage when known) into the task's
        and the fingerprint's averages."""
        if not 0 <= seconds < math.inf:  # also refuses NaN
            return
        rss = float(peak_rss_bytes) if peak_rss_bytes > 0 else 0.0
        cpu = cpu_s if 0 < cpu_s < math.inf else 0.0
        # Runs once per completed task: kept to a few dict operations (no helper calls).
        groups, dirty, alpha = self._groups, self._dirty, self.alpha
        for group, name in (((TASK, namespace, workflow), task), ((FINGERPRINT, namespace, ""), print_)):
            if not name:
                continue
            members = groups.get(group)
            if members is None:
                members = groups[group] = {}
            else:
                groups.move_to_end(group)
            entry = members.get(name)
            if entry is None:
                members[name] = LearnedDuration(name, seconds, 1, now, rss, cpu)
                self._counted(group, 1)
            else:
                entry.seconds += alpha * (seconds - entry.seconds)
                entry.samples += 1
                entry.updated_at = now
                # A run that measured nothing (an agent without the meter) leaves the usage alone.
                if rss:
                    entry.peak_rss_bytes = (
                        rss if not entry.peak_rss_bytes else entry.peak_rss_bytes + alpha * (rss - entry.peak_rss_bytes)
                    )
                if cpu:
                    entry.cpu_s = cpu if not entry.cpu_s else entry.cpu_s + alpha * (cpu - entry.cpu_s)
            dirty.add(group)
        if self._size > self.max_entries:
            self._evict()

    def take_changes(self) -> DurationChanges:
        """The groups learned into or evicted from since the last call, with their entries now."""
        groups = self._groups
        changes = DurationChanges({group: tuple(groups.get(group, {}).values()) for group in self._dirty})
        self._dirty = set()
        return changes

    def _counted(self, group: GroupKey, entries: int) -> None:
        self._size += entries
        if group[0] == FINGERPRINT:
            self._prints[group[1]] = self._prints.get(group[1], 0) + entries

    def _evict(self) -> None:
        groups = self._groups
        while self._size > self.max_entries:
            group, members = next(iter(groups.items()))
            self._dirty.add(group)
            # The least recently used group's oldest learned entries go first (a workflow of
            # more tasks than the book learns none: Ordering.learn); the group when emptied.
            # islice: a full book evicts one entry per new one; a copy of the group's names each
            # time was a scan of up to the whole book per completed task.
            for name in list(itertools.islice(members, self._size - self.max_entries)):
                del members[name]
                self._counted(group, -1)
            if not members:
                del groups[group]
