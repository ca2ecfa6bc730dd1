"""The storage contract, run against every backend; then what only the SQLite file promises."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.controller.core.access import AccessChanges, AuditEntry, Namespace, RevokedCert, Secret, TokenRecord
from corral.controller.core.model import (
    Agent,
    AgentState,
    Attempt,
    AttemptState,
    Inventory,
    LabelExpr,
    Resources,
    Task,
    TaskState,
    TaskType,
    Workflow,
    WorkflowEvent,
    WorkflowState,
)
from corral.controller.store import codec, event_codec
from corral.controller.store.base import ChangeBatch, LogChunk, Snapshot, Store
from corral.controller.store.memory import MemoryStore
from corral.controller.store.sqlite import MIGRATIONS, SchemaVersionError, SqliteStore

from .conftest import Backend

MiB = 1024 * 1024


# --- records ---------------------------------------------------------------------------------


def full_workflow(wid: str = "wf-1") -> Workflow:
    """A workflow with every field away from its default."""
    return Workflow(
        id=wid,
        name="nightly ETL",
        task_ids=[f"{wid}-t0", f"{wid}-t1"],
        state=WorkflowState.RUNNING,
        metadata=b'{"owner":"data","n":[1,2]}',
        labels={"team": "data", "env": "prod"},
        idempotency_key="key-123",
        standalone=True,
        created_at=1700000000.25,
        started_at=1700000001.5,
        finished_at=1700000099.75,
        error="boom",
        namespace="team-a",
        max_agent_losses=5,
        max_parallel=7,
    )


def full_task(tid: str = "wf-1-t1", wid: str = "wf-1", index: int = 1) -> Task:
    """A task with every field away from its default, including awkward strings and bytes."""
    return Task(
        id=tid,
        workflow_id=wid,
        name='train "big" model \\ ünïcode',
        index=index,
        agent_type="python",
        payload=b'{"fn":"mod:train","args":[1,2.5,null]}',
        type=TaskType.HYBRID,
        resources=Resources(2.5, 4096, 10_000, 100, 2, {"license": 1.0, "fpga": 0.5}),
        priority=99,
        timeout_s=3600.5,
        max_retries=3,
        retry_backoff_s=2.5,
        dependencies=("wf-1-t0", 'odd"id', "x\\y"),
        constraints={"zone": "eu-1", "disk": "ssd"},
        estimated_duration_s=12.5,
        namespace="team-a",
        state=TaskState.RUNNING,
        retries_used=1,
        attempts=2,
        current_attempt_id="att-2",
        agent_id="agent-1",
        result=b'{"ok":true}',
        error="previous attempt failed",
        exit_code=-9,
        created_at=1.0,
        ready_at=2.0,
        not_before=3.0,
        started_at=4.0,
        finished_at=5.0,
        on_disconnect="keep",
        max_disconnect_s=600.5,
        max_agent_losses=2,
        agent_losses=1,
        reruns_after_fence=3,
        failure_reason="poison",
        constraint_exprs=(
            LabelExpr("zone", "in", ("eu-1", 'odd "z"')),
            LabelExpr("gpu", "exists"),
            LabelExpr("os", "not_in", ("windows",)),
            LabelExpr("spot", "does_not_exist"),
        ),
        spread="zone",
        affinity={"disk": "nvme", "rack": "r ü"},
        preemptible=True,
        max_preemptions=5,
        preemptions=2,
        last_preemption="preempted by big (priority 100) of workflow wf-9",
        gang="ring ü",
    )


def minimal_task(tid: str, wid: str = "wf-1", index: int = 0) -> Task:
    return Task(id=tid, workflow_id=wid, name=tid, index=index, agent_type="shell", payload=b"{}")


def full_attempt(aid: str = "att-2") -> Attempt:
    return Attempt(
        id=aid,
        task_id="wf-1-t1",
        workflow_id="wf-1",
        agent_id="agent-1",
        number=2,
        state=AttemptState.TIMED_OUT,
        resources=Resources(cpu_cores=1.0, gpu_count=2, custom={"license": 1.0}),
        gpu_ids=(0, 3),
        pulled=True,
        assigned_at=10.0,
        started_at=11.0,
        finished_at=12.0,
        deadline=20.0,
        exit_code=137,
        error="timed out",
        peak_rss_bytes=52 << 20,
        cpu_s=1.25,
    )


def full_agent(aid: str = "agent-1") -> Agent:
    return Agent(
        id=aid,
        name="gpu-box",
        hostname="gpu-box.local",
        agent_types=("shell", "python"),
        labels={"rack": "r1"},
        inventory=Inventory(Resources(64.0, 256_000, 1_000_000, 10_000, 4, {"fpga": 2.0}), 16, (0, 1, 2, 3)),
        state=AgentState.DRAINING,
        session_epoch=7,
        connected_at=100.0,
        last_seen=101.5,
        version="0.1.0",
        incarnation="inc-7f3a",
    )


def full_batch() -> ChangeBatch:
    t0 = dataclasses.replace(full_task("wf-1-t0", index=0), dependencies=(), state=TaskState.COMPLETED)
    t1 = full_task()
    return ChangeBatch(
        workflows={"wf-1": full_workflow()},
        tasks={t0.id: t0, t1.id: t1},
        attempts={"att-2": full_attempt()},
        agents={"agent-1": full_agent()},
        logs=[LogChunk("att-2", b"hello\n", b"warn\n")],
        meta={"schema_note": "x", "boot_epoch": "3"},
    )


# --- round trips -----------------------------------------------------------------------------


def test_empty_store_loads_empty_snapshot(store: Store) -> None:
    assert store.load() == Snapshot()


def test_every_field_round_trips(backend: Backend) -> None:
    batch = full_batch()
    backend.store.commit(batch)
    for snapshot in (backend.store.load(), backend.reopen().load()):
        assert snapshot.workflows == list(batch.workflows.values())
        assert snapshot.tasks == list(batch.tasks.values())
        assert snapshot.attempts == list(batch.attempts.values())
        assert snapshot.agents == list(batch.agents.values())
        assert snapshot.meta == batch.meta


def test_restored_types_are_exact(backend: Backend) -> None:
    backend.store.commit(full_batch())
    snap = backend.reopen().load()
    task = snap.tasks[1]
    assert type(task.type) is TaskType and type(task.state) is TaskState
    assert type(task.dependencies) is tuple and type(task.payload) is bytes and type(task.result) is bytes
    assert type(task.resources) is Resources and type(task.resources.cpu_cores) is float
    assert type(snap.workflows[0].state) is WorkflowState and type(snap.workflows[0].task_ids) is list
    assert snap.workflows[0].standalone is True
    assert type(snap.attempts[0].gpu_ids) is tuple and snap.attempts[0].pulled is True
    assert type(snap.attempts[0].peak_rss_bytes) is int and type(snap.attempts[0].cpu_s) is float
    assert type(snap.agents[0].inventory) is Inventory and type(snap.agents[0].agent_types) is tuple
    assert type(snap.agents[0].inventory.gpu_ids) is tuple and type(snap.agents[0].state) is AgentState


def test_default_records_round_trip(backend: Backend) -> None:
    batch = ChangeBatch(
        workflows={"w": Workflow("w", "w", [])},
        tasks={"t": minimal_task("t", "w")},
        attempts={"a": Attempt("a", "t", "w", "agent", 1)},
        agents={"agent": Agent("agent", "agent")},
    )
    backend.store.commit(batch)
    snap = backend.reopen().load()
    assert snap == Snapshot(
        workflows=list(batch.workflows.values()),
        tasks=list(batch.tasks.values()),
        attempts=list(batch.attempts.values()),
        agents=list(batch.agents.values()),
    )


def test_empty_bytes_and_none_stay_distinct(backend: Backend) -> None:
    with_empty = dataclasses.replace(minimal_task("a"), payload=b"", result=b"")
    with_none = dataclasses.replace(minimal_task("b", index=1), result=None)
    backend.store.commit(ChangeBatch(tasks={"a": with_empty, "b": with_none}))
    assert backend.reopen().load().tasks == [with_empty, with_none]


def test_upsert_latest_state_wins_and_other_rows_stay(backend: Backend) -> None:
    backend.store.commit(full_batch())
    changed = dataclasses.replace(full_task(), state=TaskState.COMPLETED, result=b"[1]", finished_at=9.0)
    agent = dataclasses.replace(full_agent(), state=AgentState.LOST, last_seen=500.0)
    backend.store.commit(ChangeBatch(tasks={changed.id: changed}, agents={agent.id: agent}, meta={"boot_epoch": "4"}))
    snap = backend.reopen().load()
    assert snap.tasks[1] == changed
    assert snap.tasks[0] == full_batch().tasks["wf-1-t0"]
    assert snap.agents == [agent]
    assert snap.workflows == [full_workflow()]
    assert snap.meta == {"schema_note": "x", "boot_epoch": "4"}


def test_a_moved_task_gets_its_progress_and_keeps_every_other_column(backend: Backend) -> None:
    backend.store.commit(full_batch())
    moved = dataclasses.replace(
        full_task(),
        state=TaskState.COMPLETED,
        retries_used=2,
        attempts=4,
        current_attempt_id="a-9",
        agent_id="agent-9",
        result=b'{"ok": true}',
        error="",
        exit_code=0,
        ready_at=7.0,
        not_before=None,
        started_at=8.0,
        finished_at=9.5,
    )
    assert codec.encode_task(moved) != codec.encode_task(full_task())
    backend.store.commit(ChangeBatch(moved_tasks={moved.id: moved}))
    snap = backend.reopen().load()
    assert snap.tasks[1] == moved  # progress columns updated, the rest as written before
    assert snap.tasks[0] == full_batch().tasks["wf-1-t0"]


def test_tasks_load_ordered_by_workflow_and_index(store: Store) -> None:
    tasks = [minimal_task(f"b-{i}", "wf-b", i) for i in (2, 0, 1)] + [minimal_task("a-0", "wf-a", 0)]
    store.commit(ChangeBatch(tasks={t.id: t for t in tasks}))
    assert [t.id for t in store.load().tasks] == ["a-0", "b-0", "b-1", "b-2"]


def test_empty_batch_is_a_no_op(store: Store) -> None:
    store.commit(ChangeBatch())
    assert store.load() == Snapshot()


def test_large_batch_round_trips(backend: Backend) -> None:
    tasks = {
        f"t{i:05d}": dataclasses.replace(
            minimal_task(f"t{i:05d}", "big", i), resources=Resources(1.0, 256), dependencies=(f"t{i - 1:05d}",)
        )
        for i in range(1, 5001)
    }
    workflow = Workflow("big", "big", list(tasks))
    backend.store.commit(ChangeBatch(workflows={"big": workflow}, tasks=tasks))
    snap = backend.reopen().load()
    assert snap.workflows == [workflow]
    assert snap.tasks == list(tasks.values())


# --- isolation -------------------------------------------------------------------------------


def test_mutating_committed_objects_does_not_change_the_store(store: Store) -> None:
    batch = full_batch()
    store.commit(batch)
    workflow, task = batch.workflows["wf-1"], batch.tasks["wf-1-t1"]
    workflow.task_ids.append("intruder")
    assert isinstance(workflow.labels, dict)
    workflow.labels["team"] = "other"
    assert isinstance(task.constraints, dict) and isinstance(task.resources.custom, dict)
    task.constraints["zone"] = "moon"
    task.resources.custom["license"] = 99.0
    task.state = TaskState.FAILED
    snap = store.load()
    assert snap.workflows == [full_workflow()]
    assert snap.tasks[1] == full_task()


def test_mutating_loaded_objects_does_not_change_the_store(store: Store) -> None:
    store.commit(full_batch())
    first = store.load()
    first.workflows[0].task_ids.clear()
    first.tasks[1].state = TaskState.CANCELLED
    assert isinstance(first.agents[0].labels, dict)
    first.agents[0].labels["rack"] = "elsewhere"
    first.meta["boot_epoch"] = "99"
    second = store.load()
    assert second.workflows == [full_workflow()]
    assert second.tasks[1] == full_task()
    assert second.agents == [full_agent()]
    assert second.meta["boot_epoch"] == "3"


# --- atomicity -------------------------------------------------------------------------------


def _bad_batches() -> dict[str, ChangeBatch]:
    """Batches whose first records are fine and whose last one cannot be stored."""

    def with_bad(**bad: Any) -> ChangeBatch:
        good = ChangeBatch(
            workflows={"new-wf": Workflow("new-wf", "new", ["new-t"])},
            tasks={"new-t": minimal_task("new-t", "new-wf")},
            logs=[LogChunk("att-2", b"more output")],
            meta={"boot_epoch": "100"},
        )
        for name, records in bad.items():
            target = getattr(good, name)
            if isinstance(target, list):
                target.extend(records)
            else:
                target.update(records)
        return good

    nan_task = dataclasses.replace(minimal_task("bad", index=5), resources=Resources(cpu_cores=math.nan))
    obj_agent = dataclasses.replace(full_agent("bad"), labels={"x": object()})  # type: ignore[dict-item]
    str_payload = dataclasses.replace(minimal_task("bad", index=5), payload="{}")  # type: ignore[arg-type]
    bad_state = dataclasses.replace(full_attempt("bad"), state="exploded")  # type: ignore[arg-type]
    return {
        "nan-resource": with_bad(tasks={"bad": nan_task}),
        "unencodable-label": with_bad(agents={"bad": obj_agent}),
        "str-payload": with_bad(tasks={"bad": str_payload}),
        "unknown-enum": with_bad(attempts={"bad": bad_state}),
        "str-log": with_bad(logs=[LogChunk("att-2", "text")]),  # type: ignore[arg-type]
    }


@pytest.mark.parametrize("case", sorted(_bad_batches()))
def test_failed_commit_changes_nothing(backend: Backend, case: str) -> None:
    backend.store.commit(full_batch())
    before = backend.store.load()
    logs_before = backend.store.read_logs("att-2")
    with pytest.raises((ValueError, TypeError)):
        backend.store.commit(_bad_batches()[case])
    for reopen in (False, True):
        store = backend.reopen() if reopen else backend.store
        assert store.load() == before
        assert store.read_logs("att-2") == logs_before
    # The store stays usable after a refused batch.
    backend.store.commit(ChangeBatch(meta={"after": "ok"}))
    assert backend.store.load().meta["after"] == "ok"


# --- logs ------------------------------------------------------------------------------------


def test_logs_accumulate_per_stream(backend: Backend) -> None:
    store = backend.store
    store.commit(ChangeBatch(logs=[LogChunk("a", b"one\n", b"err1\n"), LogChunk("b", b"other")]))
    store.commit(ChangeBatch(logs=[LogChunk("a", b"two\n"), LogChunk("a", b"", b"err2\n")]))
    store.commit(ChangeBatch(logs=[LogChunk("a", b"three\n")]))
    store = backend.reopen()
    assert store.read_logs("a") == LogChunk("a", b"one\ntwo\nthree\n", b"err1\nerr2\n", False)
    assert store.read_logs("b") == LogChunk("b", b"other")


def test_read_logs_after_offsets(store: Store) -> None:
    for part in (b"0123", b"4567", b"89"):
        store.commit(ChangeBatch(logs=[LogChunk("a", part, part.upper() + b"!")]))
    assert store.read_logs("a", 5, 0).stdout == b"56789"
    assert store.read_logs("a", 4, 0).stdout == b"456789"
    assert store.read_logs("a", 0, 5).stderr == b"4567!89!"
    both = store.read_logs("a", 10, 100)
    assert both == LogChunk("a", b"", b"", False)


def test_unknown_attempt_has_empty_logs(store: Store) -> None:
    assert store.read_logs("nobody", 3, 7) == LogChunk("nobody")


def test_negative_log_offset_is_refused(store: Store) -> None:
    with pytest.raises(ValueError):
        store.read_logs("a", -1, 0)


def test_logs_are_capped_per_stream_and_marked_truncated(backend: Backend) -> None:
    store = backend.store
    assert MiB == type(store).MAX_LOG_BYTES_PER_STREAM  # type: ignore[attr-defined]
    head = b"x" * (MiB - 10)
    store.commit(ChangeBatch(logs=[LogChunk("a", head, b"small")]))
    assert store.read_logs("a").truncated is False
    store.commit(ChangeBatch(logs=[LogChunk("a", b"0123456789ABCDEF")]))
    store.commit(ChangeBatch(logs=[LogChunk("a", b"after the cap", b" stderr still fits")]))
    store = backend.reopen()
    chunk = store.read_logs("a")
    assert chunk.stdout == head + b"0123456789"
    assert chunk.stderr == b"small stderr still fits"
    assert chunk.truncated is True
    assert store.read_logs("a", MiB - 2).stdout == b"89"


def test_one_oversized_chunk_is_cut(store: Store) -> None:
    store.commit(ChangeBatch(logs=[LogChunk("a", b"", b"e" * (2 * MiB))]))
    chunk = store.read_logs("a")
    assert (len(chunk.stdout), len(chunk.stderr), chunk.truncated) == (0, MiB, True)


def test_agent_reported_truncation_is_kept(backend: Backend) -> None:
    backend.store.commit(ChangeBatch(logs=[LogChunk("a", b"partial", truncated=True)]))
    backend.store.commit(ChangeBatch(logs=[LogChunk("a", b" more")]))
    assert backend.reopen().read_logs("a") == LogChunk("a", b"partial more", b"", True)


def test_deleted_agents_are_gone_durably_and_others_stay(backend: Backend) -> None:
    backend.store.commit(ChangeBatch(agents={a: full_agent(a) for a in ("a1", "a2", "a3")}))
    batch = ChangeBatch(deleted_agents={"a1", "a3", "never-stored"})
    assert batch and batch.size() == 3
    backend.store.commit(batch)
    assert [a.id for a in backend.reopen().load().agents] == ["a2"]
    # A deleted id may come back later as a new row.
    backend.store.commit(ChangeBatch(agents={"a1": full_agent("a1")}))
    assert [a.id for a in backend.reopen().load().agents] == ["a1", "a2"]


# --- SQLite only -----------------------------------------------------------------------------


def _pragma(path: Path, name: str) -> Any:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


def test_sqlite_uses_wal_and_full_sync(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db")
    try:
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store._conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    finally:
        store.close()
    relaxed = SqliteStore(tmp_path / "d.db", synchronous="normal")
    try:
        assert relaxed._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    finally:
        relaxed.close()
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStore(tmp_path / "e.db", synchronous="sometimes")


def test_sqlite_schema_is_created_on_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    path.touch()
    store = SqliteStore(path)
    assert store.schema_version == len(MIGRATIONS)
    store.close()
    db = sqlite_utils.Database(path)
    try:
        assert {"workflows", "tasks", "attempts", "agents", "logs", "meta"} <= set(db.table_names())
        for table, columns in codec.COLUMNS.items():
            assert tuple(db.table(table).columns_dict) == columns, table
        assert ["workflow_id", "index"] in [i.columns for i in db.table("tasks").indexes]
        assert ["task_id", "number"] in [i.columns for i in db.table("attempts").indexes]
    finally:
        db.close()
    assert _pragma(path, "user_version") == len(MIGRATIONS)


def _fake_v1(db: sqlite_utils.Database) -> None:
    db.create_table("things", {"id": str, "name": str}, pk="id")


def _fake_v2(db: sqlite_utils.Database) -> None:
    db.table("things").add_column("size", int, not_null_default=0)
    db.create_table("more", {"id": str}, pk="id")


def _broken_v2(db: sqlite_utils.Database) -> None:
    db.create_table("half_done", {"id": str}, pk="id")
    raise RuntimeError("migration bug")


def test_sqlite_migrates_an_older_file_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    SqliteStore(path, migrations=[_fake_v1]).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO things (id, name) VALUES ('a', 'kept')")
    conn.close()
    store = SqliteStore(path, migrations=[_fake_v1, _fake_v2])
    assert store.schema_version == 2
    store.close()
    db = sqlite_utils.Database(path)
    try:
        assert list(db.table("things").rows) == [{"id": "a", "name": "kept", "size": 0}]
        assert "more" in db.table_names()
    finally:
        db.close()


def test_sqlite_failed_migration_leaves_the_file_at_its_version(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    SqliteStore(path, migrations=[_fake_v1]).close()
    with pytest.raises(RuntimeError, match="migration bug"):
        SqliteStore(path, migrations=[_fake_v1, _broken_v2])
    assert _pragma(path, "user_version") == 1
    db = sqlite_utils.Database(path)
    try:
        assert "half_done" not in db.table_names()
    finally:
        db.close()


def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    newer = len(MIGRATIONS) + 1
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {newer}")
    conn.close()
    with pytest.raises(SchemaVersionError, match=f"schema version {newer}"):
        SqliteStore(path)
    assert _pragma(path, "user_version") == newer
    assert _pragma(path, "journal_mode") != "wal"  # refused before touching anything


def test_sqlite_rolls_back_when_the_database_rejects_a_row(tmp_path: Path) -> None:
    # Passes encoding but fails inside the transaction, after the workflow row was written.
    store = SqliteStore(tmp_path / "c.db")
    try:
        store.commit(full_batch())
        before = store.load()
        too_big = dataclasses.replace(minimal_task("huge", index=9), priority=2**70)
        batch = ChangeBatch(workflows={"new-wf": Workflow("new-wf", "n", [])}, tasks={"huge": too_big})
        with pytest.raises(OverflowError):
            store.commit(batch)
        assert not store._conn.in_transaction
        assert store.load() == before
    finally:
        store.close()


async def test_sqlite_commit_from_worker_threads(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db")
    try:
        for i in range(5):
            task = minimal_task(f"t{i}", index=i)
            await asyncio.to_thread(store.commit, ChangeBatch(tasks={task.id: task}))
        snap = await asyncio.to_thread(store.load)
        assert [t.id for t in snap.tasks] == [f"t{i}" for i in range(5)]
        assert [t.id for t in store.load().tasks] == [f"t{i}" for i in range(5)]
    finally:
        store.close()


def test_sqlite_second_store_sees_committed_state(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    writer = SqliteStore(path)
    try:
        writer.commit(full_batch())
        reader = SqliteStore(path)
        try:
            assert reader.load() == writer.load()
        finally:
            reader.close()
    finally:
        writer.close()


def test_sqlite_in_memory_database_works() -> None:
    store = SqliteStore(":memory:")
    try:
        store.commit(full_batch())
        assert store.load().workflows == [full_workflow()]
        assert store.read_logs("att-2").stdout == b"hello\n"
    finally:
        store.close()


def test_memory_store_refuses_use_after_close() -> None:
    store = MemoryStore()
    store.close()
    with pytest.raises(RuntimeError):
        store.load()


# --- property: any valid record survives both backends ----------------------------------------

_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_opt_floats = st.none() | _floats
_str_map = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
_resources = st.builds(
    Resources,
    _floats,
    _ints,
    _ints,
    _ints,
    _ints,
    st.dictionaries(st.text(max_size=8), _floats, max_size=3),
)
_tasks = st.builds(
    Task,
    id=st.text(min_size=1, max_size=12),
    workflow_id=st.text(max_size=12),
    name=st.text(max_size=20),
    index=_ints,
    agent_type=st.text(max_size=8),
    payload=st.binary(max_size=32),
    type=st.sampled_from(TaskType),
    resources=_resources,
    priority=_ints,
    timeout_s=_opt_floats,
    dependencies=st.lists(st.text(max_size=8), max_size=4).map(tuple),
    constraints=_str_map,
    constraint_exprs=st.lists(
        st.builds(
            LabelExpr,
            st.text(max_size=8),
            st.sampled_from(["in", "not_in", "exists", "does_not_exist"]),
            st.lists(st.text(max_size=8), max_size=3).map(tuple),
        ),
        max_size=3,
    ).map(tuple),
    spread=st.text(max_size=8),
    affinity=_str_map,
    preemptible=st.booleans(),
    max_preemptions=st.none() | _ints,
    preemptions=_ints,
    last_preemption=st.text(max_size=20),
    gang=st.text(max_size=8),
    state=st.sampled_from(TaskState),
    current_attempt_id=st.none() | st.text(max_size=8),
    result=st.none() | st.binary(max_size=16),
    error=st.text(max_size=20),
    exit_code=st.none() | _ints,
    created_at=_floats,
    finished_at=_opt_floats,
)
_agents = st.builds(
    Agent,
    id=st.text(min_size=1, max_size=12),
    name=st.text(max_size=12),
    agent_types=st.lists(st.text(max_size=8), max_size=3).map(tuple),
    labels=_str_map,
    inventory=st.builds(Inventory, _resources, _ints, st.lists(_ints, max_size=4).map(tuple)),
    state=st.sampled_from(AgentState),
    last_seen=_floats,
)


@settings(max_examples=40, deadline=None)
@given(task=_tasks, agent=_agents)
def test_any_record_round_trips_through_both_backends(task: Task, agent: Agent) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stores: list[Store] = [MemoryStore(), SqliteStore(Path(tmp) / "c.db", synchronous="OFF")]
        for store in stores:
            try:
                store.commit(ChangeBatch(tasks={task.id: task}, agents={agent.id: agent}))
                snap = store.load()
                assert snap.tasks == [task]
                assert snap.agents == [agent]
            finally:
                store.close()


# --- access records ----------------------------------------------------------------------------


def full_token(tid: str = "tok1") -> TokenRecord:
    return TokenRecord(
        id=tid,
        hash="ab" * 32,
        kind="join",
        role="agent",
        namespaces=("team-a", "team-b"),
        description='for the "gpu" pool',
        created_at=1700000000.5,
        expires_at=1700003600.25,
        revoked_at=None,
        created_by="token:root",
        name_pattern="gpu-*",
        uses=3,
        used=1,
        labels={"gpu": "a100", "zone": "eu"},
        agent_types=("python",),
        agent_name="",
        parent="",
    )


def test_access_records_round_trip(backend: Backend) -> None:
    changes = AccessChanges(
        namespaces={"team-a": Namespace("team-a", "the A team", 1700000000.0)},
        tokens={"tok1": full_token()},
        secrets={("team-a", "db"): Secret("team-a", "db", b"\x00ciphertext\xff", 1700000001.0)},
        revoked_certs={"agent-7": RevokedCert("agent-7", "stolen", 1700000002.0)},
    )
    backend.store.commit(ChangeBatch(access=changes))
    for snapshot in (backend.store.load(), backend.reopen().load()):
        assert snapshot.access.namespaces == list(changes.namespaces.values())
        assert snapshot.access.tokens == [full_token()]
        assert type(snapshot.access.tokens[0].namespaces) is tuple
        assert snapshot.access.secrets == list(changes.secrets.values())
        assert snapshot.access.revoked_certs == list(changes.revoked_certs.values())


def test_secrets_are_deleted_and_tokens_updated(backend: Backend) -> None:
    store = backend.store
    store.commit(
        ChangeBatch(
            access=AccessChanges(
                tokens={"tok1": full_token()},
                secrets={("ns", "a"): Secret("ns", "a", b"1"), ("ns", "b"): Secret("ns", "b", b"2")},
            )
        )
    )
    revoked = dataclasses.replace(full_token(), revoked_at=1700000100.0, used=2)
    store.commit(ChangeBatch(access=AccessChanges(tokens={"tok1": revoked}, deleted_secrets={("ns", "a")})))
    snapshot = backend.reopen().load()
    assert snapshot.access.tokens == [revoked]
    assert [s.name for s in snapshot.access.secrets] == ["b"]


def test_audit_is_appended_read_filtered_and_pruned(backend: Backend) -> None:
    store = backend.store
    entries = [AuditEntry(1000.0 + i, f"token:{i % 2}", "admin", "/m/X", f"t{i}", "default", "OK") for i in range(6)]
    store.commit(ChangeBatch(access=AccessChanges(audit=entries[:3])))
    store.commit(ChangeBatch(access=AccessChanges(audit=entries[3:])))
    store = backend.reopen()
    read = store.read_audit(0.0)
    assert [e.target for e in read] == [f"t{i}" for i in range(6)]
    assert [e.seq for e in read] == sorted({e.seq for e in read})
    assert [e.target for e in store.read_audit(1002.0, "token:1")] == ["t3", "t5"]
    assert [e.target for e in store.read_audit(0.0, limit=2)] == ["t4", "t5"]  # the newest, oldest first
    store.commit(ChangeBatch(access=AccessChanges(audit_prune_before=1004.0)))
    assert [e.target for e in store.read_audit(0.0)] == ["t4", "t5"]
    assert store.load().access.tokens == []  # the audit trail is not part of the snapshot


def test_sqlite_migration_2_puts_existing_workflows_in_default(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    SqliteStore(path, migrations=MIGRATIONS[:1]).close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO workflows (id, name, task_ids, state, metadata, labels, standalone, created_at, error) "
            "VALUES ('w', 'old', '[]', 'pending', X'7B7D', '{}', 0, 1.0, '')"
        )
    conn.close()
    store = SqliteStore(path)
    try:
        assert store.schema_version == len(MIGRATIONS)
        (workflow,) = store.load().workflows
        assert workflow.namespace == "default"
    finally:
        store.close()


def test_sqlite_migration_3_gives_old_rows_the_issue_8_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    old = SqliteStore(path, migrations=MIGRATIONS[:2])
    with sqlite3.connect(path) as conn:  # the version-2 columns only, as an old corral wrote them
        conn.execute(
            "INSERT INTO workflows (id, name, task_ids, state, metadata, labels, standalone, created_at, error) "
            "VALUES ('w', 'old', '[\"t\"]', 'running', X'7B7D', '{}', 0, 1.0, '')"
        )
    conn.close()
    old.close()
    store = SqliteStore(path)
    try:
        assert store.schema_version == len(MIGRATIONS)
        (workflow,) = store.load().workflows
        assert workflow.max_agent_losses is None
        assert store.load().last_event_seq == 0
        assert store.workflow_events("w") == []
        store.commit(ChangeBatch(tasks={"t": minimal_task("t", "w")}))
        (task,) = store.load().tasks
        assert (task.on_disconnect, task.agent_losses, task.reruns_after_fence, task.failure_reason) == (
            "stop",
            0,
            0,
            "",
        )
    finally:
        store.close()


def test_sqlite_migration_5_gives_old_tasks_no_placement_preferences(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    old = SqliteStore(path, migrations=MIGRATIONS[:4])
    old.close()
    columns = codec.COLUMNS["tasks"][:35]  # the version-4 columns, as an older corral wrote them
    row = codec.encode_task(minimal_task("t", "w"))[:35]
    with sqlite3.connect(path) as conn:
        names = ", ".join(f'"{c}"' for c in columns)
        conn.execute(f"INSERT INTO tasks ({names}) VALUES ({', '.join('?' * len(row))})", row)
    conn.close()
    store = SqliteStore(path)
    try:
        assert store.schema_version == len(MIGRATIONS)
        (task,) = store.load().tasks
        assert (task.constraint_exprs, task.spread, task.affinity) == ((), "", {})
        task.constraint_exprs = (LabelExpr("zone", "in", ("a",)),)
        store.commit(ChangeBatch(tasks={"t": task}))
        assert store.load().tasks[0].constraint_exprs == (LabelExpr("zone", "in", ("a",)),)
    finally:
        store.close()


# --- the event log (issue 8) ------------------------------------------------------------------


def _event(seq: int, workflow_id: str = "wf-1", task_id: str = "", kind: str = "placed") -> WorkflowEvent:
    return WorkflowEvent(
        seq=seq,
        at=1000.0 + seq,
        workflow_id=workflow_id,
        workflow_state=WorkflowState.RUNNING,
        task_id=task_id,
        task_name=task_id.upper(),
        task_state=TaskState.READY if task_id else None,
        attempt_id=f"att-{seq}" if task_id else "",
        agent_id="agent-1" if task_id else "",
        message="m \u00fc",
        kind=kind,
        reason=f'why {seq}: fenced "quoted"',
    )


def test_event_log_round_trips_every_field_in_order(backend: Backend) -> None:
    events = [_event(1), _event(2, task_id="t1", kind="fenced"), _event(3, "wf-2", "t9"), _event(4, task_id="t2")]
    backend.store.commit(ChangeBatch(events=events[:2]))
    backend.store.commit(ChangeBatch(events=events[2:]))
    store = backend.reopen()
    assert store.workflow_events("wf-1") == [events[0], events[1], events[3]]
    assert store.workflow_events("wf-2") == [events[2]]
    assert store.workflow_events("nope") == []
    assert store.load().last_event_seq == 4


def test_event_log_pages_by_seq_and_filters_by_task(backend: Backend) -> None:
    events = [_event(seq, task_id=f"t{seq % 3}") for seq in range(1, 31)]
    backend.store.commit(ChangeBatch(events=events))
    store = backend.store
    assert [e.seq for e in store.workflow_events("wf-1", after_seq=10, limit=5)] == [11, 12, 13, 14, 15]
    assert [e.seq for e in store.workflow_events("wf-1", after_seq=28)] == [29, 30]
    assert [e.seq for e in store.workflow_events("wf-1", task_id="t1", limit=3)] == [1, 4, 7]
    assert [e.seq for e in store.workflow_events("wf-1", after_seq=25, task_id="t1")] == [28]
    assert store.workflow_events("wf-1", limit=0) == []


def test_event_log_refuses_a_reused_seq_and_changes_nothing(backend: Backend) -> None:
    backend.store.commit(ChangeBatch(events=[_event(1)]))
    with pytest.raises((ValueError, sqlite3.IntegrityError)):
        backend.store.commit(ChangeBatch(tasks={"x": minimal_task("x")}, events=[_event(2), _event(1)]))
    assert backend.store.load().tasks == []
    assert [e.seq for e in backend.store.workflow_events("wf-1")] == [1]


def test_sqlite_event_log_reads_are_a_range_of_the_workflow_index(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db")
    try:
        plan = store._reader.execute(
            "EXPLAIN QUERY PLAN SELECT data FROM event_batches WHERE workflow_id = ? AND last_seq > ? "
            "ORDER BY last_seq",
            ("w", 0),
        ).fetchall()
        # The (workflow_id, last_seq) index: a range search, no sort, no scan.
        assert any("event_batches_of_workflow (workflow_id=? AND last_seq>?)" in str(row) for row in plan), plan
        assert not any("TEMP B-TREE" in str(row) or "SCAN" in str(row) for row in plan), plan
    finally:
        store.close()


def test_sqlite_event_log_is_one_row_per_workflow_per_commit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db")
    try:
        events = [_event(seq, "wf-1" if seq % 2 else "wf-2", task_id=f"t{seq}") for seq in range(1, 201)]
        store.commit(ChangeBatch(events=events))
        rows = store._reader.execute("SELECT workflow_id, first_seq, last_seq FROM event_batches ORDER BY 3").fetchall()
        assert rows == [("wf-1", 1, 199), ("wf-2", 2, 200)]
        assert store.workflow_events("wf-1", after_seq=150, limit=3) == [events[150], events[152], events[154]]
        assert store.workflow_events("wf-2", task_id="t8") == [events[7]]
    finally:
        store.close()


def test_sqlite_migration_4_moves_the_event_rows_into_batches(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    SqliteStore(path, migrations=MIGRATIONS[:3]).close()
    events = [_event(1), _event(2, "wf-2", "t9"), _event(3, task_id="t1", kind="fenced")]
    with sqlite3.connect(path) as conn:  # the version-3 table, as issue 8's corral wrote it
        conn.executemany(
            "INSERT INTO events (seq, workflow_id, at, workflow_state, task_id, task_name, task_state, "
            "attempt_id, agent_id, kind, reason, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [event_codec.encode_event(e) for e in events],
        )
    conn.close()
    store = SqliteStore(path)
    try:
        assert store.workflow_events("wf-1") == [events[0], events[2]]
        assert store.workflow_events("wf-2") == [events[1]]
        assert store.load().last_event_seq == 3
        tables = {row[0] for row in store._reader.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "events" not in tables
    finally:
        store.close()


# --- measured usage per attempt (issue 9) ------------------------------------------------------


def test_attempt_usage_round_trips_and_is_updated(backend: Backend) -> None:
    running = Attempt("a", "t", "w", "agent", 1, AttemptState.RUNNING)
    backend.store.commit(ChangeBatch(attempts={"a": running}))
    assert (backend.reopen().load().attempts[0].peak_rss_bytes, backend.store.load().attempts[0].cpu_s) == (0, 0.0)
    done = dataclasses.replace(running, state=AttemptState.SUCCEEDED, peak_rss_bytes=(1 << 40) + 3, cpu_s=0.123456)
    backend.store.commit(ChangeBatch(attempts={"a": done}))
    for snapshot in (backend.store.load(), backend.reopen().load()):
        (attempt,) = snapshot.attempts
        assert (attempt.peak_rss_bytes, attempt.cpu_s) == ((1 << 40) + 3, 0.123456)


def test_sqlite_migration_7_gives_old_attempts_no_usage(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    SqliteStore(path, migrations=MIGRATIONS[:4]).close()
    with sqlite3.connect(path) as conn:  # the version-4 columns only, as issue 8's corral wrote them
        conn.execute(
            "INSERT INTO attempts (id, task_id, workflow_id, agent_id, number, state, resources, gpu_ids, pulled, "
            "assigned_at, error) VALUES ('a', 't', 'w', 'agent', 1, 'succeeded', '{}', '[]', 0, 1.0, '')"
        )
    conn.close()
    store = SqliteStore(path)
    try:
        (attempt,) = store.load().attempts
        assert attempt.state is AttemptState.SUCCEEDED
        assert (attempt.peak_rss_bytes, attempt.cpu_s) == (0, 0.0)
        assert type(attempt.cpu_s) is float
    finally:
        store.close()


def test_sqlite_migration_10_gives_old_tasks_no_preemption(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    old = SqliteStore(path, migrations=MIGRATIONS[:-2])  # before 10 (11 follows it)
    old.close()
    columns = codec.COLUMNS["tasks"][:-5]  # the columns before preemption (4) and gangs (1)
    row = codec.encode_task(minimal_task("t", "w"))[:-5]
    with sqlite3.connect(path) as conn:
        names = ", ".join(f'"{c}"' for c in columns)
        conn.execute(f"INSERT INTO tasks ({names}) VALUES ({', '.join('?' * len(row))})", row)
    conn.close()
    store = SqliteStore(path)
    try:
        (task,) = store.load().tasks
        assert (task.preemptible, task.max_preemptions, task.preemptions, task.last_preemption) == (False, None, 0, "")
    finally:
        store.close()


def test_sqlite_migration_11_gives_old_rows_no_gang_and_no_max_parallel(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    old = SqliteStore(path, migrations=MIGRATIONS[:10])  # before migration 11 (later ones append)
    old.close()
    gang = codec.COLUMNS["tasks"].index("gang")
    task_columns = codec.COLUMNS["tasks"][:gang]  # as version 10 wrote them
    task_row = codec.encode_task(minimal_task("t", "w"))[:gang]
    with sqlite3.connect(path) as conn:
        names = ", ".join(f'"{c}"' for c in task_columns)
        conn.execute(f"INSERT INTO tasks ({names}) VALUES ({', '.join('?' * len(task_row))})", task_row)
    conn.close()
    store = SqliteStore(path)
    try:
        assert store.schema_version == len(MIGRATIONS)
        (task,) = store.load().tasks
        assert task.gang == ""
        task.gang = "ring"
        store.commit(ChangeBatch(tasks={"t": task}))
        assert store.load().tasks[0].gang == "ring"
    finally:
        store.close()
