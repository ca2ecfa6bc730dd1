"""End to end on PostgreSQL: real controller and agent processes, the controller's state in the
throwaway server of ``tests/pgserver.py`` (``--db postgresql://...``).

A controller ``kill -9`` mid-run and a restart on the same database lose nothing and re-run
nothing completed; the agents re-attach by themselves. Tasks write a ledger line as the last
thing they do, so the ledger counts real runs whatever the controller believes.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from corral.controller.store.postgres import PostgresStore
from corral.v1 import types_pb2
from tests.e2e.conftest import Cluster, TaskState, WorkflowState, eventually
from tests.e2e.test_recovery import _ledger_task, _read_ledger

# make chaos: SQLite's twin (test_recovery) keeps the kill -9 replay in make test; this one adds
# only the store, which the contract suite and tests/rpc/test_postgres_controller.py cover there.
pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.timeout(90)]


def test_a_controller_on_postgresql_survives_kill9_and_restart(cluster: Cluster, tmp_path: Path, pg_dsn: str) -> None:
    ledger = tmp_path / "ledger"
    api = cluster.start({"alpha": 2, "beta": 2}, controller_flags=["--db", pg_dsn])  # the last --db wins
    tasks, expected = [], {}
    previous: list[str] = []
    for layer in range(3):
        names = [f"l{layer}-{i}" for i in range(4)]
        for i, name in enumerate(names):
            tasks.append(_ledger_task(name, previous, i, ledger, seconds=0.4 + 0.4 * i, shell=(layer + i) % 2 == 0))
            expected[name] = sum(expected[d] for d in previous) + i
        previous = names
    workflow_id = api.submit({"name": "crash-me-pg", "tasks": tasks})

    def mid_run() -> types_pb2.WorkflowStatus | None:
        status = api.status(workflow_id)
        states = Counter(t.state for t in status.tasks)
        return status if states[TaskState.COMPLETED] >= 4 and states[TaskState.RUNNING] >= 1 else None

    before = eventually(mid_run, 30, "the workflow to be half way")
    cluster.controller.kill9()
    completed_before = {t.name: t.attempt_id for t in before.tasks if t.state == TaskState.COMPLETED}
    time.sleep(0.5)  # the agents work on without a controller; their reports wait in their outboxes
    cluster.controller.start(["--db", pg_dsn, "--adopt-grace", "3", "--reconnect-grace", "2"])
    api = cluster.api
    final = api.wait_done(workflow_id, timeout=40)

    assert final.state == WorkflowState.COMPLETED, final.error
    by_name = {t.name: t for t in final.tasks}
    assert {name: json.loads(t.result_json) for name, t in by_name.items()} == expected
    runs = _read_ledger(ledger)
    assert set(runs) == set(expected)
    for name, attempt_id in completed_before.items():
        assert runs[name] == [attempt_id], f"{name} ran again after the restart: {runs[name]}"
    assert api.connected_agents() == {"alpha", "beta"}
    # The state is in PostgreSQL, not in the controller's folder.
    assert not cluster.controller.db.exists()
    store = PostgresStore(pg_dsn, pool_size=1)
    try:
        stored = {w.id: w for w in store.load().workflows}
        assert stored[workflow_id].state == "completed"
    finally:
        store.close()
