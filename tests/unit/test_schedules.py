"""Delayed starts and cron schedules in the pure core, on a fake clock (issue 10 §7)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from corral.controller.core.model import TaskState, WorkflowState
from corral.controller.core.requests import Caller
from corral.controller.core.schedule_ops import (
    CreateScheduleRequest,
    DeleteScheduleRequest,
    ListSchedulesQuery,
    SetSchedulePausedRequest,
    fire_key,
    schedule_of,
)
from corral.controller.core.schedules import Fire, Schedule, check_cron, check_timezone, due_fires, next_fire
from corral.controller.errors import FailedPrecondition, NotFound
from corral.controller.rpc.schedules import template_builder
from corral.controller.rpc.wire_spec import spec_to_proto
from corral.controller.spec import parse_workflow
from corral.controller.store.schedules_codec import decode_fire
from tests.unit.conftest import Sim, task_spec

T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC).timestamp()  # a whole minute


def _spec(name: str = "nightly", **fields: Any) -> bytes:
    spec = parse_workflow({"name": name, "tasks": [task_spec("a"), task_spec("b", "a")], **fields})
    return spec_to_proto(spec).SerializeToString()


def _sim(make_sim: Callable[..., Sim], now: float = T0) -> Sim:
    sim = make_sim(now=now)
    sim.machine.build_workflow = template_builder(sim.new_id)
    return sim


def _create(sim: Sim, cron: str = "* * * * * *", **fields: Any) -> Schedule:
    schedule = Schedule(
        id=fields.pop("id", "sch-1"),
        name=fields.pop("name", "every-second"),
        namespace="default",
        cron=cron,
        timezone=fields.pop("timezone", "UTC"),
        spec=_spec(),
        **fields,
    )
    step = sim.do(CreateScheduleRequest(schedule, Caller()))
    assert step.result is schedule
    return schedule


def _fires(sim: Sim) -> list[Fire]:
    """Every fire committed to the store so far, oldest first."""
    rows = sim.store._fires.values()  # the store's own table: every row
    return sorted((decode_fire(r) for r in rows), key=lambda f: f.nominal)


def _restart(make_sim: Callable[..., Sim], sim: Sim, at: float) -> Sim:
    """A new machine on the same store, as after kill -9 and a restart (uncommitted work lost)."""
    fresh = make_sim(store=sim.store, now=at)
    counter = itertools.count(1)
    prefix = f"r{at:.0f}-"
    fresh.new_id = fresh.machine.new_id = lambda: f"{prefix}{next(counter):05d}"  # ids unlike the old machine's
    fresh.machine.build_workflow = template_builder(fresh.new_id)
    fresh.machine.restore(sim.store.load(), at)
    return fresh


# --- scheduled_at -----------------------------------------------------------------------------------


def test_a_delayed_workflow_runs_no_task_before_its_time(make_sim: Callable[..., Sim]) -> None:
    sim = _sim(make_sim)
    workflow_id, _ = sim.submit([task_spec("a"), task_spec("b", "a")], scheduled_at="90")
    workflow = sim.machine.workflows[workflow_id]
    assert workflow.scheduled_at == T0 + 90
    assert workflow.state is WorkflowState.RUNNING
    assert sim.task(workflow_id, "a").state is TaskState.PENDING
    assert sim.machine.next_timer() == T0 + 90
    reason = sim.machine.explain(sim.task(workflow_id, "a").id, sim.now).reason
    assert reason.startswith("scheduled at 2026-06-01T12:01:30Z"), reason
    sim.tick(at=T0 + 89.9)
    assert sim.task(workflow_id, "a").state is TaskState.PENDING
    sim.tick(at=T0 + 90)
    assert sim.task(workflow_id, "a").state is TaskState.READY
    assert sim.task(workflow_id, "b").state is TaskState.PENDING


def test_a_past_start_time_starts_at_once(make_sim: Callable[..., Sim]) -> None:
    sim = _sim(make_sim)
    workflow_id, _ = sim.submit([task_spec("a")], scheduled_at="2020-01-01T00:00:00Z")
    assert sim.task(workflow_id, "a").state is TaskState.READY


def test_a_delayed_start_survives_a_restart(make_sim: Callable[..., Sim]) -> None:
    sim = _sim(make_sim)
    workflow_id, _ = sim.submit([task_spec("a")], scheduled_at="60")
    fresh = _restart(make_sim, sim, T0 + 30)
    assert fresh.task(workflow_id, "a").state is TaskState.PENDING
    assert fresh.machine.next_timer() == T0 + 60
    fresh.tick(at=T0 + 60)
    assert fresh.task(workflow_id, "a").state is TaskState.READY
    # Restarted after the time passed: released on the first tick.
    again = _restart(make_sim, sim, T0 + 120)
    again.tick()
    assert again.task(workflow_id, "a").state is TaskState.READY


def test_a_cancelled_delayed_workflow_never_releases(make_sim: Callable[..., Sim]) -> None:
    from corral.controller.core.events import CancelWorkflow

    sim = _sim(make_sim)
    workflow_id, _ = sim.submit([task_spec("a")], scheduled_at="60")
    sim.do(CancelWorkflow(workflow_id))
    sim.tick(at=T0 + 61)
    assert sim.task(workflow_id, "a").state is TaskState.CANCELLED


# --- cron arithmetic --------------------------------------------------------------------------------


def test_bad_cron_and_timezones_are_refused() -> None:
    for bad in ("", "* * * *", "61 * * * *", "* * * * * * *", "every day", "*/0 * * * *"):
        with pytest.raises(ValueError):
            check_cron(bad)
    for bad in ("Mars/Olympus", "../etc/passwd", "", "/UTC"):
        with pytest.raises(ValueError):
            check_timezone(bad)
    check_cron("*/5 * * * *")
    check_cron("*/10 * * * * *")


def test_six_fields_put_seconds_first() -> None:
    schedule = Schedule("s", "s", "default", "15 0 * * * *", "UTC", b"")
    assert next_fire(schedule, T0) == T0 + 15  # second 15 of minute 0 of every hour
    assert next_fire(schedule, T0 + 15) == T0 + 3600 + 15


def test_spring_forward_fires_once_after_the_gap() -> None:
    # Europe/Berlin jumps 02:00 -> 03:00 on 2026-03-29: 02:30 does not exist that night.
    schedule = Schedule("s", "s", "default", "30 2 * * *", "Europe/Berlin", b"")
    start = datetime(2026, 3, 28, 12, 0, tzinfo=UTC).timestamp()
    first = next_fire(schedule, start)
    assert datetime.fromtimestamp(first, UTC) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST
    second = next_fire(schedule, first)
    assert datetime.fromtimestamp(second, UTC) == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)  # 02:30 CEST


def test_fall_back_fires_a_repeated_time_once() -> None:
    # Europe/Berlin repeats 02:00-03:00 on 2026-10-25: 02:30 happens twice; it fires at the first.
    schedule = Schedule("s", "s", "default", "30 2 * * *", "Europe/Berlin", b"")
    start = datetime(2026, 10, 24, 12, 0, tzinfo=UTC).timestamp()
    first = next_fire(schedule, start)
    assert datetime.fromtimestamp(first, UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    second = next_fire(schedule, first)
    assert datetime.fromtimestamp(second, UTC) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)  # 02:30 CET
    # Backwards too: a downtime over the night catches up the first 02:30 only.
    schedule.catchup = 10
    schedule.created_at = start
    times, dropped = due_fires(schedule, datetime(2026, 10, 25, 12, 0, tzinfo=UTC).timestamp())
    assert times == [first] and dropped == 0


def test_a_zone_shifts_the_wall_clock() -> None:
    schedule = Schedule("s", "s", "default", "0 9 * * *", "America/New_York", b"")
    fire = next_fire(schedule, T0)  # 12:00 UTC = 08:00 EDT: 09:00 EDT is 13:00 UTC
    assert fire == T0 + 3600


def test_due_fires_keeps_only_catchup_missed_ones() -> None:
    schedule = Schedule("s", "s", "default", "* * * * * *", "UTC", b"", catchup=3, created_at=T0)
    times, dropped = due_fires(schedule, T0 + 10.2)  # 1..10 passed; 10 is on time, 7..9 caught up
    assert times == [T0 + 7, T0 + 8, T0 + 9, T0 + 10]
    assert dropped == 6
    schedule.catchup = 0
    assert due_fires(schedule, T0 + 10.2) == ([T0 + 10], 9)


# --- schedules on the machine -----------------------------------------------------------------------


def test_a_per_second_schedule_fires_each_second_once(make_sim: Callable[..., Sim]) -> None:
    sim = _sim(make_sim)
    schedule = _create(sim, overlap="allow")
    assert sim.machine.next_timer() == T0 + 1
    for i in range(1, 11):
        sim.tick(at=T0 + i + 0.01)
        sim.tick()  # a second tick at the same time fires nothing more
    fires = _fires(sim)
    assert [f.nominal for f in fires] == [T0 + i for i in range(1, 11)]
    assert all(f.outcome == "fired" and not f.late for f in fires)
    workflows = [sim.machine.workflows[f.workflow_id] for f in fires]
    assert [w.idempotency_key for w in workflows] == [fire_key(schedule.id, T0 + i) for i in range(1, 11)]
    assert all(schedule_of(w) == schedule.id and w.state is WorkflowState.RUNNING for w in workflows)
    assert workflows[0].scheduled_at == T0 + 1
    assert schedule.fired == 10 and schedule.last_nominal == T0 + 10


def test_fires_survive_a_restart_without_double_or_missed_fires(make_sim: Callable[..., Sim]) -> None:
    sim = _sim(make_sim)
    _create(sim, overlap="allow", catchup=100)
    for i in range(1, 6):
        sim.tick(at=T0 + i)
    # kill -9 at T0 + 5.5: the tick that would have fired 6 never committed. Back at T0 + 9.3.
    fresh = _restart(make_sim, sim, T0 + 9.3)
    fresh.tick()
    for i in range(10, 13):
        fresh.tick(at=T0 + i)
    fires = _fires(fresh)
    assert [f.nominal for f in fires] == [T0 + i for i in range(1, 13)]
    assert [f.late for f in fires] == [False] * 5 + [True] * 3 + [False] * 4
    assert all(f.outcome == "fired" for f in fires)
    # A third machine restored at the same instant as the last commit fires nothing again.
    third = _restart(make_sim, fresh, T0 + 12)
    third.tick()
    assert len(_fires(third)) == 12


def test_catchup_bounds_what_runs_after_downtime(make_sim: Callable[..., Sim]) -> None:
    sim = _sim(make_sim)
    schedule = _create(sim, cron="*/5 * * * *", overlap="allow", catchup=2)  # every 5 minutes
    fresh = _restart(make_sim, sim, T0 + 3600 + 10)  # down an hour: 12 nominal times passed
    fresh.tick()
    fires = _fires(fresh)
    assert [f.nominal for f in fires] == [T0 + 3300, T0 + 3600]
    assert all(f.late for f in fires)
    restored = fresh.machine.schedules[schedule.id]
    assert restored.missed == 10 and restored.last_nominal == T0 + 3600


def test_overlap_skip_skips_while_the_last_fire_runs(make_sim: Callable[..., Sim]) -> None:
    sim = _sim(make_sim)
    schedule = _create(sim)  # default overlap: skip
    sim.tick(at=T0 + 1)
    sim.tick(at=T0 + 2)
    fires = _fires(sim)
    assert [f.outcome for f in fires] == ["fired", "skipped"]
    assert schedule.skipped == 1 and schedule.fired == 1


def test_overlap_cancel_previous_cancels_the_running_fire(make_sim: Callable[..., Sim]) -> None:
    sim = _sim(make_sim)
    _create(sim, overlap="cancel_previous")
    sim.tick(at=T0 + 1)
    sim.tick(at=T0 + 2)
    first, second = _fires(sim)
    assert sim.machine.workflows[first.workflow_id].state is WorkflowState.CANCELLED
    assert "replaced by the next fire" in sim.machine.workflows[first.workflow_id].error
    assert sim.machine.workflows[second.workflow_id].state is WorkflowState.RUNNING


def test_pause_resume_and_delete(make_sim: Callable[..., Sim]) -> None:
    sim = _sim(make_sim)
    schedule = _create(sim, overlap="allow")
    sim.tick(at=T0 + 1)
    sim.do(SetSchedulePausedRequest("every-second", Caller(), True))
    sim.tick(at=T0 + 5)
    assert len(_fires(sim)) == 1
    sim.do(SetSchedulePausedRequest(schedule.id, Caller(), False), at=T0 + 5.5)
    sim.tick(at=T0 + 6)
    assert [f.nominal for f in _fires(sim)] == [T0 + 1, T0 + 6]  # paused times are not caught up
    listed = sim.do(ListSchedulesQuery(Caller())).result
    assert [(s.id, len(fires)) for s, fires in listed] == [(schedule.id, 2)]
    sim.do(DeleteScheduleRequest("sch", Caller()))
    sim.tick(at=T0 + 8)
    assert _fires(sim) == []  # deleted with its schedule
    assert sim.machine.next_timer() is None or sim.machine.next_timer() != T0 + 9
    with pytest.raises(NotFound):
        sim.machine.handle(DeleteScheduleRequest("sch-1", Caller()), sim.now)


def test_names_are_unique_per_namespace_and_scoped(make_sim: Callable[..., Sim]) -> None:
    sim = _sim(make_sim)
    _create(sim)
    with pytest.raises(FailedPrecondition):
        _create(sim, id="sch-2")
    with pytest.raises(NotFound):
        sim.machine.handle(SetSchedulePausedRequest("every-second", Caller("x", ("other",)), True), sim.now)
    assert sim.machine.handle(ListSchedulesQuery(Caller("x", ("other",))), sim.now) == []


def test_a_fire_whose_namespace_is_gone_fails_and_the_schedule_goes_on(make_sim: Callable[..., Sim]) -> None:
    sim = _sim(make_sim)
    schedule = _create(sim, overlap="allow")
    sim.machine.build_workflow = None  # e.g. a core without admission: the fire fails, visibly
    sim.tick(at=T0 + 1)
    (fire,) = _fires(sim)
    assert fire.outcome == "failed" and fire.error
    assert schedule.last_nominal == T0 + 1 and sim.machine.next_timer() is not None


def test_a_long_downtime_costs_catchup_steps_not_one_per_missed_time() -> None:
    schedule = Schedule("s", "s", "default", "* * * * * *", "UTC", b"", catchup=5, created_at=T0)
    times, dropped = due_fires(schedule, T0 + 86_400.5)  # a day of per-second times passed
    assert times == [T0 + 86_400 - i for i in range(5, -1, -1)]  # 5 caught up, and the one due now
    assert dropped == 1_000  # counted up to the bound: a lower bound of the 86,394 dropped
