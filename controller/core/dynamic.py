"""Dynamic tasks (issue 10 §8): tasks a running task spawns, fan-ins over them, and ``map:``.

**Spawn.** A running attempt reports tasks to add to its own workflow (``ctx.spawn``). They are
validated at the edge with the submission's models (:class:`SpawnedTask`), then here against the
workflow: names, dependencies, bounds. A child is named ``SPAWNER/NAME`` and spawning is
idempotent on that name, so a retried spawner that spawns the same children adds nothing. A bad
spawn fails the spawner for good (``failure_reason`` ``spawn_invalid``, the field path in its error)
and stops its attempt: a spawn cannot be answered synchronously, and a task whose graph is wrong
should not carry on as if it were right.

**Fan-in.** A task that depends on ``X/*`` waits for X and for every child X spawns: each spawn
adds the new children to the dependencies of X's group waiters (X's children all arrive before X's
own Finished report, so the set is complete once X completes). Its inputs hold each child's result.

**Map.** A task with ``map: UPSTREAM`` does not run itself: when it becomes ready it is expanded
into one child per item of UPSTREAM's result (a JSON list), ``NAME/0`` ... ``NAME/N-1``, copies of
it that receive their item as ``inputs["item"]`` (plus its other inputs). It then waits for them and
completes with the list of their results, in item order; its dependents get that list.

All of it is durable through the task records (``Task.dynamic``, the extended dependencies and the
children themselves), written by the tick's change batch; nothing here is memory only except the
indexes :meth:`DynamicBook.track` rebuilds at restore.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from corral.controller.core.model import AttemptState, Task, TaskState, WorkflowState

if TYPE_CHECKING:
    from corral.controller.core.attempt_ops import AttemptOps
    from corral.controller.core.events import AttemptSpawn
    from corral.controller.core.state import MachineState
    from corral.controller.core.workflow_ops import WorkflowOps

__all__ = [
    "MAX_CHILDREN",
    "MAX_MAP_ITEMS",
    "MAX_WORKFLOW_TASKS",
    "Dynamic",
    "DynamicBook",
    "SpawnedTask",
    "decode_dynamic",
    "encode_dynamic",
    "expand_or_gather",
    "map_inputs",
    "spawned",
]

T = TaskState

#: Children one task may spawn (over all its attempts), and items a map may fan out over.
MAX_CHILDREN = 1000
MAX_MAP_ITEMS = 1000
#: A workflow grown by spawns and maps stays within the submission limit (spec.Limits.max_tasks).
MAX_WORKFLOW_TASKS = 1_000_000  # == Limits.max_tasks (a unit test ties them; the core imports no spec)


@dataclass(slots=True)
class Dynamic:
    """A task's part in dynamic tasks; ``Task.dynamic`` is None for every other task."""

    spawned_by: str = ""  # the spawner's (or map task's) id
    map_over: str = ""  # a map task: the upstream task id whose list result it fans out over
    map_item: bytes | None = None  # a map child: its item (JSON), delivered as inputs["item"]
    group_deps: tuple[str, ...] = ()  # spawner ids whose children it also waits for ("X/*")
    expanded: bool = False  # a map task: its children exist


def encode_dynamic(d: Dynamic | None) -> str:
    """The ``tasks.dynamic`` column ("" for ordinary tasks)."""
    if d is None:
        return ""
    data: dict[str, object] = {}
    if d.spawned_by:
        data["s"] = d.spawned_by
    if d.map_over:
        data["m"] = d.map_over
    if d.map_item is not None:
        data["i"] = d.map_item.decode()
    if d.group_deps:
        data["g"] = list(d.group_deps)
    if d.expanded:
        data["e"] = 1
    return json.dumps(data, separators=(",", ":"))


def decode_dynamic(text: str) -> Dynamic | None:
    if not text:
        return None
    data = json.loads(text)
    item = data.get("i")
    return Dynamic(
        data.get("s", ""),
        data.get("m", ""),
        None if item is None else item.encode(),
        tuple(data.get("g", ())),
        bool(data.get("e")),
    )


@dataclass(slots=True)
class DynamicBook:
    """Indexes rebuilt from the task records: group waiters and children counts per spawner."""

    waiters: dict[str, list[str]] = field(default_factory=dict)  # spawner id -> "X/*" task ids
    children: dict[str, int] = field(default_factory=dict)  # spawner id -> children spawned

    def __bool__(self) -> bool:
        return bool(self.waiters or self.children)

    def track(self, task: Task) -> None:
        d = task.dynamic
        if d is None:
            return
        for spawner in d.group_deps:
            self.waiters.setdefault(spawner, []).append(task.id)
        if d.spawned_by:
            self.children[d.spawned_by] = self.children.get(d.spawned_by, 0) + 1


@dataclass(frozen=True, slots=True)
class SpawnedTask:
    """One child as the edge validated it: a record without workflow, namespace or ids of
    dependencies (``record.dependencies`` holds the names as given)."""

    record: Task
    priority_given: bool


def _reject(machine: AttemptOps, task: Task, attempt_id: str, error: str, now: float) -> None:
    """A bad spawn fails the spawner for good and stops its attempt."""
    from corral.controller.core.events import CancelAttempts  # events imports this module

    attempt = machine.attempts[attempt_id]
    if not attempt.pulled:
        machine.emit(CancelAttempts(attempt.agent_id, [attempt.id], True, 0.0))
    task.failure_reason = "spawn_invalid"
    machine.fail_attempt(attempt, task, AttemptState.FAILED, f"invalid spawn: {error}", False, now)
    machine.finish_if_done(machine.workflows[task.workflow_id], now)


def spawned(machine: AttemptOps, report: AttemptSpawn, now: float) -> bool:
    """Add the tasks a running attempt spawned; False when refused (not its owner, or invalid)."""
    attempt = machine.owned_active(report.reporter, report.attempt_id)
    if attempt is None:
        return False
    spawner = machine.tasks[attempt.task_id]
    workflow = machine.workflows[spawner.workflow_id]
    if workflow.state.terminal or workflow.state is WorkflowState.CANCELLING:
        return False
    if report.error:
        _reject(machine, spawner, attempt.id, report.error, now)
        return False
    new: list[Task] = []
    names: dict[str, str] = {}  # full name -> id, of this batch
    problem = ""
    book = machine.dynamic
    for i, child in enumerate(report.tasks):
        full = f"{spawner.name}/{child.record.name}"
        existing = machine.by_name.get((workflow.id, full))
        if existing is not None:
            other = machine.tasks[existing].dynamic
            if other is not None and other.spawned_by == spawner.id:
                continue  # spawned before (an earlier attempt): idempotent
            problem = f"spawn[{i}].name: a task named {full!r} already exists"
            break
        if full in names:
            problem = f"spawn[{i}].name: duplicate task name {child.record.name!r}"
            break
        deps: list[str] = []
        for j, dep in enumerate(child.record.dependencies):
            found = names.get(f"{spawner.name}/{dep}") or machine.by_name.get((workflow.id, f"{spawner.name}/{dep}"))
            found = found or names.get(dep) or machine.by_name.get((workflow.id, dep))
            if found is None:
                problem = f"spawn[{i}].dependencies[{j}]: unknown task {dep!r}"
                break
            deps.append(found)
        if problem:
            break
        names[full] = child.record.id
        record = _with_dynamic(
            replace(
                child.record,
                workflow_id=workflow.id,
                name=full,
                namespace=workflow.namespace,
                dependencies=tuple(dict.fromkeys(deps)),
                priority=child.record.priority if child.priority_given else spawner.priority,
            ),
            Dynamic(spawned_by=spawner.id),
        )
        new.append(record)
    count = book.children.get(spawner.id, 0) + len(new)
    if not problem and count > MAX_CHILDREN:
        problem = f"spawn: {count} children of {spawner.name!r}, over the limit of {MAX_CHILDREN}"
    if not problem and len(workflow.task_ids) + len(new) > MAX_WORKFLOW_TASKS:
        problem = f"spawn: the workflow would hold over {MAX_WORKFLOW_TASKS} tasks"
    if problem:
        _reject(machine, spawner, attempt.id, problem, now)
        return False
    if new:
        add_children(machine, spawner, new, now)
        machine.record(workflow, now, "spawned", spawner, message=f"{len(new)} tasks", attempt_id=attempt.id)
    return True


def add_children(machine: WorkflowOps, parent: Task, children: list[Task], now: float) -> None:
    """Add new tasks to the parent's workflow: indexes, group waiters, then their first state."""
    workflow = machine.workflows[parent.workflow_id]
    waiters = machine.dynamic.waiters.get(parent.id, ())
    for child in children:
        child.index = len(workflow.task_ids)
        child.created_at = now
        workflow.task_ids.append(child.id)
        machine.track_task(child)  # indexes it in machine.dynamic too
        machine.touch_task(child)
        for waiter_id in waiters:  # fan-ins over "PARENT/*" wait for this child too
            waiter = machine.tasks[waiter_id]
            if waiter.state is T.PENDING:
                waiter.dependencies = (*waiter.dependencies, child.id)
                machine.dependents.add(child.id, waiter_id)
                machine.unfinished_deps[waiter_id] += 1
                machine.touch_task(waiter)
    machine.touch_workflow(workflow)
    machine.count_unfinished(c.id for c in children)
    running = workflow.state in (WorkflowState.RUNNING, WorkflowState.PAUSED)
    for child in children:
        deps = [machine.tasks[d] for d in child.dependencies]
        failed = next((d for d in deps if d.state.terminal and d.state is not T.COMPLETED), None)
        if failed is not None:
            message = f"upstream task {failed.name!r} {failed.state}"
            machine.set_task_state(child, T.SKIPPED, now, message)
            child.finished_at, child.error = now, message
        elif machine.unfinished_deps[child.id] == 0 and running:
            machine.make_ready(child, now)


def expand_or_gather(machine: WorkflowOps, task: Task, now: float) -> None:
    """A map task became ready: fan out over its upstream's list, or (children done) complete."""
    d = task.dynamic
    assert d is not None
    if d.expanded:
        children = [machine.tasks[c] for c in task.dependencies if _parent(machine.tasks[c]) == task.id]
        task.result = b"[" + b",".join(c.result or b"null" for c in children) + b"]"
        machine.set_task_state(task, T.READY, now)
        task.error, task.finished_at = "", now
        machine.set_task_state(task, T.COMPLETED, now, f"{len(children)} items")
        machine.release_dependents(task, now)
        return
    upstream = machine.tasks[d.map_over]
    try:
        items = json.loads(upstream.result or b"null")
    except ValueError:
        items = None
    problem = ""
    if not isinstance(items, list):
        problem = f"map: the result of {upstream.name!r} is not a list"
    elif len(items) > MAX_MAP_ITEMS:
        problem = f"map: {len(items)} items in the result of {upstream.name!r}, over the limit of {MAX_MAP_ITEMS}"
    if problem:
        machine.set_task_state(task, T.READY, now)
        task.error, task.finished_at, task.failure_reason = problem, now, "map_invalid"
        machine.set_task_state(task, T.FAILED, now, problem)
        machine.skip_descendants(task, now)
        return
    d.expanded = True
    ids = _child_ids(task.id, len(items))
    children = [
        _with_dynamic(
            replace(
                task,
                id=ids[i],
                name=f"{task.name}/{i}",
                # No dependencies of their own (theirs are all complete): they get the map task's
                # inputs (see map_inputs). Listing them would also grow the dependents list that the
                # completion of the map's upstream is walking right now.
                dependencies=(),
                state=T.PENDING,
            ),
            Dynamic(spawned_by=task.id, map_item=json.dumps(item, separators=(",", ":")).encode()),
        )
        for i, item in enumerate(items)
    ]
    add_children(machine, task, children, now)
    task.dependencies = (*task.dependencies, *ids)
    for child_id in ids:
        machine.dependents.add(child_id, task.id)
    machine.dependents.seal()
    machine.unfinished_deps[task.id] = sum(1 for c in ids if machine.tasks[c].state is not T.COMPLETED)
    machine.touch_task(task)
    machine.record(machine.workflows[task.workflow_id], now, "mapped", task, message=f"{len(items)} items")
    if not items:
        expand_or_gather(machine, task, now)


def map_inputs(machine: MachineState, task: Task, item: bytes) -> dict[str, bytes]:
    """A map child's inputs: its map task's (its dependencies' results, not its children's) plus the item."""
    assert task.dynamic is not None
    parent = machine.tasks[task.dynamic.spawned_by]
    tasks = machine.tasks
    inputs = {tasks[d].name: tasks[d].result or b"null" for d in parent.dependencies if _parent(tasks[d]) != parent.id}
    inputs["item"] = item
    return inputs


def _parent(task: Task) -> str:
    return task.dynamic.spawned_by if task.dynamic is not None else ""


def _child_ids(parent_id: str, count: int) -> list[str]:
    # Derived from the parent's id (random already): deterministic, so the pure core needs no RNG.
    return [f"{parent_id}.{i}" for i in range(count)]


def _with_dynamic(record: Task, dynamic: Dynamic) -> Task:
    """``record`` with its dynamic part set (a rare field, so not a keyword of ``replace()``)."""
    record.dynamic = dynamic
    return record
