"""What only the PostgreSQL store promises: its schema and migrations, the epoch fence, lost connections.

Against the real throwaway server of ``tests/pgserver.py`` (fixture ``pg_dsn``: a fresh database).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from corral.controller.core.model import Resources, TaskState, WorkflowState
from corral.controller.errors import StorageFull
from corral.controller.recovery import OPERATIONAL, storage_error
from corral.controller.store import codec, postgres_retention
from corral.controller.store import postgres_sql as sql
from corral.controller.store.base import ChangeBatch, LogChunk
from corral.controller.store.errors import CommitUnknown, Fenced, StoreUnavailable
from corral.controller.store.factory import redacted
from corral.controller.store.postgres import MIGRATIONS, PostgresStore, SchemaVersionError

from .test_store import _event, full_batch, full_workflow, minimal_task


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[PostgresStore]:
    store = PostgresStore(pg_dsn, pool_size=2)
    try:
        yield store
    finally:
        store.close()


def _query(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def _workflow_ids(dsn: str) -> list[str]:
    return [row[0] for row in _query(dsn, "SELECT id FROM workflows ORDER BY id")]


# --- schema and migrations -----------------------------------------------------------------------


def test_schema_matches_the_codec_and_the_lease_table(pg: PostgresStore, pg_dsn: str) -> None:
    assert pg.schema_version == len(MIGRATIONS)
    for table, columns in codec.COLUMNS.items():
        found = _query(
            pg_dsn,
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
            (table,),
        )
        assert tuple(row[0] for row in found) == columns, table
    lease = _query(
        pg_dsn,
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_name = 'corral_lease' ORDER BY ordinal_position",
    )
    assert lease == [
        ("name", "text", "NO"),
        ("epoch", "bigint", "NO"),
        ("holder", "text", "NO"),
        ("address", "text", "NO"),
        ("expires_at", "timestamp with time zone", "NO"),
    ]


def test_reopening_keeps_the_data_and_the_version(pg_dsn: str) -> None:
    first = PostgresStore(pg_dsn)
    first.commit(full_batch())
    first.close()
    again = PostgresStore(pg_dsn)
    try:
        assert again.schema_version == len(MIGRATIONS)
        assert again.load().workflows == [full_workflow()]
    finally:
        again.close()


def test_concurrent_boots_migrate_once(pg_dsn: str) -> None:
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def boot() -> None:
        try:
            stores.append(PostgresStore(pg_dsn, pool_size=1))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=boot) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert _query(pg_dsn, "SELECT version FROM corral_schema_version") == [(len(MIGRATIONS),)]
    finally:
        for store in stores:
            store.close()


def test_a_newer_schema_is_refused(pg_dsn: str) -> None:
    PostgresStore(pg_dsn).close()
    _query(pg_dsn, "UPDATE corral_schema_version SET version = %s", (len(MIGRATIONS) + 1,))
    with pytest.raises(SchemaVersionError, match=f"schema version {len(MIGRATIONS) + 1}"):
        PostgresStore(pg_dsn)


def _broken(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE half_done (id text)")
    raise RuntimeError("migration bug")


def test_a_failed_migration_leaves_the_database_at_its_version(pg_dsn: str) -> None:
    PostgresStore(pg_dsn).close()
    with pytest.raises(RuntimeError, match="migration bug"):
        PostgresStore(pg_dsn, migrations=[*MIGRATIONS, _broken])
    assert _query(pg_dsn, "SELECT version FROM corral_schema_version") == [(len(MIGRATIONS),)]
    assert _query(pg_dsn, "SELECT to_regclass('half_done')") == [(None,)]


# --- the epoch fence -------------------------------------------------------------------------------


def _lease(dsn: str, epoch: int, ttl_s: float) -> None:
    _query(
        dsn,
        "INSERT INTO corral_lease (name, epoch, holder, address, expires_at) "
        "VALUES ('leader', %s, 'c1', '127.0.0.1:7070', now() + make_interval(secs => %s)) "
        "ON CONFLICT (name) DO UPDATE SET epoch = excluded.epoch, expires_at = excluded.expires_at",
        (epoch, ttl_s),
    )


def test_unfenced_by_default(pg: PostgresStore, pg_dsn: str) -> None:
    assert pg.fence_epoch is None
    pg.commit(ChangeBatch(workflows={"wf-1": full_workflow()}))  # no lease row at all
    assert _workflow_ids(pg_dsn) == ["wf-1"]


def test_a_write_at_the_held_epoch_commits(pg: PostgresStore, pg_dsn: str) -> None:
    _lease(pg_dsn, 7, 60)
    pg.fence_epoch = 7
    pg.commit(full_batch())
    assert _workflow_ids(pg_dsn) == ["wf-1"]


def test_a_stale_epoch_is_fenced_and_writes_nothing(pg: PostgresStore, pg_dsn: str) -> None:
    _lease(pg_dsn, 7, 60)
    pg.fence_epoch = 7
    pg.commit(ChangeBatch(meta={"before": "1"}))
    _lease(pg_dsn, 8, 60)  # another controller took over
    with pytest.raises(Fenced, match="epoch 7"):
        pg.commit(full_batch())
    assert _workflow_ids(pg_dsn) == []
    assert _query(pg_dsn, "SELECT key FROM meta ORDER BY key") == [("before",)]
    assert pg.read_logs("att-2") == LogChunk("att-2")
    assert not isinstance(Fenced("x"), OPERATIONAL)  # not degraded mode: the leader steps down
    pg.fence_epoch = 8  # the store itself stays usable (a new leader in this process)
    pg.commit(ChangeBatch(meta={"after": "1"}))


def test_an_expired_lease_is_fenced(pg: PostgresStore, pg_dsn: str) -> None:
    _lease(pg_dsn, 3, -1)  # expired a second ago, on the database's clock
    pg.fence_epoch = 3
    with pytest.raises(Fenced):
        pg.commit(full_batch())
    assert _workflow_ids(pg_dsn) == []


def test_no_lease_row_is_fenced(pg: PostgresStore, pg_dsn: str) -> None:
    pg.fence_epoch = 1
    with pytest.raises(Fenced):
        pg.commit(ChangeBatch(meta={"x": "1"}))
    assert _query(pg_dsn, "SELECT count(*) FROM meta") == [(0,)]


def test_a_commit_holds_the_lease_row_until_it_ends(pg: PostgresStore, pg_dsn: str) -> None:
    """A takeover (an UPDATE of the lease) waits for a fenced commit in flight: it cannot slip in between."""
    _lease(pg_dsn, 5, 60)
    pg.fence_epoch = 5
    with psycopg.connect(pg_dsn, autocommit=True) as other:
        pg._conn.execute("BEGIN")
        pg._conn.execute(sql.FENCE, (5,))  # the commit's first statement, its transaction still open
        other.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            other.execute("UPDATE corral_lease SET epoch = 6 WHERE name = 'leader'")
        pg._conn.execute("ROLLBACK")
        other.execute("UPDATE corral_lease SET epoch = 6 WHERE name = 'leader'")


# --- lost connections -----------------------------------------------------------------------------


def _kill_writer(pg: PostgresStore, dsn: str) -> None:
    pid = pg._conn.info.backend_pid
    assert _query(dsn, "SELECT pg_terminate_backend(%s)", (pid,)) == [(True,)]


def test_a_lost_connection_before_commit_is_operational_and_writes_nothing(pg: PostgresStore, pg_dsn: str) -> None:
    pg.commit(ChangeBatch(meta={"before": "1"}))
    _kill_writer(pg, pg_dsn)
    with pytest.raises(StoreUnavailable) as lost:
        pg.commit(full_batch())
    assert isinstance(lost.value, OPERATIONAL)
    assert storage_error(lost.value).message.startswith("storage unavailable: PostgreSQL")
    assert _workflow_ids(pg_dsn) == []
    pg.recover()  # what degraded mode's probe does
    pg.commit(full_batch())
    assert _workflow_ids(pg_dsn) == ["wf-1"]


def test_the_next_commit_reconnects_by_itself(pg: PostgresStore, pg_dsn: str) -> None:
    _kill_writer(pg, pg_dsn)
    with pytest.raises(StoreUnavailable):
        pg.commit(ChangeBatch(meta={"a": "1"}))
    pg.commit(ChangeBatch(meta={"b": "1"}))
    assert pg.load().meta == {"b": "1"}


def test_a_connection_lost_during_commit_is_commit_unknown(pg: PostgresStore, pg_dsn: str) -> None:
    # A deferred constraint trigger runs inside COMMIT: it ends its own backend there.
    _query(
        pg_dsn,
        "CREATE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.key = 'die' THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF; RETURN NEW; END $$",
    )
    _query(
        pg_dsn,
        "CREATE CONSTRAINT TRIGGER die_at_commit AFTER INSERT ON meta DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW EXECUTE FUNCTION die()",
    )
    with pytest.raises(CommitUnknown) as unknown:
        pg.commit(ChangeBatch(meta={"die": "1"}, tasks={"t": minimal_task("t")}))
    assert isinstance(unknown.value, OPERATIONAL)  # degraded mode: rebuild from the store, which knows
    pg.commit(ChangeBatch(meta={"alive": "1"}))
    assert pg.load().meta == {"alive": "1"}  # the killed COMMIT did not land


def test_disk_full_maps_to_storage_full() -> None:
    error = StoreUnavailable("PostgreSQL: could not extend file", full=True)
    assert isinstance(storage_error(error), StorageFull)


def test_the_dsn_password_is_redacted() -> None:
    assert redacted("postgresql://corral:s3cret@db:5432/corral") == "postgresql://corral:***@db:5432/corral"
    assert redacted("postgresql://corral@db/corral") == "postgresql://corral@db/corral"


def test_a_large_batch_goes_through_copy_and_fails_whole(pg: PostgresStore, pg_dsn: str) -> None:
    tasks = {f"t{i:04d}": minimal_task(f"t{i:04d}", "big", i) for i in range(1200)}
    pg.commit(ChangeBatch(tasks=tasks))
    updated = {tid: dataclasses.replace(t, error="again") for tid, t in tasks.items()}
    bad = dataclasses.replace(minimal_task("zz", "big", 9999), resources=Resources(cpu_cores=math.nan))
    with pytest.raises(ValueError):
        pg.commit(ChangeBatch(workflows={"wf-1": full_workflow()}, tasks={**updated, "zz": bad}))
    assert _workflow_ids(pg_dsn) == []
    assert {t.error for t in pg.load().tasks} == {""}
    pg.commit(ChangeBatch(tasks=updated))  # the upsert from the staged rows, over existing rows
    loaded = pg.load().tasks
    assert len(loaded) == 1200 and {t.error for t in loaded} == {"again"}
    assert _query(pg_dsn, "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'") == [(0,)]


# --- issue 12: workflows read back from the store, listings, deletion (the lifecycle part's methods) --


def _query_of(**fields: Any) -> SimpleNamespace:
    """The lifecycle part's ``WorkflowQuery`` by its attributes (it merges after this store)."""
    base: dict[str, Any] = {
        "namespaces": (),
        "exclude_namespaces": (),
        "states": frozenset(),
        "name_prefix": "",
        "id_prefix": "",
        "task_id": "",
        "finished_before": None,
        "offset": 0,
        "limit": 100,
    }
    return SimpleNamespace(**{**base, **fields})


def test_retention_reads_and_deletes_one_workflow_with_all_its_rows(pg: PostgresStore, pg_dsn: str) -> None:
    batch = full_batch()
    done = dataclasses.replace(full_workflow("wf-2"), state=WorkflowState.COMPLETED, finished_at=50.0, created_at=9e9)
    batch.workflows["wf-2"] = done
    batch.tasks["wf-2-t0"] = minimal_task("wf-2-t0", "wf-2")
    batch.events = [_event(1), _event(2, "wf-2", "wf-2-t0")]
    pg.commit(batch)
    rows = postgres_retention.load_workflow_rows(pg._conn, "wf-1")
    assert rows is not None
    workflow, tasks, attempts, runs, checkpoints = rows
    assert workflow == full_workflow() and tasks == list(full_batch().tasks.values())
    assert attempts == list(full_batch().attempts.values()) and runs == [] and checkpoints == []
    assert postgres_retention.load_workflow_rows(pg._conn, "nope") is None
    assert [w.id for w in pg.list_workflows(_query_of())] == ["wf-2", "wf-1"]  # newest first
    assert [w.id for w in pg.list_workflows(_query_of(finished_before=100.0))] == ["wf-2"]
    assert [w.id for w in pg.list_workflows(_query_of(id_prefix="wf-1"))] == ["wf-1"]
    assert [w.id for w in pg.list_workflows(_query_of(task_id="wf-2-t0"))] == ["wf-2"]
    assert [w.id for w in pg.list_workflows(_query_of(namespaces=("team-a",), limit=1, offset=1))] == ["wf-1"]
    assert pg.list_workflows(_query_of(exclude_namespaces=("team-a",))) == []
    assert pg.task_counts(["wf-1", "wf-2", "nope"]) == {
        "wf-1": {TaskState.COMPLETED: 1, TaskState.RUNNING: 1},
        "wf-2": {TaskState.PENDING: 1},
        "nope": {},
    }
    with pg._conn.transaction(), pg._conn.cursor() as cur:
        postgres_retention.delete_workflows(cur, {"wf-1"})
    assert _workflow_ids(pg_dsn) == ["wf-2"]
    assert pg.read_logs("att-2") == LogChunk("att-2")
    assert pg.workflow_events("wf-1") == [] and len(pg.workflow_events("wf-2")) == 1
    assert [t.id for t in pg.load().tasks] == ["wf-2-t0"] and pg.load().attempts == []
