"""The invariants checked after every scenario, and the row each scenario reports.

After the workflows are terminal (or their deadline passed), :func:`check` verifies:

- every task terminal and none lost (a task not terminal, or an acknowledged workflow the
  controller no longer knows);
- 0 overlapping executions of one task (ledger start..end, or start..last seen alive);
- 0 completed bodies run again beyond the task's own ``reruns_after_fence``;
- 0 processes of any attempt alive 5 s after its end (the scanner's sightings, plus a bounded
  final wait for stragglers);
- ``PRAGMA integrity_check`` ok on the controller's database;
- every agent's allocated resources and running attempts back to zero (ListAgents).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from tests.chaos.harness import TERMINAL, ChaosCluster
from tests.chaos.ledger import LedgerReport, analyse, read_ledger
from tests.chaos.observe import boottime

__all__ = ["ORPHAN_AFTER_S", "Row", "check", "format_table", "integrity"]

ORPHAN_AFTER_S = 5.0


@dataclass
class Row:
    """One scenario's line in the ``make chaos`` table, plus what failed and extra figures."""

    scenario: str
    lost: int = 0
    double: int = 0
    overlaps: int = 0
    orphans: int = 0
    detect_s: float | None = None
    recover_s: float | None = None
    failures: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.skipped and not self.failures

    def expect(self, condition: bool, failure: str) -> None:
        """Record ``failure`` unless ``condition`` holds."""
        if not condition:
            self.failures.append(failure)

    def expect_clean(self, *counts: str) -> None:
        """Record a failure for each of ``counts`` (default: all four) that is not 0."""
        for name in counts or ("lost", "double", "overlaps", "orphans"):
            value = getattr(self, name)
            self.expect(value == 0, f"{name}: {value}, expected 0")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def integrity(db: Path) -> str:
    """``PRAGMA integrity_check`` on the controller's database (read-only; safe while it runs)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    conn.close()
    return ", ".join(str(r[0]) for r in rows)


def check(cluster: ChaosCluster, row: Row, workflow_ids: Sequence[str], finished: bool) -> LedgerReport:
    """Run every invariant, filling ``row``'s counts and failures; returns the ledger analysis."""
    row.expect(finished, "the workflows did not finish within the scenario's deadline")
    statuses = {}
    for workflow_id in workflow_ids:
        try:
            statuses[workflow_id] = cluster.status(workflow_id)
        except grpc.RpcError as exc:
            row.lost += 1
            row.failures.append(f"workflow {workflow_id}: {exc.code().name} {exc.details()}")
    tasks = {(w, t.name): t for w, s in statuses.items() for t in s.tasks}
    row.lost += sum(1 for t in tasks.values() if t.state not in TERMINAL)

    row.expect(cluster.monitor.sync(), "the monitor could not poll the controller")
    ended = _attempt_ends(cluster)
    _wait_for_stragglers(cluster, ended)
    report = analyse(read_ledger(cluster.ledger), cluster.scanner.last_alive())
    row.overlaps = len(report.overlaps)
    for overlap in report.overlaps[:5]:
        row.failures.append(f"{overlap.task}: {overlap.first} and {overlap.second} overlapped {overlap.seconds:.1f} s")
    allowed = {key: t.reruns_after_fence for key, t in tasks.items()}
    row.figures["reruns_after_fence"] = sum(allowed.values())
    row.double = sum(max(0, extra - allowed.get(key, 0)) for key, extra in report.reruns().items())

    # An attempt ended at its end line or when the controller moved on from it, whichever came first.
    ends = dict(ended)
    for attempt_id, run in report.runs.items():
        if run.end is not None:
            ends[attempt_id] = min(ends.get(attempt_id, run.end), run.end)
    sightings = cluster.scanner.last_alive()
    alive_now = cluster.scanner.alive()
    orphans = sorted(a for a, seen in sightings.items() if a in ends and seen > ends[a] + ORPHAN_AFTER_S)
    orphans += sorted(a for a in alive_now if a not in ends)
    row.orphans = len(orphans)
    if orphans:
        row.failures.append(f"processes alive > {ORPHAN_AFTER_S:g} s after their attempt ended: {orphans[:5]}")

    verdict = integrity(cluster.controller.db)
    row.expect(verdict == "ok", f"integrity_check: {verdict}")
    _check_allocations(cluster, row)
    return report


def _attempt_ends(cluster: ChaosCluster) -> dict[str, float]:
    """Attempt id -> when it ended as the controller showed it (superseded or terminal)."""
    return cluster.monitor.ended_at()


def _wait_for_stragglers(cluster: ChaosCluster, ended: dict[str, float]) -> None:
    """Give processes of ended attempts until 5 s after the latest end (plus a scan) to go away."""
    latest = max(ended.values(), default=boottime())
    deadline = max(latest, boottime()) + ORPHAN_AFTER_S + 2 * cluster.scanner.period
    while boottime() < deadline and cluster.scanner.alive():
        time.sleep(cluster.scanner.period)
    cluster.scanner.scan()


def _check_allocations(cluster: ChaosCluster, row: Row) -> None:
    def idle() -> list[str]:
        busy = []
        for agent in cluster.list_agents():
            allocated = agent.allocated
            if agent.running_attempts or allocated.cpu_cores or allocated.memory_mb or allocated.gpu_count:
                busy.append(f"{agent.name}: {agent.running_attempts} running, {allocated.cpu_cores:g} cores")
        return busy

    try:
        cluster.wait(lambda: not idle(), 15, "every agent's allocation to return to zero")
    except TimeoutError:
        row.failures.append(f"allocations not back to zero: {idle()}")


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_table(rows: Sequence[Row]) -> str:
    """The ``make chaos`` table, one line per scenario, then one line per failure."""
    header = ("scenario", "result", "lost", "double", "overlaps", "orphans", "detect s", "recover s", "took s")
    lines = []
    for row in rows:
        result = "skip" if row.skipped else ("ok" if row.ok else "FAIL")
        cells = (row.scenario, result, row.lost, row.double, row.overlaps, row.orphans)
        lines.append([*map(str, cells), _cell(row.detect_s), _cell(row.recover_s), f"{row.duration_s:.0f}"])
    widths = [max(len(str(h)), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    for row in rows:
        if row.skipped:
            out.append(f"- {row.scenario}: skipped: {row.skipped}")
        for failure in row.failures:
            out.append(f"- {row.scenario}: {failure}")
        if row.figures:
            figures = ", ".join(f"{k}={_fmt(v)}" for k, v in row.figures.items())
            out.append(f"  {row.scenario}: {figures}")
    return "\n".join(out)


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
