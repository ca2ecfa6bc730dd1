"""The learned-duration table (issue 9) under the storage contract, on both backends."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from corral.controller.core.durations import DurationBook, DurationChanges, GroupKey, LearnedDuration
from corral.controller.store.base import ChangeBatch
from corral.controller.store.sqlite import MIGRATIONS, SqliteStore
from corral.controller.store.sqlite_schema import Migration

from .conftest import Backend

_Pair = tuple[GroupKey, LearnedDuration]


def _entry(key: tuple[str, str, str, str], *numbers: float) -> _Pair:
    """An entry under its group, as ``Snapshot.durations`` holds them."""
    seconds, samples, updated_at, *usage = numbers
    return key[:3], LearnedDuration(key[3], seconds, int(samples), updated_at, *usage)


def _changes(*entries: _Pair, deleted: tuple[GroupKey, ...] = ()) -> ChangeBatch:
    groups: dict[GroupKey, tuple[LearnedDuration, ...]] = {group: () for group in deleted}
    for group, entry in entries:
        groups[group] = (*groups.get(group, ()), entry)
    return ChangeBatch(durations=DurationChanges(groups))


def test_durations_round_trip_oldest_first_and_survive_reopen(backend: Backend) -> None:
    late = _entry(("task", "team-a", "nightly ETL", "extract"), 12.5, 3, 1700000300.0)
    early = _entry(("fingerprint", "team-a", "", "python:etl.jobs:extract"), 0.25, 1, 1700000100.0)
    backend.store.commit(_changes(late, early))
    assert backend.store.load().durations == [early, late]  # least recently updated first
    assert backend.reopen().load().durations == [early, late]


def test_durations_groups_are_replaced_whole_and_deleted(backend: Backend) -> None:
    a1 = _entry(("task", "default", "wf", "a"), 1.0, 1, 5.0)
    b = _entry(("task", "default", "wf", "b"), 2.0, 1, 10.0)
    other = _entry(("task", "default", "other", "x"), 3.0, 1, 1.0)
    backend.store.commit(_changes(a1, b, other))
    a2 = _entry(("task", "default", "wf", "a"), 4.0, 2, 20.0)
    backend.store.commit(_changes(a2))  # the group now holds a alone (b was evicted)
    assert backend.reopen().load().durations == [other, a2]
    backend.store.commit(_changes(deleted=(("task", "default", "wf"),)))
    assert backend.reopen().load().durations == [other]
    backend.store.commit(_changes(deleted=(("task", "default", "never"),)))  # absent: no error
    assert backend.store.load().durations == [other]


@pytest.mark.parametrize(
    "bad",
    [
        _entry(("task", "default", "wf", "a"), math.nan, 1, 1.0),
        _entry(("task", "default", "wf", "a"), -1.0, 1, 1.0),
        _entry(("task", "default", "wf", "a"), 1.0, 0, 1.0),
        _entry(("guess", "default", "wf", "a"), 1.0, 1, 1.0),
        _entry(("task", "default", "wf", "a"), 1.0, 1, math.inf),
    ],
)
def test_bad_duration_changes_nothing(backend: Backend, bad: _Pair) -> None:
    good = _entry(("task", "default", "wf", "ok"), 1.0, 1, 1.0)
    backend.store.commit(_changes(good))
    batch = _changes(bad)
    batch.meta["also"] = "this"
    with pytest.raises(ValueError):
        backend.store.commit(batch)
    snapshot = backend.reopen().load()
    assert snapshot.durations == [good] and "also" not in snapshot.meta


def test_book_changes_round_trip_through_the_store(backend: Backend) -> None:
    """Learn, evict (cap 2), commit, reload into a fresh book: the same expectations."""
    book = DurationBook(max_entries=2)
    book.learn("default", "wf", "a", "", 10.0, now=1.0)
    backend.store.commit(ChangeBatch(durations=book.take_changes()))
    book.learn("default", "wf", "b", "", 20.0, now=2.0)
    book.learn("default", "wf", "c", "", 30.0, now=3.0)  # evicts a
    backend.store.commit(ChangeBatch(durations=book.take_changes()))
    fresh = DurationBook(max_entries=2)
    fresh.restore(backend.reopen().load().durations)
    assert len(fresh) == 2
    assert fresh.expected("default", "wf", "a", 0.0, "")[1] == "structural"
    assert fresh.expected("default", "wf", "c", 0.0, "") == (30.0, "learned")


def test_learned_usage_round_trips_and_rows_without_it_read_as_unknown(backend: Backend, tmp_path: Path) -> None:
    used = _entry(("task", "default", "wf", "a"), 1.0, 2, 5.0, 150.0 * (1 << 20), 3.0)
    backend.store.commit(_changes(used))
    assert backend.reopen().load().durations == [used]
    # A row written before usage was learned (4 fields per entry) reads with usage 0.
    from corral.controller.store import durations_codec

    old = ("task", "default", "wf", '[["b",2.0,1,6.0]]', 6.0)
    ((_, entry),) = durations_codec.decode_group(old)
    assert (entry.seconds, entry.peak_rss_bytes, entry.cpu_s) == (2.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        backend.store.commit(_changes(_entry(("task", "default", "wf", "c"), 1.0, 1, 1.0, -1.0, 0.0)))


def test_sqlite_migration_6_adds_an_empty_durations_table(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    before: list[Migration] = list(MIGRATIONS[:5])
    SqliteStore(path, migrations=before).close()
    with sqlite3.connect(path) as conn:
        assert "durations" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    store = SqliteStore(path)
    try:
        assert store.schema_version == len(MIGRATIONS)
        assert store.load().durations == []
    finally:
        store.close()
