"""Per-workflow concurrency limits: ``max_parallel`` from the spec, and AIMD after OOM kills.

AIMD (additive increase, multiplicative decrease) is on for every workflow but acts only when one
of its attempts ends ``oom_killed`` (the agent's cgroup/kernel report): the workflow's limit
becomes half its active (ASSIGNED/RUNNING) attempts at that moment, the OOM-killed one included,
floor 1. It then grows back by 1 after each *window* of successes, the window being the current
limit (one success per allowed slot, like TCP's once per round trip). When it grows back to the
count it was halved from (or to ``max_parallel``), the AIMD limit is dropped. Timeouts, fencing,
lost agents and busy hosts never change it: only ``oom_killed`` does.

Memory only: a restarted controller starts without AIMD limits (``max_parallel`` is stored).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Aimd", "Parallelism"]


@dataclass(slots=True)
class Aimd:
    """A workflow's AIMD state: its limit, successes in the current window, where it was halved from."""

    limit: int
    ceiling: int
    successes: int = 0


class Parallelism:
    """The limits of every limited workflow (pure bookkeeping; the machine feeds it)."""

    def __init__(self) -> None:
        self.max_parallel: dict[str, int] = {}  # workflow id -> its spec's max_parallel
        self.aimd: dict[str, Aimd] = {}  # workflow id -> its AIMD state after an OOM kill

    def __bool__(self) -> bool:
        """Whether any workflow is limited (the pass builds its rules only then)."""
        return bool(self.max_parallel or self.aimd)

    def limit(self, workflow_id: str) -> tuple[int, str] | None:
        """The workflow's concurrency limit and its reason for a waiting task, or None."""
        cap = self.max_parallel.get(workflow_id)
        state = self.aimd.get(workflow_id)
        if state is not None and (cap is None or state.limit < cap):
            return state.limit, f"workflow concurrency limited to {state.limit} after OOM kills (AIMD)"
        if cap is not None:
            return cap, f"workflow at max_parallel {cap}"
        return None

    def current(self, workflow_id: str) -> int:
        """The workflow's effective limit (0: unlimited), for WorkflowStatus."""
        found = self.limit(workflow_id)
        return found[0] if found else 0

    def oom_killed(self, workflow_id: str, active: int) -> int:
        """Halve the workflow's limit after an OOM kill, from its ``active`` attempts; the new limit."""
        new = max(1, active // 2)
        state = self.aimd.get(workflow_id)
        if state is None:
            self.aimd[workflow_id] = Aimd(new, max(active, 1))
        else:
            state.limit = min(state.limit, new)
            state.successes = 0
        return self.aimd[workflow_id].limit

    def succeeded(self, workflow_id: str) -> int | None:
        """Count a success; after a full window the limit grows by 1. The new limit when it grew
        (0 when the AIMD limit was dropped), else None."""
        state = self.aimd.get(workflow_id)
        if state is None:
            return None
        state.successes += 1
        if state.successes < state.limit:
            return None
        state.successes = 0
        state.limit += 1
        cap = self.max_parallel.get(workflow_id)
        if state.limit >= state.ceiling or (cap is not None and state.limit >= cap):
            del self.aimd[workflow_id]
            return 0
        return state.limit

    def forget(self, workflow_id: str) -> None:
        """The workflow ended or was deleted."""
        self.max_parallel.pop(workflow_id, None)
        self.aimd.pop(workflow_id, None)
