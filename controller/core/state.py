"""The in-memory state the machine works on, its indexes, and the bookkeeping shared by its parts.

Everything here is derived from the stored records plus the live agent sessions; ``restore``
rebuilds it from a snapshot at boot. Changed records are tracked so one tick's changes commit in
one transaction, and actions are collected until the runtime takes them after that commit.
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence

from corral.controller.core.access import AccessState
from corral.controller.core.cache import CacheBook
from corral.controller.core.checkpoints import CheckpointBook
from corral.controller.core.config import MachineConfig
from corral.controller.core.cordon import Cordons
from corral.controller.core.deadline_book import DeadlineBook
from corral.controller.core.dependents import Dependents
from corral.controller.core.dynamic import DynamicBook
from corral.controller.core.events import Action, AttemptFinished, Publish, SubmitWorkflow, WorkflowDone
from corral.controller.core.fallbacks import Fallbacks, track_rules, unfinished_of
from corral.controller.core.group_ops import track_groups
from corral.controller.core.holders import WorkflowHolders
from corral.controller.core.lifecycle import LifecycleBook
from corral.controller.core.lookahead import EndingSoon
from corral.controller.core.model import (
    Agent,
    Attempt,
    AttemptState,
    Resources,
    Task,
    TaskState,
    Workflow,
    WorkflowEvent,
    WorkflowState,
)
from corral.controller.core.name_index import NameIndex
from corral.controller.core.ordering import Ordering
from corral.controller.core.parallelism import Parallelism
from corral.controller.core.placement import AgentView, Demand
from corral.controller.core.preemption import Preempter
from corral.controller.core.queues import ReadyQueue
from corral.controller.core.reservations import Reservations
from corral.controller.core.runs import RunBook
from corral.controller.core.sagas import Sagas
from corral.controller.core.scheduling import Plan
from corral.controller.core.settled import Settled
from corral.controller.core.transitions import move_attempt, move_task, move_workflow
from corral.controller.errors import NotFound, clip
from corral.controller.store.base import ChangeBatch, LogChunk

__all__ = ["MachineConfig", "MachineState"]


class MachineState:
    """State, indexes and helpers; the handler mixins of :class:`Machine` build on it."""

    def __init__(
        self,
        config: MachineConfig,
        new_id: Callable[[], str],
        rng: random.Random,
        boot_time: float,
    ) -> None:
        self.config = config
        self.new_id = new_id
        self.rng = rng
        self.boot_time = boot_time
        self.workflows: dict[str, Workflow] = {}
        self.tasks: dict[str, Task] = {}
        self.attempts: dict[str, Attempt] = {}
        self.agents: dict[str, Agent] = {}
        # derived indexes
        self.by_name = NameIndex()  # (workflow id, task name) -> task id, stored per workflow
        self.dependents = Dependents()
        self.unfinished_deps: dict[str, int] = {}
        self.counts: dict[str, Counter[TaskState]] = {}
        self.idempotency: dict[tuple[str, str], str] = {}  # (namespace, key) -> workflow id
        self.access = AccessState()
        self.queue = ReadyQueue(config.ageing_per_s, config.ageing_step)
        # Issue 9: learned durations and each started workflow's task ranks (queue scores).
        self.ordering = Ordering(config.max_learned_durations, config.durations_flush_s)
        self.deadline_book = DeadlineBook(config.at_risk_fraction, config.at_risk_boost)
        self.views: dict[str, AgentView] = {}  # connected or draining agents with a live stream
        self.crowded: set[str] = set()  # agents whose view holds more attempts than slots (may be stale)
        self.granted: set[str] = set()  # agents whose view holds a grant from the last pass (AgentView.grant)
        self.active: dict[str, set[str]] = {}  # agent or worker id -> active attempt ids
        self.unconfirmed: dict[str, float] = {}  # attempt id -> deadline for its agent to report it
        self.deadlines: dict[str, float] = {}  # attempt id -> controller-side timeout backstop
        # Two-phase take-back (memory only; after a restart agents re-report in their Hello):
        self.unacknowledged: dict[str, float] = {}  # attempt id -> its assignment lease's end
        self.ack_queue: deque[tuple[float, str]] = deque()  # the same, in deadline order (lazy)
        self.releasing: set[str] = set()  # attempts asked back (a move), waiting for Released/Started
        # The last scheduling pass (its reasons for waiting tasks feed explain and status); memory only.
        self.last_plan: Plan | None = None
        # Gangs (workflow id -> gang -> member ids) and concurrency limits (group_ops.py); memory only.
        self.gangs: dict[str, dict[str, list[str]]] = {}
        self.parallelism = Parallelism()
        self.reservations = Reservations()  # memory only: rebuilt as big tasks wait again
        self.held_back: dict[str, float] = {}  # agent id -> no new work before this (or an ack)
        # Agents whose supervisors fenced an attempt (their lease ran out): held back until their
        # next heartbeat is echoed, which renews it; work placed before would be refused.
        self.awaiting_beat: set[str] = set()
        # Attempts of silent (lost, disconnected, or not yet back after a restart) agents -> when
        # they are requeued: fenced (``stop``) or given up (``keep``). Cleared by a Hello.
        self.fence_at: dict[str, float] = {}
        # Late success (two-phase): replacement attempt id -> the fenced attempt's success report,
        # accepted if the replacement is Released unstarted. Memory only.
        self.withdrawing: dict[str, AttemptFinished] = {}
        # Active attempt -> (the queue order it was sent with, dispatch seq): an agent starts the
        # attempts it queues in that order (agent/slotqueue.py). Memory only.
        self.assign_order: dict[str, tuple[tuple[float, ...], int]] = {}
        self.assign_seq = 0
        self.run_seconds: float | None = None  # moving average of recent attempt run times, all agents
        self.window_run_seconds: float | None = None  # the average the agents' windows were sized for
        self.workflow_seconds: dict[str, float] = {}  # workflow id -> moving average of its run times
        self.watched: set[str] = set()  # workflow ids with watchers: only these publish events
        self.epoch = 0
        self.event_seq = 0
        self.next_lease_check = 0.0
        self.next_forget_check = 0.0
        # agent id -> (session epoch, when its last heartbeat was echoed); see heartbeat_echo_s.
        self.echoed: dict[str, tuple[int, float]] = {}
        # outputs of the current tick
        self._actions: list[Action] = []
        self._dirty_workflows: dict[str, Workflow] = {}
        self._dirty_tasks: dict[str, Task] = {}
        # Tasks whose only changes since their row was last written are progress (see
        # touch_progress); written narrowly unless also touched whole in the same tick.
        self._moved_tasks: dict[str, Task] = {}
        self._dirty_attempts: dict[str, Attempt] = {}
        self._dirty_agents: dict[str, Agent] = {}
        self._deleted_agents: set[str] = set()
        self._logs: list[LogChunk] = []
        self._events: list[WorkflowEvent] = []
        self._meta: dict[str, str] = {}
        # Submissions applied this tick: their records are rewound if the tick is thrown away.
        self.submitted: list[SubmitWorkflow] = []
        self.preempter = Preempter()  # issue 9: preemptions in progress (memory only)
        self.ending = EndingSoon()  # running attempts by expected end: lookahead dispatch (memory only)
        self.checkpoints = CheckpointBook()  # issue 10: each task's last checkpoint
        self.dynamic = DynamicBook()  # issue 10: spawned children and "X/*" fan-ins (indexes)
        self.run_book = RunBook()  # issue 10: the runs of retried workflows
        self.settled = Settled()  # issue 12: completed tasks' attempts leave memory once committed
        self.sagas = Sagas()  # issue 10: compensation records
        self.cordons = Cordons()  # issue 10: failure streaks and cordoned agents
        self.fallbacks = Fallbacks()  # issue 10: fallbacks, partial results, approvals (memory only)
        self.cache = CacheBook(config.cache_max_entries, config.cache_max_bytes)  # issue 10
        self.lifecycle = LifecycleBook()  # issue 12: eviction and retention (core/lifecycle.py)
        self.holders = WorkflowHolders()  # agents to tell when a workflow ends (core/holders.py)

    # --- lookups --------------------------------------------------------------------------------

    def workflow(self, workflow_id: str) -> Workflow:
        found = self.workflows.get(workflow_id)
        if found is None:
            raise NotFound(f"workflow {clip(workflow_id)!r} not found")
        return found

    def task(self, task_id: str) -> Task:
        found = self.tasks.get(task_id)
        if found is None:
            raise NotFound(f"task {clip(task_id)!r} not found")
        return found

    def agent(self, agent_id: str) -> Agent:
        found = self.agents.get(agent_id)
        if found is None:
            raise NotFound(f"agent {clip(agent_id)!r} not found")
        return found

    def demand(self, task: Task) -> Demand:
        return Demand(
            task.agent_type,
            task.resources,
            task.constraints,
            self.expected_short(task),
            task.namespace,
            task.constraint_exprs,
            task.spread,
            task.affinity,
            task.workflow_id,
        )

    def expected_short(self, task: Task) -> bool:
        """Whether the task should finish quickly: its estimate, else what its earlier runs taught,
        else how its workflow's tasks ran so far."""
        expected = (
            task.estimated_duration_s
            or self.ordering.learned_seconds(task)
            or self.workflow_seconds.get(task.workflow_id)
        )
        return expected is not None and expected <= self.config.prefetch_below_s

    # --- change tracking ------------------------------------------------------------------------

    def touch_workflow(self, workflow: Workflow) -> None:
        self._dirty_workflows[workflow.id] = workflow

    def touch_task(self, task: Task) -> None:
        self._dirty_tasks[task.id] = task

    def touch_progress(self, task: Task) -> None:
        """The task, already stored, changed only in codec.PROGRESS_COLUMNS (state, attempt, agent,
        times, outcome) since its row was last written: the store may update just those.

        Only the hot transitions say so (placed, started, completed, ready after its
        dependencies); every other change writes the row whole (:meth:`touch_task`), and a task
        touched both ways in one tick is written whole.
        """
        self._moved_tasks[task.id] = task

    def touch_attempt(self, attempt: Attempt) -> None:
        self._dirty_attempts[attempt.id] = attempt

    def touch_agent(self, agent: Agent) -> None:
        self._dirty_agents[agent.id] = agent
        self._deleted_agents.discard(agent.id)

    def forget_agent(self, agent_id: str) -> None:
        """Drop an agent that holds nothing from memory and (with this tick's commit) the store."""
        self.agents.pop(agent_id, None)
        self.views.pop(agent_id, None)
        self.active.pop(agent_id, None)
        self.held_back.pop(agent_id, None)
        self.echoed.pop(agent_id, None)
        self.awaiting_beat.discard(agent_id)
        self.cordons.until.pop(agent_id, None)
        self.cordons.manual.discard(agent_id)
        self._dirty_agents.pop(agent_id, None)
        self._deleted_agents.add(agent_id)

    def add_logs(self, chunk: LogChunk) -> None:
        self._logs.append(chunk)

    def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value

    def emit(self, action: Action) -> None:
        self._actions.append(action)

    def take_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def take_changes(self) -> ChangeBatch:
        """This tick's changed records.

        The records are the live objects, not copies: the runtime touches the machine only between
        commits, so nothing changes them while the store encodes them.
        """
        dirty, moved = self._dirty_tasks, self._moved_tasks
        if dirty and moved:
            moved = {task_id: task for task_id, task in moved.items() if task_id not in dirty}
        batch = ChangeBatch(
            workflows=self._dirty_workflows,
            tasks=dirty,
            moved_tasks=moved,
            attempts=self._dirty_attempts,
            agents=self._dirty_agents,
            logs=self._logs,
            meta=self._meta,
            access=self.access.take_changes(),
            deleted_agents=self._deleted_agents,
            events=self._events,
        )
        durations = self.ordering.take_changes()
        if durations is not None:
            batch.durations = durations
        checkpoints = self.checkpoints.take_changes()
        if checkpoints is not None:
            batch.checkpoints = checkpoints
        if self.run_book.dirty:
            batch.runs = self.run_book.take()
        cached = self.cache.take_changes()
        if cached is not None:
            batch.cache = cached
        if self.lifecycle.forgotten:
            batch.forgotten_workflows = self.lifecycle.take()
        self._dirty_workflows, self._dirty_tasks, self._dirty_attempts, self._dirty_agents = {}, {}, {}, {}
        self._moved_tasks = {}
        self._deleted_agents = set()
        self._logs, self._meta, self._events = [], {}, []
        self.submitted = []
        # The batch holds the completed attempts' rows, and the runtime commits it before the
        # next tick: from here they are read from the store (core/settled.py).
        self.settled.drop_queued(self.attempts, self.tasks)
        return batch

    # --- shared transitions ---------------------------------------------------------------------

    def record(
        self,
        workflow: Workflow,
        now: float,
        kind: str,
        task: Task | None = None,
        *,
        message: str = "",
        reason: str = "",
        attempt_id: str = "",
        agent_id: str = "",
    ) -> None:
        """Append one entry to the workflow's event log (committed with this tick) and publish it.

        A plain "ready" (dependencies done, or the workflow started) is only published, not
        stored: it adds nothing a reader of the log needs ("placed" follows) and it is a quarter of
        the rows of a large workflow.
        """
        watched = workflow.id in self.watched
        if kind == "ready" and not watched:
            return
        self.event_seq += 1
        event = WorkflowEvent(
            self.event_seq,
            now,
            workflow.id,
            workflow.state,
            task.id if task else "",
            task.name if task else "",
            task.state if task else None,
            attempt_id,
            agent_id,
            message,
            kind,
            reason,
        )
        if kind != "ready":
            self._events.append(event)
        if watched:
            self.emit(Publish(event))

    def set_task_state(
        self,
        task: Task,
        new: TaskState,
        now: float,
        message: str = "",
        *,
        kind: str = "",
        reason: str = "",
        progress: bool = False,
    ) -> None:
        """The one place a task changes state: the transition table, counters, record and event.

        ``kind`` names the event-log entry (by default the new state's, e.g. "placed" for
        ASSIGNED); ``reason`` defaults to ``message``. ``progress``: the caller changed nothing
        but progress columns since the task's row was written (see :meth:`touch_progress`).
        """
        old = task.state
        move_task(task, new)  # a finished task shows no rank (Ordering.rank_of); its workflow's go when it ends
        if new is TaskState.COMPLETED:
            self.settled.queue(task)  # its attempt leaves memory once committed (core/settled.py)
        counts = self.counts[task.workflow_id]
        counts[old] -= 1
        counts[new] += 1
        if progress:
            self.touch_progress(task)
        else:
            self.touch_task(task)
        self.record(
            self.workflows[task.workflow_id],
            now,
            kind or _TASK_KINDS[new],
            task,
            message=message,
            reason=reason or message,
            attempt_id=task.current_attempt_id or "",
            agent_id=task.agent_id or "",
        )

    def set_workflow_state(self, workflow: Workflow, new: WorkflowState, now: float, message: str = "") -> None:
        move_workflow(workflow, new)
        self.lifecycle.moved(workflow.id, new.terminal, now)
        if new.terminal:
            workflow.finished_at = now
            self.emit(WorkflowDone(workflow.id))
            self._actions.extend(self.holders.ended(workflow.id, self.agents))
            self.ordering.flush_soon(now)  # learned at once; stored within a second
            if self.deadline_book:
                self.deadline_book.forget(workflow.id, workflow.task_ids)
        if new.terminal or new is WorkflowState.COMPENSATING:
            # Its tasks all ended: what it queues from now on are compensation records, which share
            # the index of the task they undo and must score 0. A retry or rerun ranks it again.
            self.ordering.forget(workflow.id)
        self.touch_workflow(workflow)
        self.record(workflow, now, _WORKFLOW_KINDS[new], message=message, reason=message)

    def enqueue(self, task: Task, now: float | None = None) -> None:
        """Put a READY task of a running workflow on the ready queue, ordered by its graph score."""
        if task.rules is not None and task.rules.approval:
            return  # waits for an answer, not for an agent
        score = self.ordering.score(task)
        if self.deadline_book.latest_start:  # deadlines in use: least slack first, at-risk boost
            at = (task.ready_at or 0.0) if now is None else now
            priority, latest, since = self.deadline_book.queue_terms(task, at)
            self.queue.push(
                task.id, task.agent_type, priority, since, task.not_before, score, latest, partition=task.namespace
            )
            return
        self.queue.push(
            task.id,
            task.agent_type,
            task.priority,
            task.ready_at or 0.0,
            task.not_before,
            score,
            partition=task.namespace,
        )

    def rank_workflow(self, workflow: Workflow) -> None:
        """Rank a workflow's tasks (when it starts, or is restored): see :class:`Ordering`."""
        tasks = [self.tasks[task_id] for task_id in workflow.task_ids]
        ranks = self.ordering.rank_workflow(workflow, tasks, lambda: self.plan_slots(workflow, tasks))
        if self.config.deadline_scheduling and (
            workflow.deadline is not None or any(task.deadline is not None for task in tasks)
        ):
            self.deadline_book.plan_workflow(workflow, tasks, ranks.expected_by_id(workflow.task_ids))

    def plan_slots(self, workflow: Workflow, tasks: Sequence[Task]) -> int:
        """The attempts of ``workflow`` the fleet can run at once: the slots of the online agents
        serving its agent types, at most its ``max_parallel`` (the order search plans on it)."""
        views = self.views
        if not views:
            return 0
        kinds = {task.agent_type for task in tasks}
        slots = sum(view.slots for view in views.values() if not kinds.isdisjoint(view.agent_types))
        if workflow.max_parallel:
            slots = min(slots, workflow.max_parallel)
        return slots

    def learn_duration(
        self, task: Task, seconds: float, now: float, peak_rss_bytes: int = 0, cpu_s: float = 0.0
    ) -> None:
        """A completed attempt of ``task`` ran ``seconds`` and used this much (0: not measured)."""
        workflow = self.workflows[task.workflow_id]
        self.ordering.learn(task, workflow.name, seconds, now, peak_rss_bytes, cpu_s, len(workflow.task_ids))

    def track_task(self, task: Task) -> None:
        """Index a task (submission or restore)."""
        self.tasks[task.id] = task
        if task.preemptible:
            self.preempter.enabled = True
        self.by_name[(task.workflow_id, task.name)] = task.id
        for dep in task.dependencies:
            self.dependents.add(dep, task.id)
        counts = self.counts.get(task.workflow_id)
        if counts is None:  # not setdefault: that would build a Counter per task
            counts = self.counts[task.workflow_id] = Counter()
        counts[task.state] += 1
        if task.gang and not task.state.terminal:  # a restored finished gang needs no index
            track_groups(self, None, task)
        if task.dynamic is not None:
            self.dynamic.track(task)
        if task.rules is not None:
            track_rules(self, task)

    def count_unfinished(self, task_ids: Iterable[str]) -> None:
        """Count the unfinished dependencies of a batch of tasks just tracked (every batch of
        :meth:`track_task` ends here), and seal the dependents lists the batch added to."""
        self.dependents.seal()
        for task_id in task_ids:
            task = self.tasks[task_id]
            if self.fallbacks.enabled:
                self.unfinished_deps[task_id] = unfinished_of(self, task)
                continue
            self.unfinished_deps[task_id] = sum(
                1 for dep in task.dependencies if self.tasks[dep].state is not TaskState.COMPLETED
            )

    def remaining(self, workflow_id: str) -> int:
        """Tasks of a workflow not yet in a terminal state."""
        counts = self.counts[workflow_id]
        return sum(n for state, n in counts.items() if not state.terminal)

    def end_attempt(self, attempt: Attempt, new: AttemptState, now: float, error: str = "") -> None:
        """Close an attempt: the transition, its timestamps, and the release of what it held."""
        move_attempt(attempt, new)
        attempt.finished_at = now
        if error:
            attempt.error = error
        view = self.views.get(attempt.agent_id)
        if view is not None:
            view.release(attempt.resources, attempt.gpu_ids)
        if self.preempter.victim_of and attempt.id in self.preempter.victim_of:
            self.preempter.victim_ended(attempt, view)  # its room stays reserved for the preemptor
        owned = self.active.get(attempt.agent_id)
        if owned is not None:
            owned.discard(attempt.id)
        self.ending.ended(attempt.id, self.views)
        self.unconfirmed.pop(attempt.id, None)
        self.deadlines.pop(attempt.id, None)
        self.assign_order.pop(attempt.id, None)
        self.unacknowledged.pop(attempt.id, None)
        self.releasing.discard(attempt.id)
        self.fence_at.pop(attempt.id, None)
        self.withdrawing.pop(attempt.id, None)
        self.touch_attempt(attempt)

    def rebuild_view(self, agent: Agent) -> AgentView:
        """The scheduler's view of an online agent from the attempts it holds."""
        held = [self.attempts[a] for a in self.active.get(agent.id, ())]
        allocated = Resources()
        for attempt in held:
            allocated = allocated + attempt.resources
        view = AgentView.of(
            agent,
            allocated=allocated,
            outstanding=len(held),
            used_gpu_ids=[g for attempt in held for g in attempt.gpu_ids],
            prefetch=self.prefetch_for(agent.inventory.slots),
            held_back=agent.id in self.held_back or self.cordons.holds(agent.id),
        )
        view.crowded = self.crowded
        view.ending = self.ending.of(agent.id)
        if view.outstanding > view.slots:
            self.crowded.add(agent.id)
        else:
            self.crowded.discard(agent.id)
        self.views[agent.id] = view
        return view

    def prefetch_for(self, slots: int) -> int:
        """Attempts to queue on an agent beyond its slots so it never waits for the controller.

        Sized from recent run times across the cluster (tasks move between agents, so the last
        tasks anywhere predict the next ones better than one agent's history): none while tasks
        run long (a round trip is nothing next to a task), and enough to cover the control
        loop's latency at the task rate while they are tiny.
        """
        seconds = self.run_seconds
        if seconds is None:
            return self.config.prefetch
        if seconds > self.config.prefetch_below_s:
            return 0
        wanted = math.ceil(slots * self.config.pipeline_s / max(seconds, 1e-5))
        return max(1, min(wanted, self.config.max_prefetch))

    def observe_run_time(self, workflow_id: str, seconds: float) -> None:
        """Feed an attempt's run time into the averages; resize the agents' windows when it moved."""
        self.run_seconds = _average(self.run_seconds, seconds)
        self.workflow_seconds[workflow_id] = _average(self.workflow_seconds.get(workflow_id), seconds)
        sized_for = self.window_run_seconds
        if sized_for is None or not 0.8 <= self.run_seconds / max(sized_for, 1e-9) <= 1.25:
            # Only on a real change: resizing touches every agent's view.
            self.window_run_seconds = self.run_seconds
            for view in self.views.values():
                view.window = view.slots + self.prefetch_for(view.slots)


# The event-log kind of a plain transition into each state (callers name the special ones:
# "retry", "requeued", "lost", "fenced", "poison").
_TASK_KINDS: dict[TaskState, str] = {
    TaskState.PENDING: "pending",
    TaskState.READY: "ready",
    TaskState.ASSIGNED: "placed",
    TaskState.RUNNING: "running",
    TaskState.COMPLETED: "completed",
    TaskState.FAILED: "failed",
    TaskState.CANCELLED: "cancelled",
    TaskState.SKIPPED: "skipped",
}
_WORKFLOW_KINDS: dict[WorkflowState, str] = {
    WorkflowState.PENDING: "submitted",
    WorkflowState.RUNNING: "started",
    WorkflowState.PAUSED: "paused",
    WorkflowState.CANCELLING: "cancelling",
    WorkflowState.COMPLETED: "completed",
    WorkflowState.FAILED: "failed",
    WorkflowState.CANCELLED: "cancelled",
    WorkflowState.COMPENSATING: "compensating",
}


def _average(previous: float | None, sample: float) -> float:
    """A moving average that follows slow-downs at once, so long tasks stop being prefetched."""
    if previous is None or sample > previous:
        return sample
    return previous * 0.8 + sample * 0.2
