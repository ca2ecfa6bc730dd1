"""Fixtures for unit tests: a pure state machine driven exactly like the runtime drives it.

:class:`Sim` owns a :class:`Machine` with a fake clock (plain floats), a counter for ids and a
seeded RNG. Every step is ``handle(event, now)`` then ``tick(now)`` then ``take_changes()`` (committed
to a :class:`MemoryStore`, as the runtime commits to SQLite) then ``take_actions()``. Every machine a
test creates is validated at teardown.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from corral.controller.core import events as ev
from corral.controller.core.machine import Machine, MachineConfig
from corral.controller.core.model import AgentState, AttemptState, Inventory, Resources, Task
from corral.controller.rpc.submission import admit_workflow
from corral.controller.rpc.wire_spec import spec_to_proto
from corral.controller.spec import parse_workflow
from corral.controller.store import codec
from corral.controller.store.base import ChangeBatch
from corral.controller.store.memory import MemoryStore

__all__ = ["Sim", "Step", "task_spec"]

START = 1000.0  # well past boot (0.0) plus the adoption grace, so leases are live


def task_spec(name: str, *deps: str, **fields: Any) -> dict[str, Any]:
    """A shell task of a workflow file; ``fields`` override anything (resources, retries, ...)."""
    spec: dict[str, Any] = {"name": name, "payload": {"shell": f"echo {name}"}, "dependencies": list(deps)}
    spec.update(fields)
    return spec


@dataclass
class Step:
    """What one handled event (or a bare tick) produced."""

    result: Any
    changes: ChangeBatch
    actions: list[ev.Action]

    def of(self, kind: type[Any]) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]

    def assignments(self, agent_id: str | None = None) -> list[ev.Assignment]:
        """Every attempt handed to ``agent_id`` (or to anyone) in this step's Assign actions."""
        return [
            assignment
            for action in self.of(ev.Assign)
            if agent_id is None or action.agent_id == agent_id
            for assignment in action.assignments
        ]


@dataclass
class Sim:
    """A machine, its clock and its store."""

    config: MachineConfig = field(default_factory=MachineConfig)
    boot_time: float = 0.0
    now: float = START
    store: MemoryStore = field(default_factory=MemoryStore)
    # Agents acknowledge every assignment at once (Accepted), as real ones do; tests of the
    # assignment lease turn this off.
    auto_accept: bool = True
    machine: Machine = field(init=False)

    def __post_init__(self) -> None:
        counter = itertools.count(1)
        self.new_id: Callable[[], str] = lambda: f"{next(counter):05d}"
        self.machine = Machine(self.config, new_id=self.new_id, rng=random.Random(0), boot_time=self.boot_time)

    # --- driving --------------------------------------------------------------------------------

    def commit(self, changes: ChangeBatch) -> None:
        """Commit a step's changes, checking first that every narrow write is safe: a moved task
        differs from its stored row in progress columns only (so every scenario of the unit tests
        checks the hot transitions' ``progress=True``)."""
        stored = self.store._rows["tasks"]
        for task in changes.moved_tasks.values():
            before = stored.get(task.id)
            assert before is not None, f"task {task.name} written narrowly before it was ever stored"
            row = codec.encode_task(task)
            for i, column in enumerate(codec.COLUMNS["tasks"]):
                if column not in codec.PROGRESS_COLUMNS:
                    assert row[i] == before[i], f"task {task.name}: {column} changed in a progress-only write"
        self.store.commit(changes)

    def _finish_step(self, result: Any) -> Step:
        self.machine.tick(self.now)
        changes = self.machine.take_changes()
        self.commit(changes)
        actions = self.machine.take_actions()
        if self.auto_accept:
            for action in actions:
                if isinstance(action, ev.Assign):
                    for assignment in action.assignments:
                        self.machine.handle(ev.AttemptAccepted(action.agent_id, assignment.attempt_id), self.now)
        return Step(result, changes, actions)

    def do(self, event: ev.Event, *, at: float | None = None) -> Step:
        """handle + tick + take changes and actions, at ``at`` (default: the current time)."""
        if at is not None:
            self.now = at
        return self._finish_step(self.machine.handle(event, self.now))

    def tick(self, *, at: float | None = None, after: float = 0.0) -> Step:
        """A tick with no event, at ``at`` or ``after`` seconds from now."""
        self.now = at if at is not None else self.now + after
        return self._finish_step(None)

    def advance(self, seconds: float) -> Step:
        """Let time pass with every online agent heartbeating (so none is lost), then tick."""
        end = self.now + seconds
        step = self.config.heartbeat_interval_s
        while self.now + step < end:
            self.now += step
            for agent in list(self.machine.agents.values()):
                if agent.state in (AgentState.CONNECTED, AgentState.DRAINING):
                    self.machine.handle(ev.AgentHeartbeat(agent.id, agent.session_epoch), self.now)
            self._finish_step(None)
        return self.tick(at=end)

    def run_for(self, seconds: float, *, silent: Sequence[str] = ()) -> Step:
        """Like :meth:`advance`, but the ``silent`` agents do not heartbeat, and the returned step
        holds the actions of every tick on the way (the changes of the last one)."""
        end = self.now + seconds
        interval = self.config.heartbeat_interval_s
        actions: list[ev.Action] = []
        while self.now + interval < end:
            self.now += interval
            for agent in list(self.machine.agents.values()):
                if agent.id not in silent and agent.state in (AgentState.CONNECTED, AgentState.DRAINING):
                    self.machine.handle(ev.AgentHeartbeat(agent.id, agent.session_epoch), self.now)
            actions.extend(self._finish_step(None).actions)
        last = self.tick(at=end)
        return Step(last.result, last.changes, actions + last.actions)

    def quiet(self) -> Step:
        """Take whatever is pending without ticking (to start a test from a clean slate)."""
        changes = self.machine.take_changes()
        self.commit(changes)
        return Step(None, changes, self.machine.take_actions())

    # --- building blocks ------------------------------------------------------------------------

    def submit(
        self,
        tasks: Sequence[Mapping[str, Any]],
        *,
        name: str = "wf",
        start: bool = True,
        key: str | None = None,
        standalone: bool = False,
        namespace: str = "",
        **workflow_fields: Any,
    ) -> tuple[str, Step]:
        spec = parse_workflow({"name": name, "tasks": list(tasks), **workflow_fields})
        admitted = admit_workflow(spec_to_proto(spec), self.new_id, idempotency_key=key, standalone=standalone)
        if namespace:  # as the rpc edge sets it from the request, before anything is stored
            admitted.workflow.namespace = namespace
            for task in admitted.tasks:
                task.namespace = namespace
        step = self.do(ev.SubmitWorkflow(admitted.workflow, admitted.tasks, start=start))
        workflow_id, _ = step.result
        return workflow_id, step

    def hello(
        self,
        agent_id: str,
        *,
        types: tuple[str, ...] = ("shell",),
        cpu: float = 8.0,
        memory: int = 8192,
        gpus: int = 0,
        slots: int = 4,
        labels: Mapping[str, str] | None = None,
        running: tuple[str, ...] = (),
        draining: bool = False,
        incarnation: str = "",
        finishing: tuple[str, ...] = (),
    ) -> Step:
        inventory = Inventory(Resources(cpu_cores=cpu, memory_mb=memory, gpu_count=gpus), slots=slots)
        return self.do(
            ev.AgentHello(
                agent_id,
                name=agent_id,
                agent_types=types,
                labels=dict(labels or {}),
                inventory=inventory,
                running_attempt_ids=running,
                draining=draining,
                incarnation=incarnation,
                finished_attempt_ids=finishing,
            )
        )

    def beat(self, agent_id: str, *, at: float | None = None) -> Step:
        epoch = self.machine.agents[agent_id].session_epoch
        return self.do(ev.AgentHeartbeat(agent_id, epoch), at=at)

    def started(self, reporter: str, attempt_id: str) -> Step:
        return self.do(ev.AttemptStarted(reporter, attempt_id))

    def accepted(self, reporter: str, attempt_id: str) -> Step:
        return self.do(ev.AttemptAccepted(reporter, attempt_id))

    def released(self, reporter: str, attempt_id: str) -> Step:
        return self.do(ev.AttemptReleased(reporter, attempt_id))

    def finished(
        self,
        reporter: str,
        attempt_id: str,
        outcome: AttemptState = AttemptState.SUCCEEDED,
        *,
        result: bytes | None = b"null",
        error: str = "",
        retryable: bool = True,
    ) -> Step:
        return self.do(
            ev.AttemptFinished(
                reporter, attempt_id, outcome, 0 if outcome is AttemptState.SUCCEEDED else 1, result, error, retryable
            )
        )

    def task(self, workflow_id: str, name: str) -> Task:
        return self.machine.tasks[self.machine.by_name[(workflow_id, name)]]

    def attempt_of(self, workflow_id: str, name: str) -> str:
        attempt_id = self.task(workflow_id, name).current_attempt_id
        assert attempt_id is not None, f"task {name} has no attempt"
        return attempt_id


@pytest.fixture
def make_sim() -> Iterator[Callable[..., Sim]]:
    """A factory of simulations; every machine made is validated at teardown."""
    made: list[Sim] = []

    def make(**kwargs: Any) -> Sim:
        sim = Sim(**kwargs)
        made.append(sim)
        return sim

    yield make
    for sim in made:
        sim.machine.validate()


@pytest.fixture
def sim(make_sim: Callable[..., Sim]) -> Sim:
    return make_sim()
