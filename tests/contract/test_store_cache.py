"""The cache entries, task cache policies and workflow parameters (issue 10) under the storage contract."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from corral.controller.core.cache import CacheChanges, CacheEntry
from corral.controller.core.model import TaskCache, Workflow
from corral.controller.store import codec
from corral.controller.store.base import ChangeBatch
from corral.controller.store.sqlite import MIGRATIONS, SqliteStore

from .conftest import Backend
from .test_store import minimal_task


def minimal_workflow(wid: str) -> Workflow:
    return Workflow(id=wid, name=wid, task_ids=[])


def _entry(key: str, *, result: bytes = b'{"x":1}', expires: float | None = None) -> CacheEntry:
    return CacheEntry(key, "default", result, f"wf-1/t-1/{key}", 100.0, expires, 150.0)


def test_entries_round_trip_are_replaced_and_deleted(backend: Backend) -> None:
    a, b = _entry("a", expires=200.0), _entry("b")
    backend.store.commit(ChangeBatch(cache=CacheChanges({"a": a, "b": b})))
    assert sorted(backend.reopen().load().cache_entries, key=lambda e: e.key) == [a, b]
    newer = CacheEntry("a", "default", b"2", "wf-2/t-2/x", 300.0, None, 300.0)
    backend.store.commit(ChangeBatch(cache=CacheChanges({"a": newer}, {"b", "never-stored"})))
    assert backend.reopen().load().cache_entries == [newer]


@pytest.mark.parametrize(
    "bad", [_entry("a", expires=math.nan), CacheEntry("a", "default", "text", "s", 1.0, None, 1.0)]
)  # type: ignore[arg-type]
def test_a_bad_entry_changes_nothing(backend: Backend, bad: CacheEntry) -> None:
    workflow = minimal_workflow("wf-1")
    with pytest.raises((ValueError, TypeError)):
        backend.store.commit(ChangeBatch(workflows={"wf-1": workflow}, cache=CacheChanges({"a": bad})))
    snapshot = backend.store.load()
    assert snapshot.cache_entries == [] and snapshot.workflows == []


def test_task_policies_sources_and_params_round_trip(backend: Backend) -> None:
    workflow = minimal_workflow("wf-1")
    workflow.params, workflow.no_cache = b'{"day":"2024-01-01"}', True
    task = minimal_task("t-1", "wf-1")
    task.cache, task.cache_source = TaskCache("k", 86400.0, "v2"), "wf-0/t-0/a-0"
    plain = minimal_task("t-2", "wf-1", 1)
    backend.store.commit(ChangeBatch(workflows={"wf-1": workflow}, tasks={"t-1": task, "t-2": plain}))
    snapshot = backend.reopen().load()
    assert snapshot.workflows == [workflow]
    assert snapshot.tasks == [task, plain]
    assert snapshot.tasks[1].cache is None


def test_sqlite_migration_15_gives_old_rows_no_cache_and_no_params(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    SqliteStore(path, migrations=MIGRATIONS[:11]).close()
    gang = codec.COLUMNS["tasks"].index("gang") + 1
    columns = codec.COLUMNS["tasks"][:gang]
    row = codec.encode_task(minimal_task("t", "w"))[:gang]
    wf_columns = codec.COLUMNS["workflows"][: codec.COLUMNS["workflows"].index("max_parallel") + 1]
    wf_row = codec.encode_workflow(minimal_workflow("w"))[: len(wf_columns)]
    with sqlite3.connect(path) as conn:
        for table, names, values in (("tasks", columns, row), ("workflows", wf_columns, wf_row)):
            quoted = ", ".join(f'"{c}"' for c in names)
            conn.execute(f"INSERT INTO {table} ({quoted}) VALUES ({', '.join('?' * len(values))})", values)
    conn.close()
    store = SqliteStore(path)
    try:
        snapshot = store.load()
        (task,) = snapshot.tasks
        (workflow,) = snapshot.workflows
        assert (task.cache, task.cache_source) == (None, "")
        assert (workflow.params, workflow.no_cache) == (b"{}", False)
        assert snapshot.cache_entries == []
    finally:
        store.close()
