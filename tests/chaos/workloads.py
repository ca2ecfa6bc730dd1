"""Task specs for the chaos scenarios: ledger-writing shell tasks, DAGs of them, and the bad ones.

Every task carries the run's marker in its payload env (a task's environment is otherwise clean),
so the scanner and the teardown find it and everything it starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.chaos.ledger import ledger_body
from tests.chaos.observe import MARK

__all__ = ["dag", "ledger_task", "pipe_holder", "poison"]


def ledger_task(
    name: str, ledger: Path, run_id: str, work: str, deps: Sequence[str] = (), **extra: Any
) -> dict[str, Any]:
    """A shell task running ``work`` between its ledger lines."""
    payload = {"shell": ledger_body(ledger, work), "env": {MARK: run_id}}
    spec: dict[str, Any] = {"name": name, "agent_type": "shell", "payload": payload, "timeout": 600}
    if deps:
        spec["dependencies"] = list(deps)
    return {**spec, **extra}


def dag(
    ledger: Path, run_id: str, count: int, width: int, seconds: Sequence[float], prefix: str = "t"
) -> list[dict[str, Any]]:
    """``count`` sleeping tasks in layers of ``width``; each depends on two tasks of the layer before.

    Durations cycle through ``seconds`` so that at any moment some tasks are about to finish and
    others have just started.
    """
    tasks = []
    previous: list[str] = []
    for layer in range((count + width - 1) // width):
        names = [f"{prefix}{layer}-{i}" for i in range(min(width, count - layer * width))]
        for i, name in enumerate(names):
            deps = sorted({previous[i % len(previous)], previous[(i + 1) % len(previous)]}) if previous else []
            sleep = seconds[(layer + i) % len(seconds)]
            tasks.append(ledger_task(name, ledger, run_id, f"sleep {sleep:g}", deps))
        previous = names
    return tasks


# Ignores SIGTERM, leaves a setsid'd background process holding stdout, and double-forks a setsid
# grandchild: only a tree kill (cgroup or subreaper) ends all of it, and only a timeout that does
# not wait for stdout's EOF ends the attempt on time.
_PIPE_HOLDER = """trap '' TERM
( setsid sh -c 'trap "" TERM; exec sleep 120' & )
sh -c '(setsid sh -c "exec sleep 120" </dev/null >/dev/null 2>&1 &)'
sleep 120"""


def pipe_holder(name: str, ledger: Path, run_id: str, timeout_s: float) -> dict[str, Any]:
    """The timeout scenario's task (no retries: one attempt to measure)."""
    return ledger_task(name, ledger, run_id, _PIPE_HOLDER, timeout=timeout_s, retries=0)


def poison(name: str, ledger: Path, run_id: str, retries: int) -> dict[str, Any]:
    """A task that kill -9s the agent running it, its own supervisor and itself: a crashing driver.

    The agent is found by its ``--work-dir`` (the task runs in ``<work dir>/attempts/<id>``), never
    by a broad name: parallel scenarios run other agents on this machine. Ancestors are killed
    while they are the agent, a supervisor or the supervisors' fork server (``corral.agent`` or
    ``.../agent/...py`` on their command line), and never the harness (pytest, tests.chaos), so the
    climb stops below it. Last the task kills itself: no copy of it runs on without its owner.
    It runs 2 s first, like a crash mid-run: the controller counts an agent loss only for an attempt
    it knew was running (one still ASSIGNED when its agent died is requeued without a count).
    """
    work = """sleep 2
W=$(cd ../.. && pwd)
pkill -9 -f -- "--work-dir $W --kill-grace"
p=$PPID
while [ "$p" -gt 1 ] && grep -qaE "corral[./]agent|/agent/|supervis|forkserver" "/proc/$p/cmdline" 2>/dev/null \\
    && ! grep -qaE "pytest|tests[.]chaos" "/proc/$p/cmdline"; do
  next=$(awk '{print $4}' "/proc/$p/stat"); kill -9 "$p"; p=$next
done
kill -9 $$"""
    return ledger_task(name, ledger, run_id, work, retries=retries)
