"""Ordering in the machine: ranks at start, critical path first, durations learned across runs."""

from __future__ import annotations

import random
from collections.abc import Callable

from corral.controller.core import events as ev
from corral.controller.core.durations import DurationSource
from corral.controller.core.machine import Machine, MachineConfig
from corral.controller.core.model import AttemptState, Task
from corral.controller.core.ordering import END_FLUSH_S, Ordering, TaskRank
from corral.controller.rpc import wire

from .conftest import Sim, task_spec

S = DurationSource


def _run_one(sim: Sim, agent: str, workflow_id: str, name: str, seconds: float) -> None:
    """Start the task's attempt now and finish it ``seconds`` later (the fake clock; agents beat)."""
    attempt_id = sim.attempt_of(workflow_id, name)
    sim.started(agent, attempt_id)
    sim.advance(seconds)
    sim.finished(agent, attempt_id)


def _rank(ordering: Ordering, task: Task) -> TaskRank:
    ranked = ordering.rank_of(task)
    assert ranked is not None, f"{task.name} is unranked"
    return ranked


def _placed(sim: Sim) -> list[str]:
    return [t.name for t in sim.machine.tasks.values() if t.state in ("assigned", "running")]


def test_critical_path_is_placed_first(sim: Sim) -> None:
    # File order puts three short independent tasks first; the long chain's head must go first.
    tasks = [
        task_spec("s1", estimated_duration=1.0),
        task_spec("s2", estimated_duration=1.0),
        task_spec("s3", estimated_duration=1.0),
        task_spec("head", estimated_duration=1.0),
        task_spec("tail", "head", estimated_duration=50.0),
    ]
    workflow_id, _ = sim.submit(tasks)
    head = _rank(sim.machine.ordering, sim.task(workflow_id, "head"))
    assert head.rank_s == 51.0 and head.source is S.ESTIMATE
    sim.hello("a1", slots=1)
    assert _placed(sim) == ["head"]


def test_second_run_uses_learned_durations(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim()
    sim.hello("a1", slots=4)
    tasks = [task_spec("fan"), task_spec("quick", "fan"), task_spec("slow", "fan"), task_spec("join", "quick", "slow")]
    first, _ = sim.submit(tasks, name="nightly")
    for name in ("fan", "quick", "slow", "join"):
        assert _rank(sim.machine.ordering, sim.task(first, name)).source is S.STRUCTURAL
    # Structural: quick and slow look alike (themselves plus half of join below each).
    assert _rank(sim.machine.ordering, sim.task(first, "quick")).rank_s == 1.5
    assert _rank(sim.machine.ordering, sim.task(first, "fan")).rank_s == 4.0
    _run_one(sim, "a1", first, "fan", 2.0)
    quick, slow = sim.attempt_of(first, "quick"), sim.attempt_of(first, "slow")
    sim.started("a1", quick)
    sim.started("a1", slow)
    sim.advance(1.0)
    sim.finished("a1", quick)
    sim.advance(9.0)
    sim.finished("a1", slow)
    _run_one(sim, "a1", first, "join", 3.0)
    assert sim.machine.workflows[first].state == "completed"
    # Learned at once (below); stored within END_FLUSH_S of the workflow's end, not in its tick.
    assert not [d for g, d in sim.store.load().durations if g[0] == "task"]
    sim.advance(END_FLUSH_S)
    stored = {d.name: d.seconds for g, d in sim.store.load().durations if g[0] == "task"}
    assert stored == {"fan": 2.0, "quick": 1.0, "slow": 10.0, "join": 3.0}

    second, _ = sim.submit(tasks, name="nightly", start=False)
    assert sim.machine.ordering.rank_of(sim.task(second, "fan")) is None  # ranked when it starts
    sim.do(ev.StartWorkflow(second))
    ranked = {name: _rank(sim.machine.ordering, sim.task(second, name)) for name in ("fan", "quick", "slow", "join")}
    assert {r.source for r in ranked.values()} == {S.LEARNED}
    assert ranked["slow"].expected_s == 10.0
    assert ranked["fan"].rank_s == 2.0 + 10.0 + 3.0
    assert ranked["slow"].score > ranked["quick"].score


def test_learned_durations_survive_a_restart_and_rank_restored_workflows(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim()
    sim.hello("a1", slots=2)
    done, _ = sim.submit([task_spec("x")], name="daily")
    _run_one(sim, "a1", done, "x", 7.0)
    sim.advance(END_FLUSH_S)  # stored within this of the workflow's end (a crash sooner loses it)
    unknown = {"command": ["sort", "-u"]}  # a fingerprint nothing taught
    running, _ = sim.submit([task_spec("x"), task_spec("y", "x", payload=unknown)], name="daily")
    sim.quiet()

    machine = Machine(MachineConfig(), new_id=sim.new_id, rng=random.Random(1), boot_time=sim.now)
    machine.restore(sim.store.load(), sim.now)
    x = machine.tasks[machine.by_name[(running, "x")]]
    y = machine.tasks[machine.by_name[(running, "y")]]
    assert _rank(machine.ordering, x).source is S.LEARNED and _rank(machine.ordering, x).expected_s == 7.0
    assert _rank(machine.ordering, x).rank_s == 14.0  # y unknown: the mean of the known ones (7)
    assert _rank(machine.ordering, y).source is S.STRUCTURAL
    machine.validate()


def test_a_new_workflow_borrows_the_fingerprint(sim: Sim) -> None:
    sim.hello("a1", slots=1)
    tasks = [task_spec("compress", payload={"command": ["gzip", "-9", "big.log"]})]
    first, _ = sim.submit(tasks, name="archive")
    _run_one(sim, "a1", first, "compress", 40.0)
    other, _ = sim.submit([task_spec("pack", payload={"command": ["gzip", "other.log"]})], name="backup")
    ranked = _rank(sim.machine.ordering, sim.task(other, "pack"))
    assert ranked.source is S.FINGERPRINT and ranked.expected_s == 40.0


def test_failed_attempts_teach_nothing(sim: Sim) -> None:
    sim.hello("a1", slots=1)
    workflow_id, _ = sim.submit([task_spec("flaky")], name="wf")
    attempt_id = sim.attempt_of(workflow_id, "flaky")
    sim.started("a1", attempt_id)
    sim.now += 5.0
    sim.finished("a1", attempt_id, outcome=AttemptState.FAILED, retryable=False)
    assert len(sim.machine.ordering.book) == 0


def test_task_status_shows_rank_fields(sim: Sim) -> None:
    workflow_id, _ = sim.submit(
        [task_spec("a", estimated_duration=4.0), task_spec("b", "a", payload={"command": ["sort"]})], name="wf"
    )
    a, b = sim.task(workflow_id, "a"), sim.task(workflow_id, "b")
    status = wire.task_status(sim.machine, a)
    assert (status.rank_s, status.expected_duration_s, status.duration_source) == (8.0, 4.0, "estimate")
    status = wire.task_status(sim.machine, b)
    # b has no duration: it weighs the mean of the known ones, but says it is structural.
    assert (status.rank_s, status.expected_duration_s, status.duration_source) == (4.0, 0.0, "structural")
    pending, _ = sim.submit([task_spec("c")], name="later", start=False)
    assert wire.task_status(sim.machine, sim.task(pending, "c")).duration_source == ""


def test_second_run_places_the_learned_critical_path_first(sim: Sim) -> None:
    # Structure alone favours "wide" (three tasks below it); the runs show the long chain matters.
    tasks = [
        task_spec("wide"),
        task_spec("w1", "wide"),
        task_spec("w2", "wide"),
        task_spec("w3", "wide"),
        task_spec("long", payload={"command": ["long-job"]}),
        task_spec("long-tail", "long", payload={"command": ["long-job", "--tail"]}),
    ]
    sim.hello("a1", slots=1)
    first, _ = sim.submit(tasks, name="recurring")
    assert _placed(sim) == ["wide"]
    seconds = {"wide": 1.0, "w1": 1.0, "w2": 1.0, "w3": 1.0, "long": 50.0, "long-tail": 50.0}
    while sim.machine.workflows[first].state == "running":
        (name,) = _placed(sim)
        _run_one(sim, "a1", first, name, seconds[name])
    assert sim.machine.workflows[first].state == "completed"

    second, _ = sim.submit(tasks, name="recurring")
    assert _placed(sim) == ["long"]
    assert _rank(sim.machine.ordering, sim.task(second, "long")).rank_s == 100.0


def test_learned_durations_reach_the_store_on_the_flush_timer(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim(config=MachineConfig(durations_flush_s=60.0))
    sim.hello("a1", slots=1)
    workflow_id, _ = sim.submit([task_spec("first"), task_spec("second", "first")], name="long-running")
    sim.tick()  # the first tick's flush (the timer starts due): nothing learned yet
    _run_one(sim, "a1", workflow_id, "first", 5.0)
    assert sim.machine.workflows[workflow_id].state == "running"
    assert sim.store.load().durations == []  # learned, not yet written
    sim.advance(60.0)
    stored = {(*g, d.name): d.seconds for g, d in sim.store.load().durations}
    assert stored == {
        ("task", "default", "long-running", "first"): 5.0,
        ("fingerprint", "default", "", "shell:echo"): 5.0,
    }


def test_measured_usage_is_learned_and_shown_on_the_next_run(sim: Sim) -> None:
    sim.hello("a1", slots=4)
    first, _ = sim.submit([task_spec("train")], name="nightly")
    attempt_id = sim.attempt_of(first, "train")
    sim.started("a1", attempt_id)
    sim.advance(2.0)
    sim.do(
        ev.AttemptFinished(
            "a1", attempt_id, AttemptState.SUCCEEDED, 0, b"null", at=sim.now, peak_rss_bytes=300 << 20, cpu_s=1.75
        )
    )
    done = wire.task_status(sim.machine, sim.task(first, "train"))
    assert (done.peak_rss_bytes, done.expected_peak_rss_bytes) == (300 << 20, 0)  # finished: measured only
    second, _ = sim.submit([task_spec("train")], name="nightly", start=False)
    waiting = wire.task_status(sim.machine, sim.task(second, "train"))
    assert (waiting.expected_peak_rss_bytes, waiting.expected_cpu_s) == (300 << 20, 1.75)
    other, _ = sim.submit([task_spec("train")], name="weekly", start=False)  # another workflow: unknown
    assert wire.task_status(sim.machine, sim.task(other, "train")).expected_peak_rss_bytes == 0


def test_ranks_are_per_workflow_kept_for_unfinished_tasks_and_dropped_when_it_ends(sim: Sim) -> None:
    sim.hello("a1", slots=2)
    chain, _ = sim.submit([task_spec("a", estimated_duration=4.0), task_spec("b", "a", estimated_duration=2.0)])
    single, _ = sim.submit([task_spec("x", estimated_duration=1.0)])
    ordering = sim.machine.ordering
    assert set(ordering.ranks) == {chain, single}
    a, b, x = sim.task(chain, "a"), sim.task(chain, "b"), sim.task(single, "x")
    assert ordering.score(a) > ordering.score(b) > 0.0
    # The other workflow's task is ranked within its own workflow (the same index as a's).
    assert x.index == a.index and _rank(ordering, x).rank_s == 1.0
    _run_one(sim, "a1", chain, "a", 4.0)
    assert ordering.rank_of(a) is None  # finished: it shows its real times
    assert _rank(ordering, b) == (2.0, 2.0, S.ESTIMATE, ordering.score(b))  # unfinished: kept
    _run_one(sim, "a1", single, "x", 1.0)
    assert sim.machine.workflows[single].state == "completed"
    assert set(ordering.ranks) == {chain} and ordering.rank_of(x) is None and ordering.score(x) == 0.0
    assert _rank(ordering, b).rank_s == 2.0  # another workflow's end leaves this one's ranks
    _run_one(sim, "a1", chain, "b", 2.0)
    assert not ordering.ranks


def test_a_learned_duration_decides_whether_a_task_is_short(sim: Sim) -> None:
    # Short tasks are prefetched, long ones take a free slot (or the lookahead): a task's own
    # learned duration decides, as its estimate would, not the workflow's average so far.
    tasks = [task_spec("quick"), task_spec("slow", "quick")]
    sim.hello("a1", slots=1)
    first, _ = sim.submit(tasks, name="recurring")
    for name, seconds in (("quick", 0.01), ("slow", 2.0)):
        _run_one(sim, "a1", first, name, seconds)
    assert sim.machine.workflows[first].state == "completed"

    second, _ = sim.submit(tasks, name="recurring")
    quick, slow = sim.task(second, "quick"), sim.task(second, "slow")
    assert _rank(sim.machine.ordering, slow).source is S.LEARNED
    assert sim.machine.expected_short(quick) and not sim.machine.expected_short(slow)
    _run_one(sim, "a1", second, "quick", 0.01)  # the workflow's tasks ran short so far
    assert not sim.machine.expected_short(slow)
