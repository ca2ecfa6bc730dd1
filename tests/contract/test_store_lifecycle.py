"""Issue 12 in every store: one workflow read back whole, listings of stored workflows, task
counts, and forgotten workflows deleted with every row of theirs."""

from __future__ import annotations

from corral.controller.core.checkpoints import Checkpoint
from corral.controller.core.model import Attempt, AttemptState, Task, TaskState, Workflow, WorkflowEvent, WorkflowState
from corral.controller.core.run_record import Run
from corral.controller.store.base import ChangeBatch, LogChunk, Store, WorkflowQuery

from .conftest import Backend

W = WorkflowState


def _workflow(
    wid: str,
    *,
    state: WorkflowState = W.COMPLETED,
    created: float = 1.0,
    finished: float | None = 10.0,
    namespace: str = "default",
    name: str = "",
    tasks: int = 2,
) -> tuple[Workflow, list[Task], list[Attempt]]:
    task_ids = [f"{wid}-t{i}" for i in range(tasks)]
    workflow = Workflow(
        wid,
        name or f"name-{wid}",
        task_ids,
        state=state,
        created_at=created,
        namespace=namespace,
        finished_at=finished if state.terminal else None,
        idempotency_key=f"key-{wid}",
    )
    task_state = TaskState.COMPLETED if state.terminal else TaskState.RUNNING
    records = [
        Task(t, wid, f"task{i}", i, "shell", b"{}", state=task_state, namespace=namespace, result=b"1")
        for i, t in enumerate(task_ids)
    ]
    attempts = [
        Attempt(
            f"{t}-a1", t, wid, "agent-1", 1, state=AttemptState.SUCCEEDED if state.terminal else AttemptState.RUNNING
        )
        for t in task_ids
    ]
    return workflow, records, attempts


def _commit(store: Store, *made: tuple[Workflow, list[Task], list[Attempt]]) -> None:
    batch = ChangeBatch()
    for workflow, tasks, attempts in made:
        batch.workflows[workflow.id] = workflow
        batch.tasks.update((t.id, t) for t in tasks)
        batch.attempts.update((a.id, a) for a in attempts)
    store.commit(batch)


def test_load_workflow_returns_the_whole_record(store: Store, backend: Backend) -> None:
    made = _workflow("wf-a", tasks=3)
    other = _workflow("wf-b")
    _commit(store, made, other)
    store.commit(
        ChangeBatch(
            runs=[Run("wf-a", 1, "submit", started_at=1.0, finished_at=2.0, state="failed")],
            checkpoints={"wf-a-t1": Checkpoint("wf-a-t1", "wf-a", "wf-a-t1-a1", 3.0, b"[1]")},
        )
    )
    for reopen in (False, True):
        current = backend.reopen() if reopen else store
        record = current.load_workflow("wf-a")
        assert record is not None
        assert record.workflow == made[0]
        assert record.tasks == made[1]  # in index order
        assert sorted(a.id for a in record.attempts) == sorted(a.id for a in made[2])
        assert [r.number for r in record.runs] == [1]
        assert record.checkpoints == [Checkpoint("wf-a-t1", "wf-a", "wf-a-t1-a1", 3.0, b"[1]")]
        assert current.load_workflow("nope") is None


def test_task_attempts_reads_one_tasks_attempts_by_number(store: Store, backend: Backend) -> None:
    made = _workflow("wf-a", tasks=2)
    retry = Attempt("wf-a-t0-a0", "wf-a-t0", "wf-a", "agent-2", 0, state=AttemptState.FAILED, error="boom")
    made[2].append(retry)
    _commit(store, made, _workflow("wf-b"))
    for reopen in (False, True):
        current = backend.reopen() if reopen else store
        found = current.task_attempts("wf-a-t0")
        assert [(a.id, a.number, a.state, a.agent_id, a.error) for a in found] == [
            ("wf-a-t0-a0", 0, AttemptState.FAILED, "agent-2", "boom"),
            ("wf-a-t0-a1", 1, AttemptState.SUCCEEDED, "agent-1", ""),
        ]
        assert [a.id for a in current.task_attempts("wf-b-t1")] == ["wf-b-t1-a1"]
        assert current.task_attempts("nope") == []


def test_list_workflows_filters_and_pages_newest_first(store: Store) -> None:
    _commit(
        store,
        _workflow("wf-1", created=1.0, name="etl-a"),
        _workflow("wf-2", created=2.0, name="etl-b", state=W.FAILED, namespace="team"),
        _workflow("wf-3", created=3.0, name="ml", state=W.RUNNING),
        _workflow("xx-4", created=4.0, name="etl-c"),
    )
    ids = lambda q: [w.id for w in store.list_workflows(q)]  # noqa: E731
    assert ids(WorkflowQuery()) == ["xx-4", "wf-3", "wf-2", "wf-1"]
    assert ids(WorkflowQuery(limit=2, offset=1)) == ["wf-3", "wf-2"]
    assert ids(WorkflowQuery(limit=0)) == []
    assert ids(WorkflowQuery(name_prefix="etl")) == ["xx-4", "wf-2", "wf-1"]
    assert ids(WorkflowQuery(id_prefix="wf-")) == ["wf-3", "wf-2", "wf-1"]
    assert ids(WorkflowQuery(namespaces=("team",))) == ["wf-2"]
    assert ids(WorkflowQuery(exclude_namespaces=("team",))) == ["xx-4", "wf-3", "wf-1"]
    assert ids(WorkflowQuery(states=frozenset({W.FAILED, W.RUNNING}))) == ["wf-3", "wf-2"]
    assert ids(WorkflowQuery(task_id="wf-2-t1")) == ["wf-2"]
    assert ids(WorkflowQuery(task_id="unknown")) == []
    # Retention: terminal and finished before the cutoff; a running workflow never qualifies.
    assert ids(WorkflowQuery(finished_before=11.0)) == ["xx-4", "wf-2", "wf-1"]
    assert ids(WorkflowQuery(finished_before=10.0)) == []
    # Prefixes are literal: no LIKE wildcards, case-sensitive.
    assert ids(WorkflowQuery(name_prefix="ETL")) == []
    assert ids(WorkflowQuery(name_prefix="etl%")) == []


def test_task_counts_per_state(store: Store) -> None:
    workflow, tasks, attempts = _workflow("wf-c", tasks=3)
    tasks[2].state = TaskState.FAILED
    compensation = Task(
        "wf-c-comp", "wf-c", "undo", 99, "shell", b"{}", state=TaskState.COMPLETED, compensates="wf-c-t0"
    )
    _commit(store, (workflow, [*tasks, compensation], attempts))
    counts = store.task_counts(["wf-c", "unknown"])
    assert counts == {"wf-c": {TaskState.COMPLETED: 2, TaskState.FAILED: 1}, "unknown": {}}


def test_forgotten_workflows_lose_every_row(store: Store, backend: Backend) -> None:
    gone = _workflow("wf-gone")
    kept = _workflow("wf-kept")
    _commit(store, gone, kept)
    events = [
        WorkflowEvent(seq, 1.0, wid, W.COMPLETED, f"{wid}-t0", "task0", TaskState.COMPLETED, kind="completed")
        for seq, wid in ((1, "wf-gone"), (2, "wf-kept"))
    ]
    store.commit(
        ChangeBatch(
            logs=[LogChunk("wf-gone-t0-a1", b"out"), LogChunk("wf-kept-t0-a1", b"kept out")],
            events=events,
            runs=[Run("wf-gone", 1, "submit"), Run("wf-kept", 1, "submit")],
            checkpoints={t: Checkpoint(t, t[:-3], f"{t}-a1", 1.0, b"0") for t in ("wf-gone-t1", "wf-kept-t1")},
        )
    )
    store.commit(ChangeBatch(forgotten_workflows={"wf-gone", "never-stored"}))
    for reopen in (False, True):
        current = backend.reopen() if reopen else store
        assert current.load_workflow("wf-gone") is None
        assert current.workflow_events("wf-gone") == []
        assert current.read_logs("wf-gone-t0-a1").stdout == b""
        snapshot = current.load()
        assert [w.id for w in snapshot.workflows] == ["wf-kept"]
        assert {t.workflow_id for t in snapshot.tasks} == {"wf-kept"}
        assert {a.workflow_id for a in snapshot.attempts} == {"wf-kept"}
        assert [r.workflow_id for r in snapshot.runs] == ["wf-kept"]
        assert [c.workflow_id for c in snapshot.checkpoints] == ["wf-kept"]
        assert current.read_logs("wf-kept-t0-a1").stdout == b"kept out"
        assert [e.workflow_id for e in current.workflow_events("wf-kept")] == ["wf-kept"]


def test_a_forgetting_batch_is_not_empty() -> None:
    batch = ChangeBatch(forgotten_workflows={"wf"})
    assert batch
    assert batch.size() > 0


def test_a_live_load_keeps_finished_workflows_in_the_store_by_their_keys(store: Store, backend: Backend) -> None:
    done = _workflow("wf-done", state=W.COMPLETED)
    failed = _workflow("wf-failed", state=W.FAILED)
    running = _workflow("wf-running", state=W.RUNNING, tasks=3)
    paused = _workflow("wf-paused", state=W.PAUSED)
    _commit(store, done, failed, running, paused)
    store.commit(
        ChangeBatch(
            runs=[
                Run("wf-done", 1, "submit", started_at=1.0, finished_at=2.0, state="completed"),
                Run("wf-running", 1, "submit", started_at=1.0),
            ]
        )
    )
    for reopen in (False, True):
        current = backend.reopen() if reopen else store
        full = current.load()
        assert {w.id for w in full.workflows} == {"wf-done", "wf-failed", "wf-running", "wf-paused"}
        assert full.evicted_keys == []
        live = current.load(live_only=True)
        assert [w.id for w in live.workflows] == ["wf-paused", "wf-running"]
        assert {t.workflow_id for t in live.tasks} == {"wf-running", "wf-paused"}
        assert len(live.tasks) == 5 and len(live.attempts) == 5
        assert [t.id for t in live.tasks if t.workflow_id == "wf-running"] == running[0].task_ids  # index order
        assert [(r.workflow_id, r.number) for r in live.runs] == [("wf-running", 1)]
        assert sorted(live.evicted_keys) == [
            ("wf-done", "default", "key-wf-done"),
            ("wf-failed", "default", "key-wf-failed"),
        ]
        assert current.load_workflow("wf-done") is not None  # still there, read on demand
