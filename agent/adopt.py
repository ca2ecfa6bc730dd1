"""Re-adopting attempts after an agent restart: their supervisors outlived the agent.

``scan`` walks ``<work_dir>/supervise/*``. An attempt whose supervisor still holds its ``lock`` is
re-attached (same task pid, its output tailed from the current end of its logs, its end awaited
through a pidfd); one whose supervisor finished is reported from its ``status.json``; one whose
supervisor died without a status died with the agent: whatever it left is killed, its folders are
removed, and the caller leaves it out of Hello so the controller counts an agent loss.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.agent.attempt import AttemptResult, Run
from corral.agent.policy import safe_component
from corral.agent.supervised import attach, control_dir, kill_leftovers, result_from_status
from corral.agent.supervisor import lock_held, read_status

__all__ = ["Adopted", "attach", "remove", "scan", "supervisor_alive"]


@dataclass(frozen=True, slots=True)
class Adopted:
    """One attempt found on disk: still running (``run``), finished (``result``) or died with the agent."""

    attempt_id: str
    run: Run | None = None
    result: AttemptResult | None = None
    died: bool = False  # its supervisor died without a status: it died with the agent


def supervisor_alive(control: Path) -> bool:
    """Whether an attempt's supervisor is alive: it holds the flock on ``lock`` for its whole life."""
    return lock_held(control)


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def scan(work_dir: Path, ctx: Any = None) -> list[Adopted]:
    """Every attempt whose control folder exists under ``work_dir/supervise`` (``ctx``: unused, the
    agent's ShellContext, kept for runners that need it)."""
    root = work_dir / "supervise"
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    found: list[Adopted] = []
    for control in entries:
        attempt_id = control.name
        if not control.is_dir() or not safe_component(attempt_id):
            continue
        folder = work_dir / "attempts" / attempt_id
        run = attach(control, folder)
        if run is not None:
            found.append(Adopted(attempt_id, run=run))
            continue
        status = read_status(control)
        if status is not None:
            found.append(Adopted(attempt_id, result=result_from_status(status, control, folder)))
            continue
        # Died with the agent (or before its task started): nothing of it may live on.
        kill_leftovers(control, _read_pid(control / "task.pid"))
        remove(work_dir, attempt_id)
        found.append(Adopted(attempt_id, died=True))
    return found


def remove(work_dir: Path, attempt_id: str) -> None:
    """Delete an attempt's control and task folders (its report was acknowledged).

    The control folder of a supervisor still alive stays (it would lose its status file).
    """
    if not safe_component(attempt_id):
        return
    control = control_dir(work_dir, attempt_id)
    if not supervisor_alive(control):
        shutil.rmtree(control, ignore_errors=True)
    with contextlib.suppress(OSError):
        shutil.rmtree(work_dir / "attempts" / attempt_id)
