"""The real scheduling core on a virtual clock, with simulated agents.

:class:`Simulator` owns a :class:`~corral.controller.core.machine.Machine` and drives it exactly as
the runtime does — ``handle(event, now)`` for each event, ``tick(now)``, ``take_changes()``,
``take_actions()`` — but time is a number it moves itself: after every step it jumps to the next
thing that happens (a simulated task ending, or ``machine.next_timer()``). Nothing sleeps, so a
workflow of thousands of tasks replays in milliseconds to a second.

The simulated agents behave like real ones with zero overhead: they say Hello, run what they are
assigned on their slots (attempts beyond their slots wait in their queue, in the controller's
order, as the core's prefetch and lookahead expect), report Started and Finished in one batch per
agent per instant, give back prefetched attempts a release-only Cancel asks for (work moved to an
idle agent), stop attempts a Cancel kills, time out attempts that outlive the task's ``timeout``,
and heartbeat so the core never declares them lost however far the clock jumps. Changes are
discarded: there is no store.

A task runs for ``duration(task)`` if a callback is given, else its ``estimated_duration``, else
``default_duration_s``.
"""

from __future__ import annotations

import dataclasses
import graphlib
import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from corral.agent.slotqueue import SlotQueue
from corral.controller.core import events as ev
from corral.controller.core.machine import Machine, MachineConfig
from corral.controller.core.model import AttemptState, Task, TaskState, Workflow
from corral.controller.errors import CorralError, InvalidArgument
from corral.controller.rpc.submission import Admitted, admit_workflow
from corral.controller.rpc.wire_spec import spec_to_proto
from corral.controller.sim.fleet import Fleet
from corral.controller.spec import Limits, WorkflowSpec
from corral.controller.store.base import ChangeBatch

__all__ = [
    "MAX_LATENCY_S",
    "MAX_STEPS_PER_TASK",
    "MAX_VIRTUAL_S",
    "MAX_WORKFLOWS",
    "DurationFn",
    "FailFn",
    "SimResult",
    "SimulationError",
    "Simulator",
    "Span",
]

#: Seconds a simulated task runs: called once per attempt, with the task as the core sees it
#: (``task.attempts`` is that attempt's number).
DurationFn = Callable[[Task], float]
#: Whether a simulated attempt fails (exit code 1) at the end of its run; same argument.
FailFn = Callable[[Task], bool]

START = 1000.0  # the virtual clock at construction: past boot (0.0) and any start-up grace of the core
MAX_VIRTUAL_S = 10 * 365 * 86_400.0  # a workflow longer than ten years of virtual time is a mistake
# Beyond a second each way the core's assignment lease (3 s) would take work back from healthy agents.
MAX_LATENCY_S = 1.0
MAX_WORKFLOWS = 1000  # submitted together by one run_all
MAX_STEPS_PER_TASK = 64  # steps (handle + tick) per task before the run is declared stuck in a loop
_STALL_STEPS = 3  # ticks at one instant that change nothing before the clock skips a stale timer


class SimulationError(CorralError):
    """The simulation could not run to the end (bad durations, a loop, an agent declared lost)."""


@dataclass(frozen=True, slots=True)
class Span:
    """One attempt on one slot of one agent, in seconds from the submission."""

    agent: str
    slot: int
    task: str
    attempt: int
    start: float
    end: float
    outcome: str  # succeeded, failed, timed_out, cancelled
    workflow: str = ""  # its workflow's name (in results)

    def to_dict(self) -> dict[str, object]:
        return {
            "workflow": self.workflow,
            "agent": self.agent,
            "slot": self.slot,
            "task": self.task,
            "attempt": self.attempt,
            "start_s": round(self.start, 6),
            "end_s": round(self.end, 6),
            "outcome": self.outcome,
        }


@dataclass(frozen=True, slots=True)
class SimResult:
    """What one simulated run did. Times are virtual seconds from the submission."""

    workflow: str
    state: str  # the workflow's final state, or "stuck" when tasks can never run on this fleet
    fleet: Fleet
    makespan: float
    critical_path: float  # of the durations the tasks ran (first attempts), by a longest-path pass
    total_work: float
    tasks: int
    defaulted: int  # tasks that had neither a duration callback nor an estimate: ran the default
    spans: tuple[Span, ...]
    steps: int  # handle + tick rounds driven through the core
    stuck: tuple[tuple[str, str], ...] = ()  # (task, the core's explanation) when state is "stuck"

    @property
    def bound(self) -> float:
        """max(critical path, total work / slots): no schedule on this fleet can beat it."""
        return max(self.critical_path, self.total_work / self.fleet.total_slots)

    @property
    def ratio(self) -> float:
        """Makespan over the bound (1.0 is optimal; nan when the bound is 0)."""
        return self.makespan / self.bound if self.bound > 0 else math.nan

    def agent_spans(self) -> dict[str, list[Span]]:
        """Spans by agent (every agent present, idle ones with none), each in start order."""
        by_agent: dict[str, list[Span]] = {name: [] for name in self.fleet.names}
        for span in self.spans:
            by_agent[span.agent].append(span)
        return by_agent


@dataclass
class _Run:
    """An attempt a simulated agent holds: queued (``start`` None) or running on ``slot``."""

    assignment: ev.Assignment
    slot: int = -1
    start: float | None = None
    end: float = 0.0
    outcome: AttemptState = AttemptState.SUCCEEDED

    @property
    def id(self) -> str:
        return self.assignment.attempt_id


@dataclass
class _Agent:
    """One simulated agent: its slots, its queue (the controller's order, as a real agent keeps
    it: agent/slotqueue.py), and reports not yet delivered."""

    name: str
    slots: int
    epoch: int = 0
    queue: SlotQueue[_Run] = field(default_factory=SlotQueue)  # attempts not started
    held: dict[str, _Run] = field(default_factory=dict)  # every attempt it holds, queued or running
    free: list[int] = field(default_factory=list)  # free slot numbers (a heap: lowest first)
    outbox: deque[tuple[float, ev.Report]] = field(default_factory=deque)  # (delivery time, report)

    def __post_init__(self) -> None:
        self.free = list(range(self.slots))


class Simulator:
    """A controller core and a fleet of simulated agents on one virtual clock.

    Runs are sequential on the same core, so what the core learns from one run (durations of a
    recurring workflow, agents' task rates) applies to the next: run a workflow twice to see the
    second run's schedule.
    """

    def __init__(
        self,
        fleet: Fleet,
        *,
        config: MachineConfig | None = None,
        default_duration_s: float = 1.0,
        seed: int = 0,
        latency_s: float = 0.0,
        check: Callable[[Machine], None] | None = None,
        commit: Callable[[ChangeBatch], None] | None = None,
    ) -> None:
        """``latency_s``: how long each message between the core and an agent takes, each way
        (assignments and cancels out, reports back); 0 is a zero-overhead controller.
        ``check(machine)`` runs after every step (e.g. ``Machine.validate`` in property tests);
        ``commit(changes)`` receives every step's changes (e.g. a store's commit), else dropped."""
        if not (math.isfinite(latency_s) and 0 <= latency_s <= MAX_LATENCY_S):
            raise InvalidArgument.field("latency", f"must be between 0 and {MAX_LATENCY_S:g} seconds, got {latency_s}")
        if not (math.isfinite(default_duration_s) and 0 <= default_duration_s <= MAX_VIRTUAL_S):
            raise InvalidArgument.field(
                "default_duration", f"must be between 0 and {MAX_VIRTUAL_S:g} seconds, got {default_duration_s}"
            )
        self.fleet = fleet
        self.config = config or MachineConfig()
        self.default_duration_s = default_duration_s
        self.latency_s = latency_s
        self._inflight: deque[tuple[float, ev.Assign | ev.CancelAttempts]] = deque()  # (arrival, message)
        counter = itertools.count(1)
        self._new_id: Callable[[], str] = lambda: f"{next(counter):08d}"
        self.machine = Machine(self.config, new_id=self._new_id, rng=random.Random(seed), boot_time=0.0)
        self.now = START
        self.steps = 0
        self._agents = {name: _Agent(name, fleet.slots) for name in fleet.names}
        self._ends: list[tuple[float, int, str, str]] = []  # (end, seq, agent, attempt id)
        self._seq = itertools.count()
        self._last_beat = self.now
        self._spans: list[tuple[str, Span]] = []  # (workflow id, span) of every attempt that ended
        self._length: DurationFn = lambda task: self.default_duration_s  # set by each run
        self._fails: FailFn = lambda task: False
        self._check = check
        self._commit = commit
        inventory = fleet.inventory()
        for agent in self._agents.values():
            hello = ev.AgentHello(
                agent.name,
                name=agent.name,
                hostname="simulated",
                agent_types=fleet.agent_types,
                labels=dict(fleet.labels),
                inventory=inventory,
                incarnation="sim",
            )
            welcome = self._step([hello])[0]
            assert isinstance(welcome, ev.Welcome)
            agent.epoch = welcome.session_epoch

    # --- runs -----------------------------------------------------------------------------------

    def run(self, spec: WorkflowSpec, duration: DurationFn | None = None, fails: FailFn | None = None) -> SimResult:
        """Submit ``spec`` (started at once) and run until it ends; InvalidArgument for a bad spec.

        ``fails(task)`` says whether an attempt fails (exit code 1, retryable) at the end of its run.
        """
        return self.run_all([spec], duration, fails)[0]

    def run_all(
        self, specs: Sequence[WorkflowSpec], duration: DurationFn | None = None, fails: FailFn | None = None
    ) -> list[SimResult]:
        """Submit every spec at one instant, in order, all started, and run until every one ends.

        Every spec is admitted before any is submitted: one bad spec raises InvalidArgument and
        nothing runs. One result per spec, in order.
        """
        if not 1 <= len(specs) <= MAX_WORKFLOWS:
            raise InvalidArgument.field("specs", f"between 1 and {MAX_WORKFLOWS} workflows at once, got {len(specs)}")
        admitted = [admit_workflow(spec_to_proto(spec), self._new_id) for spec in specs]
        count = sum(len(a.tasks) for a in admitted)
        if count > Limits.max_tasks:
            raise InvalidArgument.field("specs", f"{count} tasks in all, over max_tasks={Limits.max_tasks}")
        for one in admitted:
            _renumber(one)
        ran: dict[str, float] = {}  # task id -> duration of its first attempt
        defaulted: set[str] = set()  # task ids that ran the default duration

        def length(task: Task) -> float:
            if duration is not None:
                seconds = duration(task)
            elif task.estimated_duration_s > 0:
                seconds = task.estimated_duration_s
            else:
                seconds = self.default_duration_s
                defaulted.add(task.id)
            if not (isinstance(seconds, int | float) and math.isfinite(seconds) and 0 <= seconds <= MAX_VIRTUAL_S):
                raise SimulationError(
                    f"task {task.name}: duration must be between 0 and {MAX_VIRTUAL_S:g} s, got {seconds!r}"
                )
            ran.setdefault(task.id, float(seconds))
            return float(seconds)

        self._length = length
        self._fails = fails or (lambda task: False)
        first_span = len(self._spans)
        submitted, steps_before = self.now, self.steps
        # The workflow records become the core's own: their states are the core's.
        workflows = [one.workflow for one in admitted]
        self._step([ev.SubmitWorkflow(one.workflow, one.tasks, start=True) for one in admitted])
        stuck = self._drive(workflows, submitted, MAX_STEPS_PER_TASK * count + 1000)
        spans: dict[str, list[Span]] = {w.id: [] for w in workflows}
        for workflow_id, span in self._spans[first_span:]:
            spans[workflow_id].append(span)
        results = []
        for spec, one in zip(specs, admitted, strict=True):
            workflow = one.workflow
            end = workflow.finished_at if workflow.finished_at is not None else self.now
            critical_path, total = _bound_parts(one.tasks, ran)
            mine = stuck.get(workflow.id, ())
            results.append(
                SimResult(
                    workflow=spec.name,
                    state="stuck" if mine else str(workflow.state),
                    fleet=self.fleet,
                    makespan=max(0.0, end - submitted),
                    critical_path=critical_path,
                    total_work=total,
                    tasks=len(one.tasks),
                    defaulted=sum(1 for t in one.tasks if t.id in defaulted),
                    spans=tuple(
                        dataclasses.replace(s, start=s.start - submitted, end=s.end - submitted, workflow=spec.name)
                        for s in sorted(spans[workflow.id], key=lambda s: (s.start, s.agent, s.slot))
                    ),
                    steps=self.steps - steps_before,
                    stuck=mine,
                )
            )
        return results

    def _drive(
        self, workflows: list[Workflow], submitted: float, budget: int
    ) -> dict[str, tuple[tuple[str, str], ...]]:
        """Move the clock and the agents until every workflow ended; the stuck ones' reasons."""
        steps_before = self.steps
        stalled = 0
        while not all(w.state.terminal for w in workflows):
            if self.steps - steps_before > budget:
                raise SimulationError(f"the workflows did not end within {budget} steps: a loop in the core?")
            reports = self._reports()
            if reports:
                self._step(reports)
                stalled = 0
                continue
            upcoming = self._next_time()
            if upcoming is None:
                return {w.id: self._explain_stuck(w.task_ids) for w in workflows if not w.state.terminal}
            if upcoming <= self.now and not self._ends_due() and not self._arrivals_due():
                # A timer due now: tick again at this instant. One that stays due changes nothing
                # here (a stale entry): let time pass rather than spin on it.
                stalled += 1
                if stalled >= _STALL_STEPS:
                    later = self.now + self.config.heartbeat_interval_s
                    arrival = self._next_arrival()
                    upcoming = later if arrival is None else min(arrival, later)
            if upcoming > self.now:
                stalled = 0
                if upcoming - submitted > MAX_VIRTUAL_S:
                    raise SimulationError(f"the workflows still run after {MAX_VIRTUAL_S:g} virtual seconds")
                self.now = upcoming
            self._finish_due()
            self._deliver()
            self._step(self._heartbeats() + self._reports())
        return {}

    # --- driving the core -----------------------------------------------------------------------

    def _step(self, events: list[ev.Event]) -> list[object]:
        """Handle events at ``now``, tick, commit or drop the changes, carry out the actions."""
        self.steps += 1
        results = [self.machine.handle(event, self.now) for event in events]
        self.machine.tick(self.now)
        changes = self.machine.take_changes()
        if self._commit is not None and changes:
            self._commit(changes)
        for action in self.machine.take_actions():
            self._act(action)
        self._deliver()
        if self._check is not None:
            self._check(self.machine)
        return results

    def _act(self, action: ev.Action) -> None:
        if isinstance(action, ev.Assign | ev.CancelAttempts):
            # On its way to the agent: it arrives ``latency_s`` from now, in order.
            self._inflight.append((self.now + self.latency_s, action))
        elif isinstance(action, ev.Disconnect):
            raise SimulationError(
                f"the core declared agent {action.agent_id} lost at virtual time {self.now - START:.3f} s "
                "although it heartbeats: a bug in the simulator or the core"
            )
        # Welcome, Ack, HeartbeatAck, Publish, WorkflowDone, DrainOrder: nothing for a simulated agent to do.

    def _deliver(self) -> None:
        """Agents receive the assignments and cancels that have arrived, then fill free slots."""
        while self._inflight and self._inflight[0][0] <= self.now:
            self._receive(self._inflight.popleft()[1])
        self._start_queued()

    def _receive(self, action: ev.Assign | ev.CancelAttempts) -> None:
        if isinstance(action, ev.Assign):
            agent = self._agents[action.agent_id]
            for assignment in action.assignments:
                run = agent.held[assignment.attempt_id] = _Run(assignment)
                agent.queue.push(run, assignment.order)
                # Held (queued or about to start): acknowledged at once, as a real agent does.
                self._send(agent, ev.AttemptAccepted(agent.name, assignment.attempt_id))
        else:
            self._cancel(self._agents[action.agent_id], action)

    def _cancel(self, agent: _Agent, action: ev.CancelAttempts) -> None:
        for attempt_id in action.attempt_ids:
            held = agent.held.get(attempt_id)
            if held is None:
                continue
            if held.start is None:
                agent.queue.remove(held)
                del agent.held[attempt_id]
                if action.release_only:
                    self._send(agent, ev.AttemptReleased(agent.name, attempt_id))
                else:
                    self._send(agent, self._finished(agent, attempt_id, AttemptState.CANCELLED, "cancelled"))
            elif not action.release_only:
                # Killed while running: it ends now (the kill grace is not simulated).
                held.end, held.outcome = self.now, AttemptState.CANCELLED
                self._end(agent, attempt_id)
            # A started attempt asked back release-only keeps running: its Started report says so.

    def _start_queued(self) -> None:
        for agent in self._agents.values():
            while agent.queue and agent.free:
                run = agent.queue.pop()
                attempt_id = run.id
                run.slot = heapq.heappop(agent.free)
                run.start = self.now
                task = run.assignment.task
                seconds = self._length(task)
                if task.timeout_s is not None and task.timeout_s > 0 and seconds > task.timeout_s:
                    run.end, run.outcome = self.now + task.timeout_s, AttemptState.TIMED_OUT
                else:
                    run.end = self.now + seconds
                    if self._fails(task):
                        run.outcome = AttemptState.FAILED
                heapq.heappush(self._ends, (run.end, next(self._seq), agent.name, attempt_id))
                self._send(agent, ev.AttemptStarted(agent.name, attempt_id, at=self.now))

    def _ends_due(self) -> bool:
        return bool(self._ends) and self._ends[0][0] <= self.now

    def _arrivals_due(self) -> bool:
        return bool(self._inflight) and self._inflight[0][0] <= self.now

    def _finish_due(self) -> None:
        """End every running attempt whose end is now (their Finished reports go out next step)."""
        while self._ends and self._ends[0][0] <= self.now:
            _, _, name, attempt_id = heapq.heappop(self._ends)
            agent = self._agents[name]
            if attempt_id in agent.held:  # else killed earlier
                self._end(agent, attempt_id)

    def _end(self, agent: _Agent, attempt_id: str) -> None:
        run = agent.held.pop(attempt_id)
        assert run.start is not None
        heapq.heappush(agent.free, run.slot)
        task = run.assignment.task
        span = Span(
            agent.name, run.slot, task.name, run.assignment.attempt_number, run.start, run.end, str(run.outcome)
        )
        self._spans.append((task.workflow_id, span))
        error = ""
        if run.outcome is AttemptState.TIMED_OUT:
            error = f"timed out after {task.timeout_s:g} s"
        elif run.outcome is AttemptState.FAILED:
            error = "exit code 1 (simulated failure)"
        elif run.outcome is AttemptState.CANCELLED:
            error = "cancelled"
        self._send(agent, self._finished(agent, attempt_id, run.outcome, error, at=run.end))

    def _finished(
        self, agent: _Agent, attempt_id: str, outcome: AttemptState, error: str, at: float | None = None
    ) -> ev.AttemptFinished:
        ok = outcome is AttemptState.SUCCEEDED
        return ev.AttemptFinished(
            agent.name,
            attempt_id,
            outcome,
            exit_code=0 if ok else (1 if outcome is AttemptState.FAILED else None),
            result=b"null" if ok else None,
            error=error,
            retryable=True,
            session_epoch=agent.epoch,
            at=self.now if at is None else at,
        )

    def _send(self, agent: _Agent, report: ev.Report) -> None:
        """A report on its way to the controller: it arrives ``latency_s`` from now."""
        agent.outbox.append((self.now + self.latency_s, report))

    def _reports(self) -> list[ev.Event]:
        """Every agent's reports that have arrived, one batch per agent (as real agents send them)."""
        batches: list[ev.Event] = []
        for agent in self._agents.values():
            outbox = agent.outbox
            if outbox and outbox[0][0] <= self.now:
                arrived: list[ev.Report] = []
                while outbox and outbox[0][0] <= self.now:
                    arrived.append(outbox.popleft()[1])
                batches.append(ev.AgentReports(agent.name, agent.epoch, tuple(arrived)))
        return batches

    def _heartbeats(self) -> list[ev.Event]:
        """Heartbeats of every agent, when one is due: the core must never see an agent fall silent,
        however far the clock jumped (a heartbeat at the new instant comes before its tick)."""
        if self.now - self._last_beat < self.config.heartbeat_interval_s:
            return []
        self._last_beat = self.now
        beats = tuple(ev.AgentHeartbeat(a.name, a.epoch) for a in self._agents.values())
        return [ev.AgentHeartbeats(beats)]

    def _next_arrival(self) -> float | None:
        """When the simulated side next acts: an attempt ends, or a message arrives either way."""
        times = [self._ends[0][0]] if self._ends else []
        if self._inflight:
            times.append(self._inflight[0][0])
        times.extend(agent.outbox[0][0] for agent in self._agents.values() if agent.outbox)
        return min(times) if times else None

    def _next_time(self) -> float | None:
        """The next instant something happens: the simulated side acts, or a timer of the core is due."""
        candidates = [t for t in (self._next_arrival(), self.machine.next_timer()) if t is not None]
        return min(candidates) if candidates else None

    def _explain_stuck(self, task_ids: list[str]) -> tuple[tuple[str, str], ...]:
        """The core's own reason for every task that is ready but can never be placed here."""
        reasons: list[tuple[str, str]] = []
        for task_id in task_ids:
            task = self.machine.tasks[task_id]
            if task.state is TaskState.READY:
                reasons.append((task.name, self.machine.explain(task_id, self.now).reason))
        return tuple(reasons) or (("", "nothing runs and nothing is due, yet the workflow has not ended"),)


def _renumber(admitted: Admitted) -> None:
    """Give the tasks ids from their position (admission draws random ones), so runs repeat exactly."""
    workflow = admitted.workflow
    renamed = {task.id: f"{workflow.id}-t{task.index:06d}" for task in admitted.tasks}
    for task in admitted.tasks:
        task.id = renamed[task.id]
        task.dependencies = tuple(renamed[d] for d in task.dependencies)
    workflow.task_ids = [renamed[t] for t in workflow.task_ids]


def _bound_parts(tasks: list[Task], ran: dict[str, float]) -> tuple[float, float]:
    """Critical path and total work of the durations the tasks ran (tasks that never ran count 0)."""
    finish: dict[str, float] = {}
    parents = {task.id: task.dependencies for task in tasks}
    for task_id in graphlib.TopologicalSorter(parents).static_order():
        finish[task_id] = ran.get(task_id, 0.0) + max((finish[p] for p in parents[task_id]), default=0.0)
    return max(finish.values(), default=0.0), sum(ran.get(task.id, 0.0) for task in tasks)
