"""Loading only what is alive at boot: unfinished workflows in full, finished ones by their keys.

With eviction on (``--evict-after``), a finished workflow leaves memory a while after it ends and
is read back from the store on demand. A boot that loaded every finished workflow would make the
controller's memory grow with its whole history until those evictions come round. So the
controller asks the store for a *live* snapshot: unfinished workflows with their tasks, attempts
and runs, and of the finished ones only ``(id, namespace, idempotency key)``, so that an idempotent
resubmission still finds its workflow (see :mod:`corral.controller.core.lifecycle`).

A finished workflow's attempts are all over, save one whose stop was still on its way when the
workflow ended by force; its agent reports it at reconnect and, being unknown, it is killed.
"""

from __future__ import annotations

from typing import Final

from corral.controller.core.model import WorkflowState
from corral.controller.store.base import Snapshot

__all__ = ["EVICTED_KEYS", "TERMINAL_STATES", "live_only", "live_select"]

TERMINAL_STATES: Final = tuple(str(state.value) for state in WorkflowState if state.terminal)
_IN: Final = ", ".join(f"'{state}'" for state in TERMINAL_STATES)
_LIVE: Final = f"state NOT IN ({_IN})"

#: The keys of finished workflows that have one (both SQL dialects).
EVICTED_KEYS: Final = (
    f"SELECT id, namespace, idempotency_key FROM workflows WHERE state IN ({_IN}) AND idempotency_key IS NOT NULL"
)


def live_select(select_sql: str, table: str) -> str:
    """``SELECT ... FROM table ORDER BY ...`` restricted to unfinished workflows' rows.

    ``table`` is ``workflows`` or a table with a ``workflow_id`` column (tasks, attempts, runs).
    """
    head, order, tail = select_sql.partition(" ORDER BY ")
    where = _LIVE if table == "workflows" else f"workflow_id IN (SELECT id FROM workflows WHERE {_LIVE})"
    return f"{head} WHERE {where}{order}{tail}"


def live_only(snapshot: Snapshot) -> None:
    """Drop finished workflows (and their tasks, attempts, runs) from a full snapshot, in place,
    keeping their idempotency keys: the same result as the stores' live queries."""
    finished = {w.id for w in snapshot.workflows if w.state.terminal}
    if not finished:
        return
    snapshot.evicted_keys = [
        (w.id, w.namespace, w.idempotency_key) for w in snapshot.workflows if w.id in finished and w.idempotency_key
    ]
    snapshot.workflows = [w for w in snapshot.workflows if w.id not in finished]
    snapshot.tasks = [t for t in snapshot.tasks if t.workflow_id not in finished]
    snapshot.attempts = [a for a in snapshot.attempts if a.workflow_id not in finished]
    snapshot.runs = [r for r in snapshot.runs if r.workflow_id not in finished]
