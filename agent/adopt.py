"""Re-adopting attempts after an agent restart: their supervisors outlived the agent.

(Interface placeholder; the supervisor part fills it in.) ``scan`` walks ``<work_dir>/supervise/*``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.agent.attempt import AttemptResult, Run

__all__ = ["Adopted", "remove", "scan"]


@dataclass(frozen=True, slots=True)
class Adopted:
    """One attempt found on disk: still running (``run``), finished (``result``) or died with the agent."""

    attempt_id: str
    run: Run | None = None
    result: AttemptResult | None = None
    died: bool = False  # its supervisor died without a status: it died with the agent


def scan(work_dir: Path, ctx: Any) -> list[Adopted]:
    """Every attempt whose control folder exists under ``work_dir/supervise``."""
    return []


def remove(work_dir: Path, attempt_id: str) -> None:
    """Delete an attempt's control and task folders (its report was acknowledged)."""
