"""Background observers of a chaos run: the process scanner and the controller monitor.

:class:`ProcScanner` reads ``/proc/*/environ`` every ``period`` seconds and records, per attempt
id, when a process carrying ``CORRAL_ATTEMPT_ID=<id>`` and this run's marker was first and last
seen alive. Every descendant of a task inherits both variables, so a double-forked ``setsid``
grandchild is found exactly like the task's own shell.

:class:`Monitor` polls the controller (agents and the tracked workflows) and keeps a history of
changes stamped with CLOCK_BOOTTIME, from which the scenarios read detect and recover times. A
controller that is down or refuses a call is simply not sampled.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from corral.v1 import agent_pb2, orchestrator_pb2, types_pb2

__all__ = ["Change", "Monitor", "ProcScanner", "Sighting", "boottime"]

MARK = "CHAOS_RUN"


def boottime() -> float:
    """CLOCK_BOOTTIME in seconds: the clock of the ledger (``/proc/uptime``)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass
class Sighting:
    """The processes of one attempt as the scanner saw them."""

    first: float
    last: float
    pids: set[int] = field(default_factory=set)


class ProcScanner:
    """Samples /proc for the processes of this run's attempts (see the module docstring)."""

    def __init__(self, run_id: str, period: float = 0.2) -> None:
        self.marker = f"{MARK}={run_id}".encode()
        self.period = period
        self.sightings: dict[str, Sighting] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="proc-scanner", daemon=True)

    def start(self) -> ProcScanner:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.scan()
            self._stop.wait(self.period)

    def alive(self) -> dict[str, set[int]]:
        """Attempt id -> pids of live (not zombie) processes of this run, right now."""
        found: dict[str, set[int]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as handle:
                    environ = handle.read()
                if self.marker not in environ:
                    continue
                with open(f"/proc/{entry.name}/stat", "rb") as handle:
                    stat = handle.read()
            except OSError:
                continue  # gone meanwhile, or a kernel thread
            if stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"Z":
                continue
            for item in environ.split(b"\0"):
                if item.startswith(b"CORRAL_ATTEMPT_ID="):
                    attempt_id = item.split(b"=", 1)[1].decode(errors="replace")
                    found.setdefault(attempt_id, set()).add(int(entry.name))
        return found

    def scan(self) -> dict[str, set[int]]:
        """One sample, recorded; returns what is alive."""
        now = boottime()
        found = self.alive()
        with self._lock:
            for attempt_id, pids in found.items():
                sighting = self.sightings.setdefault(attempt_id, Sighting(now, now))
                sighting.last = now
                sighting.pids |= pids
        return found

    def last_alive(self) -> dict[str, float]:
        with self._lock:
            return {attempt_id: s.last for attempt_id, s in self.sightings.items()}


@dataclass(frozen=True)
class Change:
    """One observed change: ``kind`` is "agent" (key: name, value: state) or "task" (key:
    "workflow/task", value: (attempt id, state, agent id))."""

    at: float
    kind: str
    key: str
    value: Any


class Monitor:
    """Polls the controller every ``period`` seconds and records every change it sees."""

    def __init__(self, channel_factory: Callable[[], grpc.Channel], period: float = 0.25) -> None:
        self._channel_factory = channel_factory
        self.period = period
        self.workflows: list[str] = []
        self.history: list[Change] = []
        self._last: dict[tuple[str, str], Any] = {}
        self.cycles = 0  # complete polls so far
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-monitor", daemon=True)

    def start(self) -> Monitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def track(self, workflow_id: str) -> None:
        with self._lock:
            self.workflows.append(workflow_id)

    def _loop(self) -> None:
        from corral.v1 import agent_pb2_grpc, orchestrator_pb2_grpc

        channel: grpc.Channel | None = None
        while not self._stop.is_set():
            try:
                if channel is None:
                    channel = self._channel_factory()
                cluster = agent_pb2_grpc.ClusterStub(channel)
                orchestrator = orchestrator_pb2_grpc.OrchestratorStub(channel)
                agents = cluster.ListAgents(agent_pb2.ListAgentsRequest(), timeout=2).agents
                now = boottime()
                for agent in agents:
                    self._record(now, "agent", agent.name, agent.state)
                with self._lock:
                    tracked = list(self.workflows)
                for workflow_id in tracked:
                    request = orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id, include_tasks=True)
                    status = orchestrator.GetWorkflowStatus(request, timeout=2).status
                    now = boottime()
                    for task in status.tasks:
                        value = (task.attempt_id, task.state, task.agent_id)
                        self._record(now, "task", f"{workflow_id}/{task.name}", value)
                with self._lock:
                    self.cycles += 1
            except grpc.RpcError:
                # Down or restarting: a fresh channel skips the reconnect backoff.
                if channel is not None:
                    channel.close()
                channel = None
            self._stop.wait(self.period)
        if channel is not None:
            channel.close()

    def sync(self, timeout: float = 20.0) -> bool:
        """Wait until a poll that began after this call has completed (so the history holds what
        the caller has just seen); False when none did within ``timeout``."""
        with self._lock:
            target = self.cycles + 2  # the poll running now may have begun before this call
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.cycles >= target:
                    return True
            time.sleep(0.05)
        return False

    def _record(self, at: float, kind: str, key: str, value: Any) -> None:
        with self._lock:
            if self._last.get((kind, key)) != value:
                self._last[(kind, key)] = value
                self.history.append(Change(at, kind, key, value))

    def changes(self, kind: str, after: float = 0.0) -> list[Change]:
        with self._lock:
            return [c for c in self.history if c.kind == kind and c.at >= after]

    def agent_lost_at(self, name: str, after: float) -> float | None:
        """First time after ``after`` the controller showed agent ``name`` LOST (a closed stream
        alone, DISCONNECTED, is not a detection: the agent may be back in a moment)."""
        for change in self.changes("agent", after):
            if change.key == name and change.value == types_pb2.AGENT_STATE_LOST:
                return change.at
        return None

    def requeued_at(self, attempt_ids: set[str], after: float) -> float | None:
        """First time after ``after`` a task whose attempt was in ``attempt_ids`` showed another attempt
        (or no attempt: back to READY)."""
        current: dict[str, str] = {}
        for change in self.changes("task"):
            attempt_id = change.value[0]
            was = current.get(change.key)
            current[change.key] = attempt_id
            if change.at >= after and was in attempt_ids and attempt_id != was:
                return change.at
        return None

    def ended_at(self) -> dict[str, float]:
        """Attempt id -> when the controller first showed its task on another attempt or terminal."""
        terminal = {
            types_pb2.TASK_STATE_COMPLETED,
            types_pb2.TASK_STATE_FAILED,
            types_pb2.TASK_STATE_CANCELLED,
            types_pb2.TASK_STATE_SKIPPED,
        }
        ended: dict[str, float] = {}
        current: dict[str, str] = {}
        for change in self.changes("task"):
            attempt_id, state, _ = change.value
            was = current.get(change.key)
            current[change.key] = attempt_id
            if was and was != attempt_id:
                ended.setdefault(was, change.at)
            if attempt_id and state in terminal:
                ended.setdefault(attempt_id, change.at)
        return ended
