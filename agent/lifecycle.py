"""The lifecycle of the attempts on this agent, as a pure state machine: events in, instructions out.

Like dask's ``worker_state_machine``: :class:`AttemptMachine` holds the slots, the queue (in the controller's order) and
the state of every attempt the agent holds, and :meth:`AttemptMachine.handle` turns one event (an
assignment, a runner's answer, a controller message, a drain) into the instructions the thin shell
(:mod:`corral.agent.executor`) carries out: start a run, stop one, report something, forget one.
No asyncio, no clock, no I/O here, so every transition is unit-tested without processes.

Like h11's ``_state``: every transition of one attempt is a row of :data:`TRANSITIONS`, keyed by
(state, event type); a pair missing from the table raises :class:`InvalidTransition`.

States::

    QUEUED --slot free--> STARTING --Started--> RUNNING --Stop--> STOPPING
      |                      |                     |                 |
      +--Cancel: Released    +--StartFailed--------+--Ended----------+--> DONE --Acked--> forgotten
         (forgotten)

An attempt killed silently (reassigned elsewhere) ends forgotten instead of DONE: nothing of it is
reported. Attempts adopted after an agent restart enter RUNNING (their supervisor still runs them)
or DONE (it finished while the agent was away).

Staging (``stage_type``: python workers): with every slot taken, the queue's head may be STAGED
behind a RUNNING attempt of its type and workflow (its leader): its worker starts it as soon as it
has answered the leader, without waiting for the agent. It holds no slot; when the leader ends it
takes the leader's (STARTING). It is withdrawn (Withdraw, then Unstaged if it had not started)
before its leader is stopped, when it is cancelled, drained or killed, and when a slot frees with
nothing queued (a short task staged behind a long one does not wait for it)::

    QUEUED --all slots busy--> STAGED --leader ended--> STARTING
                                 +--Unstaged--> QUEUED (or released, drained, forgotten)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from corral.agent.attempt import AttemptResult, StopReason
from corral.agent.lifecycle_events import (
    Acked,
    Adopted,
    Assigned,
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
    Stage,
    StageRefused,
    Start,
    Started,
    StartFailed,
    State,
    Stop,
    TimedOut,
    Unstaged,
    Withdraw,
)
from corral.agent.slotqueue import SlotQueue
from corral.v1 import types_pb2

__all__ = [
    "TRANSITIONS",
    "Acked",
    "Adopted",
    "Assigned",
    "AttemptMachine",
    "Cancel",
    "Drain",
    "Ended",
    "Event",
    "Forget",
    "GotOutput",
    "Instruction",
    "InvalidTransition",
    "KillAll",
    "KillSilently",
    "ReportAccepted",
    "ReportFinished",
    "ReportOutput",
    "ReportReleased",
    "ReportStarted",
    "Start",
    "StartFailed",
    "Started",
    "State",
    "Stop",
    "TimedOut",
]

_TIMED_OUT = types_pb2.ATTEMPT_OUTCOME_TIMED_OUT


# -- the machine ---------------------------------------------------------------------------------------


class _Attempt:
    __slots__ = (
        "adopted",
        "agent_type",
        "assignment",
        "follower",
        "forced",
        "id",
        "leader",
        "no_follower",
        "pending_stop",
        "release_asked",
        "silent",
        "state",
        "timeout_s",
        "withdrawing",
        "workflow_id",
    )

    def __init__(self, attempt_id: str, state: State, assignment: types_pb2.TaskAssignment | None) -> None:
        self.id = attempt_id
        self.state = state
        self.assignment = assignment
        self.agent_type = assignment.agent_type if assignment is not None else ""
        self.timeout_s = assignment.timeout_s if assignment is not None else 0.0
        self.adopted = assignment is None
        self.silent = False  # killed silently: report nothing more, forget at the end
        self.forced = False  # a forced Stop was issued (another one adds nothing)
        # A stop asked for while STARTING (no run to ask yet): issued as soon as it has started.
        self.pending_stop: Stop | None = None
        self.workflow_id = assignment.workflow_id if assignment is not None else ""
        # Staging: the attempt staged behind this one, the one this one is staged behind, whether
        # this one's worker refused a follower, and whether a Withdraw of this one is under way.
        self.follower: _Attempt | None = None
        self.leader: _Attempt | None = None
        self.no_follower = False
        self.withdrawing = False
        # The controller asked for it back (a move of queued work) while it was staged: given
        # back if its withdrawal succeeds, left to run if its worker had started it.
        self.release_asked = False


_Handler = Callable[["AttemptMachine", _Attempt, Event], list[Instruction]]

_ACTIVE = (State.STARTING, State.RUNNING, State.STOPPING)


class AttemptMachine:
    """The slots, the queue (the controller's order) and the state of every attempt held by this agent."""

    def __init__(self, slots: int, kill_grace_s: float, stage_type: str = "") -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        #: SIGTERM -> SIGKILL grace of silent kills (the controller's Welcome sets it).
        self.kill_grace_s = kill_grace_s
        self.accepting = True
        self._attempts: dict[str, _Attempt] = {}
        # Waiting for a slot, in the controller's order (agent/slotqueue.py), then arrival.
        self._queue: SlotQueue[_Attempt] = SlotQueue()
        self._active = 0  # STARTING + RUNNING + STOPPING: the slots in use
        #: The agent type whose attempts may be staged behind a running one ("": none).
        self.stage_type = stage_type
        # RUNNING attempts of stage_type that may take a follower, by workflow (insertion order:
        # the oldest first, the likeliest to end first), and the STAGED attempts.
        self._leaders: dict[str, dict[str, _Attempt]] = {}
        self._staged: dict[str, _Attempt] = {}

    # -- queries ------------------------------------------------------------------------------------

    @property
    def active_count(self) -> int:
        """Attempts holding a slot (starting, running or stopping)."""
        return self._active

    @property
    def queued_count(self) -> int:
        """Attempts waiting for a slot (staged ones included)."""
        return len(self._queue) + len(self._staged)

    def state(self, attempt_id: str) -> State | None:
        """The attempt's state, None once forgotten (or never known)."""
        attempt = self._attempts.get(attempt_id)
        return attempt.state if attempt is not None else None

    def active_ids(self) -> list[str]:
        """Attempts held and not finished: the active ones (oldest first), then the queue in order."""
        active = [a.id for a in self._attempts.values() if a.state in _ACTIVE]
        return active + [a.id for a in self._staged.values()] + [a.id for a in self._queue]

    # -- the one way in -------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Instruction]:
        """Apply one event; returns what the shell must do, in order."""
        kind = type(event)
        whole = _MACHINE_EVENTS.get(kind)
        if whole is not None:
            return whole(self, event)
        attempt_id: str = event.attempt_id  # type: ignore[union-attr]
        attempt = self._attempts.get(attempt_id)
        if attempt is None:
            if kind in _CONTROLLER_EVENTS:
                # The controller may name attempts this agent already forgot (or never had).
                return []
            raise InvalidTransition(f"{kind.__name__} for unknown attempt {attempt_id!r}")
        handler = TRANSITIONS.get((attempt.state, kind))
        if handler is None:
            raise InvalidTransition(f"{kind.__name__} of attempt {attempt_id!r} in state {attempt.state.name}")
        return handler(self, attempt, event)

    # -- machine-level events -------------------------------------------------------------------

    def _assigned(self, event: Event) -> list[Instruction]:
        assert isinstance(event, Assigned)
        assignment = event.assignment
        attempt_id = assignment.attempt_id
        if attempt_id in self._attempts:
            return []  # a repeated assignment (a re-sent batch): already held
        attempt = _Attempt(attempt_id, State.QUEUED, assignment)
        self._attempts[attempt_id] = attempt
        if not self.accepting:
            # Draining: give it back at once, the controller requeues it elsewhere.
            attempt.state = State.DONE
            return [ReportFinished(attempt_id, AttemptResult.stopped(StopReason.DRAINED, "not started"))]
        self._queue.push(attempt, tuple(assignment.queue_order))
        # Acknowledged at once (the controller takes back assignments it hears nothing of).
        out: list[Instruction] = [ReportAccepted(attempt_id)]
        self._pump(out)
        return out

    def _drain(self, event: Event | None = None) -> list[Instruction]:
        self.accepting = False
        out: list[Instruction] = []
        queue = self._queue
        while queue:
            attempt = queue.pop()
            attempt.state = State.DONE
            out.append(ReportFinished(attempt.id, AttemptResult.stopped(StopReason.DRAINED, "not started")))
        for attempt in list(self._staged.values()):
            self._withdraw(attempt, out)  # given back too when it had not started (Unstaged)
        return out

    def _kill_all(self, event: Event) -> list[Instruction]:
        assert isinstance(event, KillAll)
        out = self._drain()
        for attempt in list(self._attempts.values()):
            if attempt.state is State.STARTING or attempt.state is State.STAGED:
                _hold_stop(attempt, StopReason.DRAINED, event.force, event.grace_s)
            elif attempt.state is State.RUNNING or (attempt.state is State.STOPPING and event.force):
                out.extend(self._stop(attempt, StopReason.DRAINED, event.force, event.grace_s))
        return out

    def _adopted(self, event: Event) -> list[Instruction]:
        assert isinstance(event, Adopted)
        attempt_id = event.attempt_id
        if attempt_id in self._attempts:
            raise InvalidTransition(f"Adopted for attempt {attempt_id!r} already held")
        if (event.pid is None) == (event.result is None):
            raise InvalidTransition(f"Adopted {attempt_id!r} needs exactly one of pid (running) and result")
        if event.result is not None:
            self._attempts[attempt_id] = _Attempt(attempt_id, State.DONE, None)
            return [ReportFinished(attempt_id, event.result)]
        assert event.pid is not None
        self._attempts[attempt_id] = _Attempt(attempt_id, State.RUNNING, None)
        # Its slot is taken even past ``slots`` (a restart with fewer slots): nothing new starts
        # until enough have ended. Started again: harmless for a running attempt, and it was
        # maybe never delivered before the agent died.
        self._active += 1
        return [ReportStarted(attempt_id, event.pid)]

    # -- helpers ----------------------------------------------------------------------------------------

    def _pump(self, out: list[Instruction]) -> None:
        queue = self._queue
        while queue and self._active < self.slots:
            attempt = queue.pop()
            attempt.state = State.STARTING
            self._active += 1
            assert attempt.assignment is not None
            out.append(Start(attempt.id, attempt.assignment))
        if not self.stage_type or not self.accepting:
            return
        if queue:
            self._stage(out)
        elif self._staged and self._active < self.slots:
            # A slot is free and nothing waits for one: a staged attempt runs there rather than
            # wait for its leader (a short task staged behind a long one).
            free = self.slots - self._active
            for attempt in list(self._staged.values()):
                if free <= 0:
                    break
                if not attempt.withdrawing:
                    self._withdraw(attempt, out)
                    free -= 1

    def _stage(self, out: list[Instruction]) -> None:
        """Stage the head of the queue (in order) behind running attempts of its workflow."""
        queue = self._queue
        while queue:
            head = queue.peek()
            if head.agent_type != self.stage_type:
                return
            leaders = self._leaders.get(head.workflow_id)
            if not leaders:
                return
            leader = leaders.pop(next(iter(leaders)))
            if not leaders:
                del self._leaders[head.workflow_id]
            queue.pop()
            head.state = State.STAGED
            head.leader, leader.follower = leader, head
            self._staged[head.id] = head
            assert head.assignment is not None
            out.append(Stage(head.id, leader.id, head.assignment))

    def _open_leader(self, attempt: _Attempt) -> None:
        """Let a running attempt take a follower, if it may."""
        if (
            attempt.agent_type == self.stage_type
            and self.stage_type
            and attempt.state is State.RUNNING
            and attempt.follower is None
            and not (attempt.silent or attempt.no_follower or attempt.forced)
        ):
            self._leaders.setdefault(attempt.workflow_id, {})[attempt.id] = attempt

    def _close_leader(self, attempt: _Attempt) -> None:
        leaders = self._leaders.get(attempt.workflow_id)
        if leaders is not None and leaders.pop(attempt.id, None) is not None and not leaders:
            del self._leaders[attempt.workflow_id]

    def _withdraw(self, attempt: _Attempt, out: list[Instruction]) -> None:
        if not attempt.withdrawing:
            attempt.withdrawing = True
            out.append(Withdraw(attempt.id))

    def _detach(self, attempt: _Attempt) -> _Attempt | None:
        """A staged attempt leaves its leader (withdrawn or refused); the leader, or None."""
        del self._staged[attempt.id]
        leader, attempt.leader = attempt.leader, None
        attempt.withdrawing = False
        if leader is not None and leader.follower is attempt:
            leader.follower = None
        return leader

    def _stop(self, attempt: _Attempt, reason: StopReason, force: bool, grace_s: float) -> list[Instruction]:
        attempt.state = State.STOPPING
        attempt.forced = attempt.forced or force
        self._close_leader(attempt)
        out: list[Instruction] = []
        if attempt.follower is not None:
            # First: a follower already started (its leader answered) makes the stop moot.
            self._withdraw(attempt.follower, out)
        out.append(Stop(attempt.id, reason, force, grace_s))
        return out

    def _end(self, attempt: _Attempt, result: AttemptResult) -> list[Instruction]:
        """The run is over: report it (or forget it, when killed silently) and fill the slot."""
        self._active -= 1
        self._close_leader(attempt)
        follower, attempt.follower = attempt.follower, None
        out: list[Instruction]
        if attempt.silent:
            del self._attempts[attempt.id]
            out = [Forget(attempt.id, attempt.agent_type, attempt.adopted)]
        else:
            attempt.state = State.DONE
            if result.outcome == _TIMED_OUT and attempt.timeout_s > 0:
                result = dataclasses.replace(result, error=f"timed out after {attempt.timeout_s:g} s")
            out = [ReportFinished(attempt.id, result)]
        attempt.pending_stop = None
        if follower is not None:
            # Started in the leader's worker (or about to: the worker has answered the leader): it
            # takes the leader's slot.
            self._detach(follower)
            follower.release_asked = False  # it started before its withdrawal: it stays here
            follower.state = State.STARTING
            self._active += 1
            assert follower.assignment is not None
            out.append(Start(follower.id, follower.assignment))
        self._pump(out)
        return out

    def _forget(self, attempt: _Attempt) -> list[Instruction]:
        del self._attempts[attempt.id]
        return [Forget(attempt.id, attempt.agent_type, attempt.adopted)]

    def _dequeue(self, attempt: _Attempt) -> None:
        self._queue.remove(attempt)
        del self._attempts[attempt.id]

    # -- transitions (one method per row group; the table below is the whole truth) --------------------

    def _ignore(self, attempt: _Attempt, event: Event) -> list[Instruction]:
        return []

    def _release(self, attempt: _Attempt, event: Event) -> list[Instruction]:
        # Never started, so safe to run elsewhere; a queued attempt has no folder to remove.
        self._dequeue(attempt)
        return [ReportReleased(attempt.id)]

    def _drop_queued(self, attempt: _Attempt, event: Event) -> list[Instruction]:
        self._dequeue(attempt)
        return []

    def _cancel_starting(self, attempt: _Attempt, event: Event) -> list[Instruction]:
        assert isinstance(event, Cancel)
        if not event.release_only:
            _hold_stop(attempt, StopReason.CANCELLED, event.force, event.grace_s)
        # release_only: it may already run, so it cannot be given back: it stays.
        return []

    def _kill_starting(self, attempt: _Attempt, event: Event) -> list[Instruction]:
        attempt.silent = True
        _hold_stop(attempt, StopReason.KILLED, False, self.kill_grace_s)
        return []

    def _started(self, attempt: _Attempt, event: Event) -> list[Instruction]:
        assert isinstance(event, Started)
        attempt.state = State.RUNNING
        out: list[Instruction] = [] if attempt.silent else [ReportStarted(attempt.id, event.pid)]
        held = attempt.pending_stop
        if held is not None:
            attempt.pending_stop = None
            out.extend(self._stop(attempt, held.reason, held.force, held.grace_s))
        elif self.stage_type:
            self._open_leader(attempt)
            if self._queue and self.accepting:
                self._stage(out)
        return out

    def _start_failed(self, attempt: _Attempt, event: Event) -> list[Instruction]:
        assert isinstance(event, StartFailed)
        return self._end(attempt, event.result)

    def _ended(self, attempt: _Attempt, event: Event) -> list[Instruction]:
        assert isinstance(event, Ended)
        return self._end(attempt, event.result)

    def _output(self, attempt: _Attempt, event: Event) -> list[Instruction]:
        assert isinstance(event, GotOutput)
        if attempt.silent:
            return []
        return [ReportOutput(attempt.id, event.stdout, event.stderr, event.truncated)]

    def _cancel_running(self, attempt: _Attempt, event: Event) -> list[Instruction]:
        assert isinstance(event, Cancel)
        if event.release_only:
            return []  # a move of queued work: running work stays
        return self._stop(attempt, StopReason.CANCELLED, event.force, event.grace_s)

    def _kill_running(self, attempt: _Attempt, event: Event) -> list[Instruction]:
        attempt.silent = True
        return self._stop(attempt, StopReason.KILLED, False, self.kill_grace_s)

    def _timed_out(self, attempt: _Attempt, event: Event) -> list[Instruction]:
        assert isinstance(event, TimedOut)
        if attempt.forced or (attempt.state is State.STOPPING and not event.force):
            return []  # a stop that is already under way is only ever escalated
        return self._stop(attempt, StopReason.TIMED_OUT, event.force, event.grace_s)

    def _cancel_stopping(self, attempt: _Attempt, event: Event) -> list[Instruction]:
        assert isinstance(event, Cancel)
        if event.release_only or not event.force or attempt.forced:
            return []  # already stopping; only a first forced cancel adds something (SIGKILL now)
        return self._stop(attempt, StopReason.CANCELLED, True, event.grace_s)

    def _kill_stopping(self, attempt: _Attempt, event: Event) -> list[Instruction]:
        attempt.silent = True  # already being stopped: only its report goes
        return []

    def _acked(self, attempt: _Attempt, event: Event) -> list[Instruction]:
        return self._forget(attempt)

    def _cancel_staged(self, attempt: _Attempt, event: Event) -> list[Instruction]:
        assert isinstance(event, Cancel)
        if event.release_only:
            # Not started yet: withdrawn, it is given back (Unstaged); started meanwhile, it stays
            # and runs, and its Started tells the controller so. Never stopped.
            attempt.release_asked = True
        else:
            _hold_stop(attempt, StopReason.CANCELLED, event.force, event.grace_s)
        out: list[Instruction] = []
        self._withdraw(attempt, out)  # released if it had not started; else as decided above
        return out

    def _kill_staged(self, attempt: _Attempt, event: Event) -> list[Instruction]:
        attempt.silent = True
        _hold_stop(attempt, StopReason.KILLED, False, self.kill_grace_s)
        out: list[Instruction] = []
        self._withdraw(attempt, out)
        return out

    def _unstaged(self, attempt: _Attempt, event: Event) -> list[Instruction]:
        """Withdrawn before it started: as a queued attempt would be (queued again, released, drained)."""
        leader = self._detach(attempt)
        held, attempt.pending_stop = attempt.pending_stop, None
        if attempt.silent:
            del self._attempts[attempt.id]
            return []
        if (held is not None and held.reason is StopReason.DRAINED) or (held is None and not self.accepting):
            attempt.state = State.DONE
            return [ReportFinished(attempt.id, AttemptResult.stopped(StopReason.DRAINED, "not started"))]
        if held is not None or attempt.release_asked:
            del self._attempts[attempt.id]
            return [ReportReleased(attempt.id)]
        attempt.state = State.QUEUED
        assert attempt.assignment is not None
        self._queue.push(attempt, tuple(attempt.assignment.queue_order))
        if leader is not None:
            self._open_leader(leader)
        out: list[Instruction] = []
        self._pump(out)
        return out

    def _stage_refused(self, attempt: _Attempt, event: Event) -> list[Instruction]:
        leader = self._detach(attempt)
        if leader is not None:
            leader.no_follower = True  # its worker takes no follower: try the others
        attempt.state = State.QUEUED
        assert attempt.assignment is not None
        self._queue.push(attempt, tuple(attempt.assignment.queue_order))
        out: list[Instruction] = []
        self._pump(out)
        return out


def _hold_stop(attempt: _Attempt, reason: StopReason, force: bool, grace_s: float) -> None:
    """Remember a stop for an attempt still starting; the first reason stays, force only escalates."""
    held = attempt.pending_stop
    if held is None:
        attempt.pending_stop = Stop(attempt.id, reason, force, grace_s)
    elif force and not held.force:
        attempt.pending_stop = Stop(attempt.id, held.reason, True, grace_s)


_M = AttemptMachine
_Q, _S, _R, _X, _D = State.QUEUED, State.STARTING, State.RUNNING, State.STOPPING, State.DONE
_G = State.STAGED

#: Every transition of one attempt: (state, event type) -> handler. A pair missing here raises.
TRANSITIONS: dict[tuple[State, type], _Handler] = {
    # QUEUED: waiting for a slot
    (_Q, Cancel): _M._release,
    (_Q, KillSilently): _M._drop_queued,
    (_Q, Acked): _M._ignore,  # nothing to acknowledge yet
    # STAGED: in a running attempt's worker, to start when that one answers
    (_G, Cancel): _M._cancel_staged,
    (_G, KillSilently): _M._kill_staged,
    (_G, Acked): _M._ignore,
    (_G, Unstaged): _M._unstaged,
    (_G, StageRefused): _M._stage_refused,
    # STARTING: the runner was asked to start it
    (_S, Started): _M._started,
    (_S, StartFailed): _M._start_failed,
    (_S, Cancel): _M._cancel_starting,
    (_S, KillSilently): _M._kill_starting,
    (_S, Acked): _M._ignore,
    # RUNNING
    (_R, GotOutput): _M._output,
    (_R, Ended): _M._ended,
    (_R, Cancel): _M._cancel_running,
    (_R, KillSilently): _M._kill_running,
    (_R, TimedOut): _M._timed_out,
    (_R, Acked): _M._ignore,
    # STOPPING: a Stop was issued, the run has not ended yet
    (_X, GotOutput): _M._output,
    (_X, Ended): _M._ended,
    (_X, Cancel): _M._cancel_stopping,
    (_X, KillSilently): _M._kill_stopping,
    (_X, TimedOut): _M._timed_out,
    (_X, Acked): _M._ignore,
    # DONE: reported, waiting for the Ack
    (_D, Acked): _M._acked,
    (_D, KillSilently): _M._acked,  # reassigned: its report is dropped too, forget it
    (_D, Cancel): _M._ignore,  # its Finished report is on its way
}

# Events about the whole machine rather than one attempt it holds.
_MACHINE_EVENTS: dict[type, Callable[[AttemptMachine, Event], list[Instruction]]] = {
    Assigned: _M._assigned,
    Drain: _M._drain,
    KillAll: _M._kill_all,
    Adopted: _M._adopted,
}

# Events from the controller, which may name attempts this agent does not hold (any more).
_CONTROLLER_EVENTS: frozenset[type] = frozenset({Cancel, KillSilently, Acked})
