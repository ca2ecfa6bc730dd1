"""The storage contract for schedules and their fires (issue 10), on every backend."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from corral.controller.core.model import Workflow
from corral.controller.core.schedules import Fire, Schedule, ScheduleChanges
from corral.controller.store.base import ChangeBatch
from corral.controller.store.schedules_codec import KEEP_FIRES
from tests.contract.conftest import Backend


def _schedule(**fields: object) -> Schedule:
    base: dict[str, object] = {
        "id": "sch-1",
        "name": "nightly",
        "namespace": "default",
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "spec": b"\x0a\x05hello",
        "overlap": "allow",
        "catchup": 3,
        "created_at": 100.0,
    }
    base.update(fields)
    return Schedule(**base)  # type: ignore[arg-type]


def test_schedules_and_fires_round_trip(backend: Backend) -> None:
    schedule = _schedule(last_nominal=160.0, last_workflow_id="wf-2", fired=2, skipped=1, missed=4, paused=True)
    fires = [Fire("sch-1", 100.0 + 20 * i, 100.5 + 20 * i, f"wf-{i}", i == 2, "fired") for i in range(3)]
    fires.append(Fire("sch-1", 160.0, 160.1, "", False, "skipped", "wf-2 running"))
    backend.store.commit(ChangeBatch(schedules=ScheduleChanges({"sch-1": schedule}, set(), fires[:3])))
    backend.store.commit(ChangeBatch(schedules=ScheduleChanges({}, set(), fires[3:])))
    loaded = backend.reopen().load()
    assert loaded.schedules == [schedule]
    assert loaded.schedule_fires == fires  # oldest first


def test_a_second_fire_of_one_nominal_time_fails_the_whole_commit(backend: Backend) -> None:
    store = backend.store
    store.commit(
        ChangeBatch(schedules=ScheduleChanges({"sch-1": _schedule()}, set(), [Fire("sch-1", 200.0, 200.0, "wf-1")]))
    )
    twice = ChangeBatch(
        workflows={"wf-2": Workflow("wf-2", "nightly", [])},
        schedules=ScheduleChanges({}, set(), [Fire("sch-1", 200.0, 201.0, "wf-2")]),
    )
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError, ValueError)):
        store.commit(twice)
    loaded = backend.reopen().load()
    assert [w.id for w in loaded.workflows] == [], "the fire's workflow went with the refused commit"
    assert [(f.nominal, f.workflow_id) for f in loaded.schedule_fires] == [(200.0, "wf-1")]


def test_deleting_a_schedule_deletes_its_fires(backend: Backend) -> None:
    store = backend.store
    store.commit(ChangeBatch(schedules=ScheduleChanges({"sch-1": _schedule()}, set(), [Fire("sch-1", 1.0, 1.0, "wf")])))
    store.commit(ChangeBatch(schedules=ScheduleChanges({}, {"sch-1"}, [])))
    loaded = backend.reopen().load()
    assert loaded.schedules == [] and loaded.schedule_fires == []


def test_sqlite_keeps_a_bounded_fire_history(tmp_path: object) -> None:
    from pathlib import Path

    from corral.controller.store.sqlite import SqliteStore

    store = SqliteStore(Path(str(tmp_path)) / "db")
    try:
        fires = [Fire("sch-1", float(i), float(i), f"wf-{i}") for i in range(KEEP_FIRES + 50)]
        store.commit(ChangeBatch(schedules=ScheduleChanges({"sch-1": _schedule()}, set(), fires)))
        count = store._reader.execute("SELECT COUNT(*), MIN(nominal) FROM schedule_fires").fetchone()
        assert count == (KEEP_FIRES, 50.0)
        recent = [f.nominal for f in store.load().schedule_fires]  # the last 20, oldest first
        assert recent == [float(i) for i in range(KEEP_FIRES + 30, KEEP_FIRES + 50)]
    finally:
        store.close()
