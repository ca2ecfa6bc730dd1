"""Narrow task writes (``ChangeBatch.moved_tasks``) lose nothing: the stored rows equal the core's.

The hot transitions (placed, started, completed, ready after dependencies) let SQLite update only a
task's progress columns. That is right only while nothing else about the task changed since its row
was last written whole. These tests run the real core through the simulator, with every step's
changes committed to a real SQLite file, and compare every stored task row with the core's task.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from corral.controller.core.machine import MachineConfig
from corral.controller.core.model import Task, TaskState
from corral.controller.sim import Fleet, Simulator
from corral.controller.spec import parse_workflow
from corral.controller.store import codec
from corral.controller.store.base import ChangeBatch
from corral.controller.store.sqlite import SqliteStore

from .test_sim_properties import Case, cases


class _Recorder:
    """A real SQLite store that also keeps every batch committed to it."""

    def __init__(self, directory: str) -> None:
        self.store = SqliteStore(Path(directory) / "corral.db", synchronous="OFF")
        self.batches: list[ChangeBatch] = []

    def commit(self, batch: ChangeBatch) -> None:
        self.batches.append(batch)
        self.store.commit(batch)


def _stored_rows_equal_the_core(simulator: Simulator, store: SqliteStore) -> None:
    stored = {task.id: codec.encode_task(task) for task in store.load().tasks}
    for task in simulator.machine.tasks.values():
        assert stored.get(task.id) == codec.encode_task(task), task.name


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_every_stored_task_row_equals_the_core_after_a_run(case: Case) -> None:
    with tempfile.TemporaryDirectory() as directory:
        recorder = _Recorder(directory)
        # Prefetch on: short tasks are queued on agents, so placements and starts fall in
        # different steps (narrow writes across steps, not only within one).
        simulator = Simulator(case.fleet, config=MachineConfig(prefetch=2), commit=recorder.commit)
        spec = parse_workflow({"name": "prop", "tasks": case.tasks})
        for _ in range(2):  # a second run of the same workflow name: learned durations, new tasks
            simulator.run(
                spec,
                duration=lambda task: case.durations[task.name],
                fails=lambda task: (task.name, task.attempts) in case.failures,
            )
        _stored_rows_equal_the_core(simulator, recorder.store)
        recorder.store.close()
        assert all(not (b.tasks.keys() & b.moved_tasks.keys()) for b in recorder.batches)


def test_the_hot_transitions_write_narrowly_and_a_task_touched_whole_is_written_whole() -> None:
    with tempfile.TemporaryDirectory() as directory:
        recorder = _Recorder(directory)
        simulator = Simulator(Fleet(1, 1), commit=recorder.commit)
        spec = parse_workflow(
            {
                "name": "chain",
                "tasks": [
                    {"name": "a", "payload": {"shell": "true"}},
                    {"name": "b", "payload": {"shell": "true"}, "dependencies": ["a"]},
                ],
            }
        )
        result = simulator.run(spec, duration=lambda task: 1.0)
        assert result.state == "completed"
        names = {task.id: task.name for task in simulator.machine.tasks.values()}
        whole = [names[t] for b in recorder.batches for t in b.tasks]
        narrow = [names[t] for b in recorder.batches for t in b.moved_tasks]
        # Written whole once each: the submission (a is placed in that same step). Every later
        # change is progress only: a completed; b ready and placed (one step), then completed.
        # Started writes nothing: the attempt's row says it (restore derives the task's state).
        assert sorted(whole) == ["a", "b"]
        assert sorted(narrow) == ["a", "b", "b"]
        _stored_rows_equal_the_core(simulator, recorder.store)
        recorder.store.close()


def _sample_tasks() -> list[Task]:
    """Tasks with and without rare fields, a result, an error, set and unset times."""
    return [
        Task("t1", "w", "plain", 0, "default", b'{"shell": "true"}'),
        Task(
            "t2",
            "w",
            "done",
            1,
            "gpu",
            b"{}",
            state=TaskState.COMPLETED,
            retries_used=2,
            attempts=3,
            current_attempt_id="a3",
            agent_id="agent-1",
            result=b'{"x": 1}',
            exit_code=0,
            created_at=1.5,
            ready_at=2.5,
            started_at=3.5,
            finished_at=4.5,
        ),
        Task("t3", "w", "late", 2, "default", b"{}", not_before=99.0, error="boom", exit_code=137, spread="zone"),
        Task("t4", "w", "failed", 3, "default", b"{}", state=TaskState.FAILED, preemptible=True, result=b""),
    ]


def test_a_progress_row_holds_what_the_whole_row_holds_in_those_columns() -> None:
    """The narrow encoder builds its 12 columns itself: they must be the whole row's, value for
    value, whatever the task carries (rare fields, a result, an error, unset times)."""
    where = [codec.COLUMNS["tasks"].index(column) for column in codec.PROGRESS_COLUMNS]
    tasks = _sample_tasks()
    for task in tasks:
        whole = codec.encode_task(task)
        assert codec.encode_task_progress(task) == (*(whole[i] for i in where), task.id), task.name


def test_a_plain_row_holds_the_whole_row_with_the_rare_columns_at_their_defaults() -> None:
    """A task without rare fields is written with the narrow upsert: its 27 columns plus the rare
    columns' defaults as constants. Together they must be the whole row, value for value; every
    task, rare fields or not, still encodes and decodes whole."""
    columns = codec.COLUMNS["tasks"]
    tasks = _sample_tasks()
    plain = [task for task in tasks if task._rare is None]
    assert len(plain) == 2 and len(tasks) == 4
    for task in tasks:
        assert codec.decode_task(codec.encode_task(task)) == task, task.name
    for task in plain:
        narrow = dict(zip(codec.PLAIN_TASK_COLUMNS, codec.encode_plain_task(task), strict=True))
        whole = dict(zip(columns, codec.encode_task(task), strict=True))
        assert {**narrow, **codec.PLAIN_TASK_DEFAULTS} == whole, task.name


def test_a_task_back_at_its_defaults_is_stored_with_its_rare_columns_reset() -> None:
    """The narrow upsert of a task without rare fields also resets a stored row that had some (a
    rewound task): its rare columns are set from the statement's constants on conflict."""
    rare = Task("t1", "w", "a", 0, "python", b"{}", spread="zone", preemptions=2, last_preemption="by x", gang="g")
    plain = Task("t1", "w", "a", 0, "python", b"{}")
    assert rare._rare is not None and plain._rare is None
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStore(Path(directory) / "corral.db", synchronous="OFF")
        store.load()
        store.commit(ChangeBatch(tasks={rare.id: rare}))
        assert [t.preemptions for t in store.load().tasks] == [2]
        store.commit(ChangeBatch(tasks={plain.id: plain}))
        assert store.load().tasks == [plain]
        store.close()
