"""The agent's attempt state machine (corral.agent.lifecycle): every transition, no processes, no clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from corral.agent.attempt import AttemptResult, StopReason
from corral.agent.lifecycle import (
    TRANSITIONS,
    Acked,
    Adopted,
    Assigned,
    AttemptMachine,
    Cancel,
    Drain,
    Ended,
    Event,
    Forget,
    GotOutput,
    Instruction,
    InvalidTransition,
    KillAll,
    KillSilently,
    ReportAccepted,
    ReportFinished,
    ReportOutput,
    ReportReleased,
    ReportStarted,
    Start,
    Started,
    StartFailed,
    State,
    Stop,
    TimedOut,
)
from corral.agent.lifecycle_events import Stage, StageRefused, Unstaged, Withdraw
from corral.v1 import types_pb2

GRACE = 7.0
OK = AttemptResult(types_pb2.ATTEMPT_OUTCOME_SUCCEEDED, result_json=b"1")
FAILED = AttemptResult.failed("exit code 1", retryable=True, exit_code=1)
LOST = types_pb2.ATTEMPT_OUTCOME_LOST


def assignment(attempt_id: str, agent_type: str = "shell", timeout_s: float = 0) -> types_pb2.TaskAssignment:
    return types_pb2.TaskAssignment(attempt_id=attempt_id, agent_type=agent_type, timeout_s=timeout_s)


def machine(slots: int = 2) -> AttemptMachine:
    return AttemptMachine(slots, GRACE)


def kinds(out: list[Instruction]) -> list[str]:
    return [type(i).__name__ for i in out]


def py(attempt_id: str, workflow_id: str = "wf") -> types_pb2.TaskAssignment:
    return types_pb2.TaskAssignment(attempt_id=attempt_id, agent_type="python", workflow_id=workflow_id)


def staging(slots: int = 1) -> AttemptMachine:
    return AttemptMachine(slots, GRACE, stage_type="python")


def in_state(state: State, *, timeout_s: float = 0) -> AttemptMachine:
    """A machine holding attempt "a" in ``state`` (QUEUED behind a busy "busy" attempt; STAGED
    behind a running python attempt "lead" of its workflow)."""
    if state is State.STAGED:
        m = staging()
        m.handle(Assigned(py("lead")))
        m.handle(Started("lead", 1))
        m.handle(Assigned(py("a")))
        assert m.state("a") is state
        return m
    m = machine(slots=1)
    if state is State.QUEUED:
        m.handle(Assigned(assignment("busy")))
    m.handle(Assigned(assignment("a", timeout_s=timeout_s)))
    if state in (State.RUNNING, State.STOPPING, State.DONE):
        m.handle(Started("a", 10))
    if state is State.STOPPING:
        m.handle(Cancel("a", force=False, grace_s=1.0))
    if state is State.DONE:
        m.handle(Ended("a", OK))
    assert m.state("a") is state
    return m


# -- assignments, slots and the FIFO queue ---------------------------------------------------------------


def test_assignments_start_up_to_the_slots_then_queue_in_order() -> None:
    m = machine(slots=2)
    assert m.handle(Assigned(assignment("a"))) == [ReportAccepted("a"), Start("a", assignment("a"))]
    assert kinds(m.handle(Assigned(assignment("b")))) == ["ReportAccepted", "Start"]
    assert m.handle(Assigned(assignment("c"))) == [ReportAccepted("c")]
    assert m.handle(Assigned(assignment("d"))) == [ReportAccepted("d")]
    assert (m.active_count, m.queued_count) == (2, 2)
    assert m.active_ids() == ["a", "b", "c", "d"]
    # "b" ends first: the oldest queued attempt takes its slot.
    m.handle(Started("b", 2))
    assert m.handle(Ended("b", OK)) == [ReportFinished("b", OK), Start("c", assignment("c"))]
    assert m.active_ids() == ["a", "c", "d"]
    assert m.state("b") is State.DONE


def test_a_repeated_assignment_is_ignored() -> None:
    m = machine()
    m.handle(Assigned(assignment("a")))
    assert m.handle(Assigned(assignment("a"))) == []
    assert m.active_count == 1


def test_slots_must_be_positive() -> None:
    with pytest.raises(ValueError, match="slots"):
        AttemptMachine(0, GRACE)


# -- one attempt's life ------------------------------------------------------------------------------


def test_start_run_output_end_ack() -> None:
    m = in_state(State.STARTING)
    assert m.handle(Started("a", 42)) == [ReportStarted("a", 42)]
    assert m.state("a") is State.RUNNING
    assert m.handle(GotOutput("a", b"out", b"", False)) == [ReportOutput("a", b"out", b"", False)]
    assert m.handle(Acked("a")) == []  # an ack of a running attempt means nothing yet
    assert m.handle(Ended("a", FAILED)) == [ReportFinished("a", FAILED)]
    assert m.state("a") is State.DONE and m.active_count == 0
    assert m.handle(Cancel("a", force=True, grace_s=0)) == []  # its report is on its way
    assert m.handle(Acked("a")) == [Forget("a", "shell", adopted=False)]
    assert m.state("a") is None
    assert m.handle(Acked("a")) == []  # a repeated ack


def test_start_failure_is_reported_and_frees_the_slot() -> None:
    m = machine(slots=1)
    m.handle(Assigned(assignment("a", "python")))
    m.handle(Assigned(assignment("b")))
    refused = AttemptResult.failed("policy: no", retryable=False)
    assert m.handle(StartFailed("a", refused)) == [ReportFinished("a", refused), Start("b", assignment("b"))]
    assert m.handle(Acked("a")) == [Forget("a", "python", adopted=False)]


def test_a_timed_out_result_names_the_timeout() -> None:
    m = in_state(State.RUNNING, timeout_s=5)
    out = m.handle(Ended("a", AttemptResult.stopped(StopReason.TIMED_OUT)))
    assert isinstance(out[0], ReportFinished)
    assert out[0].result.error == "timed out after 5 s"
    assert out[0].result.outcome == types_pb2.ATTEMPT_OUTCOME_TIMED_OUT


# -- cancels -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("release_only", [False, True])
def test_cancel_of_a_queued_attempt_releases_it(release_only: bool) -> None:
    m = in_state(State.QUEUED)
    assert m.handle(Cancel("a", force=False, grace_s=1, release_only=release_only)) == [ReportReleased("a")]
    assert m.state("a") is None and m.queued_count == 0
    assert m.active_ids() == ["busy"]


def test_cancel_while_starting_is_applied_once_started() -> None:
    m = in_state(State.STARTING)
    assert m.handle(Cancel("a", force=False, grace_s=3)) == []
    assert m.handle(Started("a", 5)) == [ReportStarted("a", 5), Stop("a", StopReason.CANCELLED, False, 3)]
    assert m.state("a") is State.STOPPING


def test_held_stops_keep_the_first_reason_and_only_escalate() -> None:
    m = in_state(State.STARTING)
    m.handle(Cancel("a", force=False, grace_s=3))
    m.handle(KillAll(force=True, grace_s=0))
    m.handle(Cancel("a", force=False, grace_s=9))
    assert m.handle(Started("a", 5))[-1] == Stop("a", StopReason.CANCELLED, True, 0)


def test_release_only_leaves_starting_and_running_attempts_alone() -> None:
    m = in_state(State.STARTING)
    assert m.handle(Cancel("a", force=True, grace_s=0, release_only=True)) == []
    assert m.handle(Started("a", 5)) == [ReportStarted("a", 5)]
    assert m.handle(Cancel("a", force=True, grace_s=0, release_only=True)) == []
    assert m.state("a") is State.RUNNING


def test_cancel_of_a_running_attempt_stops_it() -> None:
    m = in_state(State.RUNNING)
    assert m.handle(Cancel("a", force=False, grace_s=4)) == [Stop("a", StopReason.CANCELLED, False, 4)]
    assert m.state("a") is State.STOPPING


def test_cancel_of_a_stopping_attempt_only_escalates_once() -> None:
    m = in_state(State.STOPPING)
    assert m.handle(Cancel("a", force=False, grace_s=4)) == []
    assert m.handle(Cancel("a", force=True, grace_s=0, release_only=True)) == []
    assert m.handle(Cancel("a", force=True, grace_s=0)) == [Stop("a", StopReason.CANCELLED, True, 0)]
    assert m.handle(Cancel("a", force=True, grace_s=0)) == []
    assert m.handle(Ended("a", AttemptResult.stopped(StopReason.CANCELLED)))[0] == ReportFinished(
        "a", AttemptResult.stopped(StopReason.CANCELLED)
    )


# -- silent kills (reassigned elsewhere) ------------------------------------------------------------------


def test_kill_silently_a_queued_attempt_drops_it() -> None:
    m = in_state(State.QUEUED)
    assert m.handle(KillSilently("a")) == []
    assert m.state("a") is None and m.queued_count == 0


def test_kill_silently_a_starting_attempt_reports_nothing_of_it() -> None:
    m = in_state(State.STARTING)
    assert m.handle(KillSilently("a")) == []
    assert m.handle(Started("a", 5)) == [Stop("a", StopReason.KILLED, False, GRACE)]
    assert m.handle(GotOutput("a", b"x", b"", False)) == []
    assert m.handle(Ended("a", OK)) == [Forget("a", "shell", adopted=False)]
    assert m.state("a") is None and m.active_count == 0


def test_kill_silently_a_starting_attempt_that_fails_to_start() -> None:
    m = in_state(State.STARTING)
    m.handle(KillSilently("a"))
    assert m.handle(StartFailed("a", FAILED)) == [Forget("a", "shell", adopted=False)]


def test_kill_silently_a_running_attempt_uses_the_kill_grace() -> None:
    m = in_state(State.RUNNING)
    m.kill_grace_s = 2.5  # the controller's Welcome said so
    assert m.handle(KillSilently("a")) == [Stop("a", StopReason.KILLED, False, 2.5)]
    assert m.handle(GotOutput("a", b"x", b"", False)) == []
    assert m.handle(Ended("a", OK)) == [Forget("a", "shell", adopted=False)]


def test_kill_silently_a_stopping_attempt_silences_it() -> None:
    m = in_state(State.STOPPING)
    assert m.handle(KillSilently("a")) == []
    assert m.handle(Ended("a", OK)) == [Forget("a", "shell", adopted=False)]


def test_kill_silently_a_done_attempt_forgets_it() -> None:
    m = in_state(State.DONE)
    assert m.handle(KillSilently("a")) == [Forget("a", "shell", adopted=False)]
    assert m.state("a") is None


# -- timeouts -------------------------------------------------------------------------------------------


def test_the_agent_timer_stops_gracefully_and_the_backstop_forces() -> None:
    m = in_state(State.RUNNING)
    assert m.handle(TimedOut("a", force=False, grace_s=GRACE)) == [Stop("a", StopReason.TIMED_OUT, False, GRACE)]
    assert m.handle(TimedOut("a", force=False, grace_s=GRACE)) == []  # already stopping
    assert m.handle(TimedOut("a", force=True)) == [Stop("a", StopReason.TIMED_OUT, True, 0)]
    assert m.handle(TimedOut("a", force=True)) == []


def test_the_backstop_forces_a_running_attempt() -> None:
    m = in_state(State.RUNNING)
    assert m.handle(TimedOut("a")) == [Stop("a", StopReason.TIMED_OUT, True, 0)]


# -- drain and kill all -------------------------------------------------------------------------------------


def test_drain_gives_queued_work_back_and_refuses_new_work() -> None:
    m = machine(slots=1)
    m.handle(Assigned(assignment("run")))
    m.handle(Started("run", 1))
    m.handle(Assigned(assignment("q")))
    out = m.handle(Drain())
    assert kinds(out) == ["ReportFinished"]
    assert isinstance(out[0], ReportFinished) and out[0].attempt_id == "q"
    assert out[0].result.outcome == LOST and out[0].result.retryable and "not started" in out[0].result.error
    assert not m.accepting
    late = m.handle(Assigned(assignment("late")))
    assert kinds(late) == ["ReportFinished"] and m.state("late") is State.DONE
    # Running work is left alone by the drain itself; it ends, and nothing new starts.
    assert m.handle(Ended("run", OK)) == [ReportFinished("run", OK)]
    assert m.active_count == 0


def test_kill_all_stops_everything() -> None:
    m = machine(slots=3)
    for attempt_id in ("starting", "running", "stopping"):
        m.handle(Assigned(assignment(attempt_id)))
    m.handle(Assigned(assignment("queued")))
    m.handle(Started("running", 1))
    m.handle(Started("stopping", 2))
    m.handle(Cancel("stopping", force=False, grace_s=5))
    out = m.handle(KillAll(force=True, grace_s=0))
    assert kinds(out) == ["ReportFinished", "Stop", "Stop"]
    assert {(i.attempt_id, i.reason, i.force) for i in out if isinstance(i, Stop)} == {
        ("running", StopReason.DRAINED, True),
        ("stopping", StopReason.DRAINED, True),
    }
    # The starting one is stopped as soon as it has started.
    assert m.handle(Started("starting", 3))[-1] == Stop("starting", StopReason.DRAINED, True, 0)


def test_the_graceful_kill_all_leaves_stopping_attempts_alone() -> None:
    m = in_state(State.STOPPING)
    assert m.handle(KillAll(force=False, grace_s=GRACE)) == []
    m2 = in_state(State.RUNNING)
    assert m2.handle(KillAll(force=False, grace_s=GRACE)) == [Stop("a", StopReason.DRAINED, False, GRACE)]


# -- adoption after an agent restart --------------------------------------------------------------------


def test_an_adopted_running_attempt_holds_a_slot_and_is_reported_again() -> None:
    m = machine(slots=1)
    assert m.handle(Adopted("old", pid=77)) == [ReportStarted("old", 77)]
    assert m.state("old") is State.RUNNING and m.active_count == 1
    assert m.handle(Assigned(assignment("new"))) == [ReportAccepted("new")]  # no free slot
    assert m.active_ids() == ["old", "new"]
    assert m.handle(Ended("old", OK)) == [ReportFinished("old", OK), Start("new", assignment("new"))]
    assert m.handle(Acked("old")) == [Forget("old", "", adopted=True)]


def test_adopted_running_attempts_may_exceed_the_slots() -> None:
    m = machine(slots=1)
    m.handle(Adopted("x", pid=1))
    m.handle(Adopted("y", pid=2))
    assert m.active_count == 2
    m.handle(Assigned(assignment("z")))
    assert m.handle(Ended("x", OK)) == [ReportFinished("x", OK)]  # still one over: nothing starts
    assert kinds(m.handle(Ended("y", OK))) == ["ReportFinished", "Start"]


def test_an_adopted_finished_attempt_is_reported_until_acked() -> None:
    m = machine()
    assert m.handle(Adopted("f", result=OK)) == [ReportFinished("f", OK)]
    assert m.state("f") is State.DONE and m.active_count == 0 and m.active_ids() == []
    assert m.handle(Acked("f")) == [Forget("f", "", adopted=True)]


def test_an_adopted_attempt_the_controller_moved_is_killed_silently() -> None:
    m = machine()
    m.handle(Adopted("r", pid=5))
    m.handle(Adopted("f", result=OK))
    assert m.handle(KillSilently("r")) == [Stop("r", StopReason.KILLED, False, GRACE)]
    assert m.handle(KillSilently("f")) == [Forget("f", "", adopted=True)]
    assert m.handle(Ended("r", AttemptResult.stopped(StopReason.KILLED))) == [Forget("r", "", adopted=True)]


@pytest.mark.parametrize(
    "event",
    [Adopted("a", pid=1), Adopted("n"), Adopted("n", pid=1, result=OK)],
    ids=["already-held", "neither", "both"],
)
def test_bad_adoptions_raise(event: Adopted) -> None:
    m = in_state(State.RUNNING)
    with pytest.raises(InvalidTransition):
        m.handle(event)


# -- unknown attempts and impossible transitions ---------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [Cancel("nope", force=True, grace_s=0), KillSilently("nope"), Acked("nope")],
    ids=lambda e: type(e).__name__,
)
def test_controller_messages_about_unknown_attempts_are_ignored(event: Event) -> None:
    assert machine().handle(event) == []


@pytest.mark.parametrize(
    "event",
    [
        Started("nope", 1),
        StartFailed("nope", OK),
        GotOutput("nope", b"", b"", False),
        Ended("nope", OK),
        TimedOut("nope"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_runner_events_about_unknown_attempts_raise(event: Event) -> None:
    with pytest.raises(InvalidTransition, match="unknown attempt"):
        machine().handle(event)


_SAMPLES: dict[type, Callable[[], Event]] = {
    Started: lambda: Started("a", 1),
    StartFailed: lambda: StartFailed("a", FAILED),
    GotOutput: lambda: GotOutput("a", b"x", b"", False),
    Ended: lambda: Ended("a", OK),
    Cancel: lambda: Cancel("a", force=True, grace_s=0),
    KillSilently: lambda: KillSilently("a"),
    Acked: lambda: Acked("a"),
    TimedOut: lambda: TimedOut("a"),
    Unstaged: lambda: Unstaged("a"),
    StageRefused: lambda: StageRefused("a"),
}


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.name)
@pytest.mark.parametrize("kind", list(_SAMPLES), ids=lambda k: k.__name__)
def test_every_pair_is_in_the_table_or_raises(state: State, kind: type) -> None:
    m = in_state(state)
    if (state, kind) in TRANSITIONS:
        m.handle(_SAMPLES[kind]())  # a row of the table: handled (its effect is tested above)
    else:
        with pytest.raises(InvalidTransition, match=state.name):
            m.handle(_SAMPLES[kind]())


def test_the_table_names_only_known_states_and_events() -> None:
    for state, kind in TRANSITIONS:
        assert state in State and kind in _SAMPLES


# --- the queue keeps the controller's order ------------------------------------------------------


def _ordered(attempt_id: str, *order: float) -> types_pb2.TaskAssignment:
    message = assignment(attempt_id)
    message.queue_order.extend(order)
    return message


def test_a_free_slot_takes_the_queued_attempt_first_in_the_controllers_order() -> None:
    m = machine(slots=1)
    m.handle(Assigned(_ordered("running", -50.0, 0.0, -9.0)))
    # Sent ahead of the slot in this order; the later ones rank higher (more critical) in the controller.
    for attempt_id, score in (("long", 1.0), ("short-critical", 5.0), ("other", 2.0)):
        m.handle(Assigned(_ordered(attempt_id, -50.0, 0.0, -score)))
    assert m.active_ids() == ["running", "short-critical", "other", "long"]
    started = []
    current = "running"
    for _ in range(3):
        m.handle(Started(current, 1))
        out = m.handle(Ended(current, OK))
        (start,) = [i for i in out if isinstance(i, Start)]
        started.append(current := start.attempt_id)
    assert started == ["short-critical", "other", "long"]


def test_attempts_without_an_order_start_in_the_order_they_arrived() -> None:
    m = machine(slots=1)
    for attempt_id in ("a", "b", "c", "d"):
        m.handle(Assigned(assignment(attempt_id)))
    m.handle(Cancel("c", force=False, grace_s=GRACE))  # a queued one released: the rest keep their order
    assert m.active_ids() == ["a", "b", "d"]
    m.handle(Started("a", 1))
    (start,) = [i for i in m.handle(Ended("a", OK)) if isinstance(i, Start)]
    assert start.attempt_id == "b"


# --- staging: the next python attempt waits in a running one's worker -------------------------------


def test_with_every_slot_busy_the_head_is_staged_behind_a_running_attempt_of_its_workflow() -> None:
    m = staging(slots=1)
    m.handle(Assigned(py("a")))
    m.handle(Assigned(py("other", workflow_id="wf2")))  # the head: another workflow, not staged
    assert m.state("other") is State.QUEUED
    assert m.handle(Started("a", 1)) == [ReportStarted("a", 1)]
    m.handle(Cancel("other", force=False, grace_s=0))
    assert m.handle(Assigned(py("b"))) == [ReportAccepted("b"), Stage("b", "a", py("b"))]
    assert m.handle(Assigned(py("c"))) == [ReportAccepted("c")]  # one follower per leader
    assert (m.state("b"), m.state("c"), m.active_count, m.queued_count) == (State.STAGED, State.QUEUED, 1, 2)
    assert m.active_ids() == ["a", "b", "c"]
    # "a" ends: "b" takes its slot (it started in the worker already), and "c" is staged behind it.
    assert m.handle(Ended("a", OK)) == [ReportFinished("a", OK), Start("b", py("b"))]
    assert m.handle(Started("b", 1)) == [ReportStarted("b", 1), Stage("c", "b", py("c"))]
    assert m.active_count == 1


def test_only_the_stage_type_is_staged() -> None:
    m = staging(slots=1)
    m.handle(Assigned(py("a")))
    m.handle(Started("a", 1))
    m.handle(Assigned(assignment("shell")))
    assert m.state("shell") is State.QUEUED
    plain = machine(slots=1)
    plain.handle(Assigned(py("a")))
    plain.handle(Started("a", 1))
    plain.handle(Assigned(py("b")))
    assert plain.state("b") is State.QUEUED


def test_stopping_a_leader_withdraws_its_follower_first() -> None:
    m = in_state(State.STAGED)
    assert m.handle(Cancel("lead", force=False, grace_s=1.0)) == [
        Withdraw("a"),
        Stop("lead", StopReason.CANCELLED, False, 1.0),
    ]
    # It had not started: it waits for a slot again (the stopping leader takes no follower).
    assert m.handle(Unstaged("a")) == []
    assert m.state("a") is State.QUEUED
    assert m.handle(Ended("lead", AttemptResult.stopped(StopReason.CANCELLED)))[-1] == Start("a", py("a"))


def test_a_follower_that_started_before_its_withdrawal_inherits_the_stopped_leaders_slot() -> None:
    m = in_state(State.STAGED)
    m.handle(Cancel("lead", force=False, grace_s=1.0))  # the Withdraw fails: the leader had answered
    out = m.handle(Ended("lead", OK))
    assert out == [ReportFinished("lead", OK), Start("a", py("a"))]
    assert m.active_count == 1


def test_a_cancelled_staged_attempt_is_released_when_withdrawn_else_stopped_once_started() -> None:
    m = in_state(State.STAGED)
    assert m.handle(Cancel("a", force=False, grace_s=2.0)) == [Withdraw("a")]
    assert m.handle(Unstaged("a")) == [ReportReleased("a")]
    assert m.state("a") is None
    m = in_state(State.STAGED)
    m.handle(Cancel("a", force=False, grace_s=2.0))
    m.handle(Ended("lead", OK))  # the withdrawal failed: it had started
    assert m.handle(Started("a", 5)) == [ReportStarted("a", 5), Stop("a", StopReason.CANCELLED, False, 2.0)]


def test_a_staged_attempt_asked_back_is_released_when_withdrawn_else_left_to_run() -> None:
    # A move of queued work (release_only): a staged attempt has not started until its worker
    # answers its leader, so it can still be given back; if it had started, it stays, unstopped.
    m = in_state(State.STAGED)
    assert m.handle(Cancel("a", force=False, grace_s=2.0, release_only=True)) == [Withdraw("a")]
    assert m.handle(Unstaged("a")) == [ReportReleased("a")]
    assert m.state("a") is None
    m = in_state(State.STAGED)
    m.handle(Cancel("a", force=False, grace_s=2.0, release_only=True))
    m.handle(Ended("lead", OK))  # the withdrawal failed: it had started
    assert m.handle(Started("a", 5)) == [ReportStarted("a", 5)]
    assert m.state("a") is State.RUNNING


def test_a_staged_attempt_killed_silently_goes_without_a_word() -> None:
    m = in_state(State.STAGED)
    assert m.handle(KillSilently("a")) == [Withdraw("a")]
    assert m.handle(Unstaged("a")) == []
    assert m.state("a") is None


def test_a_free_slot_with_nothing_queued_takes_a_staged_attempt_back() -> None:
    m = staging(slots=2)
    for attempt_id in ("a", "b"):
        m.handle(Assigned(py(attempt_id)))
        m.handle(Started(attempt_id, 1))
    # Behind the oldest running attempt (the likeliest to end first).
    assert m.handle(Assigned(py("c"))) == [ReportAccepted("c"), Stage("c", "a", py("c"))]
    other = "b"
    # The attempt without a follower ends first: "c" should not wait for its own leader.
    assert m.handle(Ended(other, OK)) == [ReportFinished(other, OK), Withdraw("c")]
    assert m.handle(Unstaged("c")) == [Start("c", py("c"))]
    assert m.active_count == 2


def test_a_refused_stage_queues_the_attempt_again_and_that_leader_takes_no_follower() -> None:
    m = in_state(State.STAGED)
    assert m.handle(StageRefused("a")) == []
    assert m.state("a") is State.QUEUED
    m.handle(Assigned(py("b")))
    assert m.state("b") is State.QUEUED


def test_draining_withdraws_staged_attempts_and_gives_them_back() -> None:
    m = in_state(State.STAGED)
    assert m.handle(Drain()) == [Withdraw("a")]
    assert m.handle(Unstaged("a")) == [ReportFinished("a", AttemptResult.stopped(StopReason.DRAINED, "not started"))]
    m = in_state(State.STAGED)
    out = m.handle(KillAll(force=True, grace_s=0))
    assert out[0] == Withdraw("a") and Stop("lead", StopReason.DRAINED, True, 0) in out
    m.handle(Ended("lead", OK))  # the withdrawal failed: "a" started, and is stopped at once
    assert m.handle(Started("a", 3))[-1] == Stop("a", StopReason.DRAINED, True, 0)
