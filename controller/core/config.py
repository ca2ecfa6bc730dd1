"""The machine's timing and policy knobs (DESIGN.md §5), set by the controller's flags."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["MachineConfig"]


@dataclass(frozen=True, slots=True)
class MachineConfig:
    """Timing and policy knobs. Defaults follow DESIGN.md §5."""

    heartbeat_interval_s: float = 2.0
    lease_s: float = 15.0
    adopt_grace_s: float = 30.0  # after boot: no agent is lost, unreported attempts wait this long
    reconnect_grace_s: float = 5.0  # after a Hello: attempts it did not report may still be finishing
    kill_grace_s: float = 10.0  # SIGTERM -> SIGKILL for cancels and timeouts
    prefetch: int = 1  # attempts queued beyond its slots on an agent whose task times are unknown
    max_prefetch: int = 1024  # a cap only: pipeline_s sizes the window (256 was 77 ms of no-ops)
    # How long the report -> commit -> assign loop may take without an agent running dry: the
    # prefetch grows until the queued work lasts this long at the agent's measured task rate.
    pipeline_s: float = 0.2
    prefetch_below_s: float = 0.1  # only tasks expected to run shorter than this are prefetched
    # A longer task may be sent to an agent shortly before one of its running attempts is expected
    # to end (core/lookahead.py): twice the measured dispatch latency ahead, at most this long.
    # 0: never (free slots only).
    lookahead_s: float = 0.05
    steal_after_s: float = 0.01  # prefetched attempts not started after this long may move to idle agents
    ageing_per_s: float = 0.5  # priority points gained per second of waiting
    # Ageing is applied in whole steps of this many points (see queues.py): tasks of a priority
    # that became ready within one step's time (60 s at the defaults) are ordered by their graph
    # score (critical path) rather than by arrival. 0: continuous ageing, score only breaks ties.
    ageing_step: float = 30.0
    max_learned_durations: int = 100_000  # learned-duration entries kept (least recently used evicted)
    # Learned durations are hints: they reach the store at most this often (and when a workflow
    # ends), a changed group rewritten whole, rather than one more row per completed task in
    # every commit (the no-op throughput path). A crash loses at most this much learning.
    durations_flush_s: float = 30.0
    max_backoff_s: float = 300.0
    backoff_jitter: float = 0.25  # +- fraction of the backoff
    pull_lease_s: float = 3600.0  # pulled attempts without a timeout are lost after this long
    strategy: str = "binpack"
    # An assignment neither Accepted nor Started this long after it was made is taken back and
    # placed elsewhere (0: never). Its agent then gets nothing new for ``hold_back_s`` unless it
    # acknowledges something sooner, so an agent that swallows work cannot keep swallowing it.
    assignment_lease_s: float = 3.0
    hold_back_s: float = 30.0
    agent_ttl_s: float = 3600.0  # disconnected or lost agents holding nothing are forgotten after this
    max_agents: int = 10_000  # known agents; a new name past it evicts the oldest forgettable one
    # Issue 8. An agent silent ``lease_s`` is LOST (nothing new placed on it); the attempts of its
    # ``stop`` tasks are requeued only after ``fence_after_s`` + ``kill_grace_s`` + a margin, by
    # when their supervisors have fenced themselves (killed the task) on the agent's side.
    fence_after_s: float = 30.0
    max_disconnect_s: float = 3600.0  # default for ``keep`` tasks
    max_agent_losses: int = 3  # default poison threshold (task, then workflow field first)
    max_result_bytes: int = 256 * 1024  # a Finished result over this fails its attempt
    # A session's heartbeats are echoed at most this often (its first one at once). An echo renews
    # the agent's supervisors' lease to that heartbeat's send time + ``fence_after_s``, so while
    # the agent is heard its lease stays at least ``fence_after_s`` - this - one heartbeat
    # interval ahead; echoing every heartbeat would double the controller's stream writes.
    # Never more than a sixth of ``fence_after_s`` (see :attr:`echo_every_s`).
    heartbeat_echo_s: float = 5.0
    # Deadlines (core/deadlines.py): a task is at risk when its slack is under this share of its
    # workflow's deadline horizon; it then gains ``at_risk_boost`` priority points. Off: deadlines
    # are kept and reported but neither admission nor the queue order uses them.
    at_risk_fraction: float = 0.1
    at_risk_boost: int = 30
    deadline_scheduling: bool = True
    max_preemptions: int = 3  # default cap on how often one task is preempted (hysteresis)
    # Reservations (reservations.py): a task waiting this long that fits nowhere reserves the agent
    # expected to free room first (0: never); unused, it expires after this factor x the expected
    # wait; at most this many at once.
    reserve_after_s: float = 60.0
    reservation_expiry_factor: float = 2.0
    max_reservations: int = 64
    # Issue 10 cascade prevention (cordon.py): this many failed attempts in a row on one agent, from
    # at least ``cordon_workflows`` workflows whose tasks succeed elsewhere, cordon it for the
    # cool-down (0: never).
    cordon_after: int = 5
    cordon_workflows: int = 3
    cordon_cooldown_s: float = 300.0
    # Issue 10: the task result cache (core/cache.py), least recently used entries evicted past these.
    cache_max_entries: int = 10_000
    cache_max_bytes: int = 256 * 1024 * 1024
    # Issue 12 (core/lifecycle.py): a finished workflow idle this long leaves memory (0: never;
    # the daemon's default is 30 s), at most this many tasks' worth per tick.
    evict_after_s: float = 0.0
    evict_tasks_per_tick: int = 50_000
    # Issue 13: the fleet's heartbeats are paced to about this many a second, as Nomad's
    # max_heartbeats_per_second: each agent beats every ``connected / max_heartbeats_per_s`` seconds,
    # never more often than ``heartbeat_interval_s`` nor less than three times a lease (see
    # :meth:`beat_interval_s`). Every heartbeat costs the controller a gRPC message it cannot batch.
    max_heartbeats_per_s: float = 100.0

    def __post_init__(self) -> None:
        if not self.fence_after_s > self.lease_s:
            raise ValueError(
                f"fence_after_s ({self.fence_after_s:g}) must be longer than lease_s ({self.lease_s:g}): "
                "an agent is lost before its attempts are fenced"
            )
        if self.max_agent_losses < 1:
            raise ValueError(f"max_agent_losses must be at least 1, got {self.max_agent_losses}")
        if not self.max_disconnect_s > 0:
            raise ValueError(f"max_disconnect_s must be positive, got {self.max_disconnect_s:g}")
        if not 0 <= self.ageing_step < float("inf"):
            raise ValueError(f"ageing_step must be a finite number >= 0, got {self.ageing_step:g}")
        if not 0 <= self.max_heartbeats_per_s < float("inf"):
            raise ValueError(f"max_heartbeats_per_s must be a finite number >= 0, got {self.max_heartbeats_per_s:g}")
        if self.max_learned_durations < 1:
            raise ValueError(f"max_learned_durations must be at least 1, got {self.max_learned_durations}")

    def beat_interval_s(self, connected: int) -> float:
        """The heartbeat interval for a fleet of ``connected`` agents (told in Welcome and echoes).

        ``heartbeat_interval_s`` up to ``max_heartbeats_per_s`` x that many agents, then longer, to
        at most a third of ``lease_s`` (an agent is lost only after three missed beats); rounded
        up to 0.1 s. A small fleet beats exactly as configured.
        """
        floor = self.heartbeat_interval_s
        if connected <= 0 or self.max_heartbeats_per_s <= 0:
            return floor
        paced = math.ceil(connected / self.max_heartbeats_per_s * 10) / 10
        return max(floor, min(paced, self.lease_s / 3))

    @property
    def echo_every_s(self) -> float:
        """How often a session's heartbeats are echoed (see ``heartbeat_echo_s``)."""
        return min(self.heartbeat_echo_s, self.fence_after_s / 6)

    @property
    def fence_margin_s(self) -> float:
        """Slack for the rate difference between the controller's and the agents' clocks."""
        return 0.5 + 0.01 * self.fence_after_s

    @property
    def fence_total_s(self) -> float:
        """Silence after which a ``stop`` attempt's supervisor has surely killed its task."""
        return self.fence_after_s + self.kill_grace_s + self.fence_margin_s
