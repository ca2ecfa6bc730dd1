"""Admission: a workflow message validated and turned into domain records with fresh ids.

:func:`admit_workflow` validates the message task by task with the :mod:`spec` models and turns
each task into its record at once, so a 100k-task submission never holds 100k pydantic models (nor
their dicts) at the same time. Every RPC that takes a workflow or a task goes through it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from corral.controller.core.access import DEFAULT_NAMESPACE
from corral.controller.core.analysis import ExecutionPlan, analyze
from corral.controller.core.deadlines import parse_deadline
from corral.controller.core.dynamic import Dynamic
from corral.controller.core.gangs import gang_problems
from corral.controller.core.graph import graph_problems
from corral.controller.core.model import Resources, Task, TaskType, Workflow
from corral.controller.core.params import MARKER
from corral.controller.core.schedules import scheduled_fields
from corral.controller.errors import FieldViolation, InvalidArgument
from corral.controller.rpc.cache_wire import declared_params, param_values, task_cache, with_params
from corral.controller.rpc.plain_tasks import PlainTask, plain_task, plain_template
from corral.controller.rpc.wire_fallbacks import rules_of
from corral.controller.rpc.wire_spec import decode_json_field, task_mapping
from corral.controller.spec import Limits, TaskSpec, WorkflowHeader, plain_dependencies, violations_of
from corral.v1 import types_pb2 as pb

__all__ = ["Admitted", "TaskMessages", "admit_workflow"]

_TYPES = {t.value: t for t in TaskType}
_NO_CONSTRAINTS: Mapping[str, str] = {}
_CHECKED = {"payload_checked": True}


def _task_ids(count: int) -> list[str]:
    # Random ids, so any short prefix tells tasks apart; drawn in one call, which matters for
    # workflows of 100k tasks.
    digits = os.urandom(10 * count).hex()
    return ["t-" + digits[20 * i : 20 * i + 20] for i in range(count)]


class _Records:
    """Builds task records, sharing one Resources object among tasks that need the same."""

    def __init__(self, workflow_id: str, default_priority: int | None, namespace: str) -> None:
        self.workflow_id = workflow_id
        self.namespace = namespace
        self.default_priority = 50 if default_priority is None else default_priority
        self._resources: dict[tuple[float, int, int, int, int], Resources] = {}
        self._plain: dict[str, dict[str, Any]] = {}  # agent type -> a plain task's fields

    def task(self, spec: TaskSpec, task_id: str, index: int, payload: bytes) -> Task:
        dynamic = _dynamic(spec) if spec.map or any(d.endswith("/*") for d in spec.dependencies) else None
        # Dependencies are names for now; see _resolve.
        dependencies = tuple(plain_dependencies(spec.dependencies))
        return self._record(spec.name, task_id, index, payload, dependencies, self._fields(spec), dynamic)

    def plain_task(self, plain: PlainTask, task_id: str, index: int, payload: bytes) -> Task:
        """The record of a task the fast path accepted: its agent type's defaults, computed once."""
        fields = self._plain.get(plain.agent_type)
        if fields is None:
            fields = self._plain[plain.agent_type] = self._fields(plain_template(plain.agent_type))
        if plain.estimated_duration:
            fields = {**fields, "estimated_duration_s": plain.estimated_duration}
        return self._record(plain.name, task_id, index, payload, plain.dependencies, fields)

    def _record(
        self,
        name: str,
        task_id: str,
        index: int,
        payload: bytes,
        dependencies: tuple[str, ...],
        fields: dict[str, Any],
        dynamic: Dynamic | None = None,
    ) -> Task:
        return Task(
            id=task_id,
            workflow_id=self.workflow_id,
            name=name,
            index=index,
            payload=payload,
            dependencies=dependencies,
            dynamic=dynamic,
            **fields,
        )

    def _fields(self, spec: TaskSpec) -> dict[str, Any]:
        """The record's fields that come from the spec, but its name, payload and dependencies."""
        res = spec.resources
        key = (res.cpu_cores, res.memory_mb, res.disk_mb, res.network_bandwidth_mbps, res.gpu_count)
        resources = None if res.custom_resources else self._resources.get(key)
        if resources is None:
            resources = Resources(*key, custom=dict(res.custom_resources))
            if not res.custom_resources:
                self._resources[key] = resources
        return {
            # Interned: the same few words on every task (one string each, not one per task).
            "agent_type": sys.intern(spec.agent_type),
            "type": _TYPES[spec.type],
            "resources": resources,
            "priority": spec.priority if spec.priority is not None else self.default_priority,
            "timeout_s": spec.timeout,
            "max_retries": spec.retries,
            "retry_backoff_s": spec.retry_backoff,
            "constraints": spec.equality_constraints() if spec.constraints else _NO_CONSTRAINTS,
            "estimated_duration_s": spec.estimated_duration,
            "namespace": self.namespace,
            "on_disconnect": sys.intern(spec.on_disconnect),
            "max_disconnect_s": spec.max_disconnect,
            "max_agent_losses": spec.max_agent_losses,
            "constraint_exprs": spec.label_expressions() if spec.constraints else (),
            "spread": sys.intern(spec.spread) if spec.spread else "",
            "affinity": dict(spec.affinity) if spec.affinity else _NO_CONSTRAINTS,
            **_deadline(spec.deadline),
            "preemptible": spec.preemptible,
            "max_preemptions": spec.max_preemptions,
            "gang": sys.intern(spec.gang) if spec.gang else "",
            "compensate": _compensate(spec),
            "rules": rules_of(spec),
            "cache": None if spec.cache is None else task_cache(spec.cache),
        }


def _analyzed(names: list[str], dependencies: list[tuple[str, ...]], durations: list[float]) -> ExecutionPlan:
    """The plan of a valid graph, or InvalidArgument naming every structural problem of it.

    The plan's own walk (``Dag(strict=True)``) refuses duplicate names, unknown dependencies and
    cycles, but not a dependency listed twice. ``graph_problems``, which words each problem with
    its field path, runs only when the walk failed or a task lists a dependency twice: a valid
    100k-task graph is walked once, not twice (a third of a second).
    """
    try:
        plan: ExecutionPlan | None = analyze(names, dependencies, durations)
    except ValueError:
        plan = None
    if plan is None or any(len(deps) > 1 and len(set(deps)) != len(deps) for deps in dependencies):
        problems = graph_problems(names, dependencies)
        if problems:
            raise InvalidArgument(problems)
    if plan is None:  # the walk refused what graph_problems accepts: a bug in one of them
        raise AssertionError("the dependency graph was refused by the plan but has no problem")
    return plan


def _compensate(spec: TaskSpec) -> bytes:
    """A task's compensation spec as stored (JSON), b"" without one."""
    if spec.compensate is None:
        return b""
    return json.dumps(spec.compensate.model_dump(exclude_defaults=True), separators=(",", ":")).encode()


def _deadline(text: str | None) -> dict[str, Any]:
    """The model's deadline fields of a validated deadline (made absolute by the core at submit)."""
    if text is None:
        return {}
    seconds, relative = parse_deadline(text)
    return {"deadline": seconds, "deadline_relative": relative}


def _dynamic(spec: TaskSpec) -> Dynamic:
    """Issue 10: a map task, or a fan-in over spawned tasks ("X/*"); names until :func:`_resolve`."""
    groups = tuple(d[:-2] for d in spec.dependencies if d.endswith("/*"))
    return Dynamic(map_over=spec.map or "", group_deps=groups)


def _resolve(tasks: list[Task]) -> None:
    """Replace dependency names by task ids (the graph was checked: every name exists)."""
    ids = {task.name: task.id for task in tasks}
    for task in tasks:
        if task.dependencies:
            task.dependencies = tuple([ids[name] for name in task.dependencies])
        if task.dynamic is not None:
            task.dynamic.group_deps = tuple(ids[name] for name in task.dynamic.group_deps)
            task.dynamic.map_over = ids[task.dynamic.map_over] if task.dynamic.map_over else ""


def _workflow(
    workflow_id: str, header: WorkflowHeader, tasks: list[Task], idempotency_key: str | None, standalone: bool
) -> Workflow:
    return Workflow(
        id=workflow_id,
        name=header.name,
        task_ids=[t.id for t in tasks],
        metadata=json.dumps(header.metadata, separators=(",", ":")).encode(),
        labels=dict(header.labels),
        idempotency_key=idempotency_key or None,
        standalone=standalone,
        namespace=header.namespace or DEFAULT_NAMESPACE,
        max_agent_losses=header.max_agent_losses,
        deadline_policy=header.deadline_policy,
        **_deadline(header.deadline),
        max_parallel=header.max_parallel,
        on_failure=header.on_failure,
        **scheduled_fields(header.scheduled_at),
    )


@dataclass(frozen=True, slots=True)
class Admitted:
    """A submitted workflow, validated and turned into records, with its execution plan."""

    workflow: Workflow
    tasks: list[Task]
    plan: ExecutionPlan


def _header(message: pb.WorkflowSpec, violations: list[FieldViolation]) -> WorkflowHeader | None:
    data: dict[str, Any] = {"name": message.name, "labels": dict(message.labels)}
    try:
        metadata = decode_json_field(message.metadata_json, "metadata", Limits.max_metadata_bytes, "max_metadata_bytes")
        data["metadata"] = {} if metadata is None else metadata
    except InvalidArgument as exc:
        violations.extend(exc.violations)
    if message.HasField("priority"):
        data["priority"] = message.priority
    if message.namespace:
        data["namespace"] = message.namespace
    if message.HasField("max_agent_losses"):
        data["max_agent_losses"] = message.max_agent_losses
    if message.deadline:
        data["deadline"] = message.deadline
    if message.deadline_policy:
        data["deadline_policy"] = message.deadline_policy
    if message.HasField("max_parallel"):
        data["max_parallel"] = message.max_parallel
    if message.on_failure:
        data["on_failure"] = message.on_failure
    if message.params_json:
        declared_params(message, data, violations)
    if message.scheduled_at:
        data["scheduled_at"] = message.scheduled_at
    try:
        return WorkflowHeader.model_validate(data)
    except ValidationError as exc:
        violations.extend(violations_of(exc))
        return None


class TaskMessages(Protocol):
    """A workflow's task messages, counted and read once in order (``WorkflowSpec.tasks`` is one)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[pb.TaskSpec]: ...


def admit_workflow(
    message: pb.WorkflowSpec,
    make_id: Callable[[], str],
    *,
    idempotency_key: str | None = None,
    standalone: bool = False,
    params: Mapping[str, str] | None = None,
    task_messages: TaskMessages | None = None,
) -> Admitted:
    """Validate a workflow message and build its records; InvalidArgument lists every problem.

    The rules are the pydantic models' of :mod:`spec` (one source of truth), applied to the header
    and to each task in turn; paths are the file format's (``tasks[3].timeout``). ``task_messages``,
    when given, stands for ``message.tasks`` (a chunked upload's tasks, decoded chunk by chunk).
    """
    messages: TaskMessages = message.tasks if task_messages is None else task_messages
    count = len(messages)
    if count > Limits.max_tasks:
        raise InvalidArgument.field("tasks", f"{count} tasks, over max_tasks={Limits.max_tasks}")
    violations: list[FieldViolation] = []
    if count == 0:
        violations.append(FieldViolation("tasks", "a workflow needs at least one task"))
    header = _header(message, violations)
    values = param_values(header, params) if not violations else {}
    workflow_id = "wf-" + make_id()
    records = _Records(
        workflow_id, header.priority if header else None, (header.namespace if header else None) or DEFAULT_NAMESPACE
    )
    ids = _task_ids(count)
    tasks: list[Task] = []
    valid_names: set[str] = set()  # words found valid names so far (plain_task's shortcut)
    for index, task_message in enumerate(messages):
        path = f"tasks[{index}]"
        payload = task_message.payload_json or b"{}"
        plain = plain_task(task_message, payload, path, valid_names)  # most tasks: no model needed
        if plain is not None:
            if not violations:
                tasks.append(records.plain_task(plain, ids[index], index, payload))
            continue
        try:
            mapping = task_mapping(task_message, path)
            if MARKER in payload and header is not None:  # ${params.x}: substituted, then validated
                payload = with_params(mapping, values, path)
            spec = TaskSpec.model_validate(mapping, context=_CHECKED)
        except InvalidArgument as exc:
            violations.extend(exc.violations)
            continue
        except ValidationError as exc:
            violations.extend(violations_of(exc, path))
            continue
        if not violations:  # once something is wrong, only look for more problems
            tasks.append(records.task(spec, ids[index], index, payload))
    if violations:
        raise InvalidArgument(violations)
    assert header is not None
    names = [t.name for t in tasks]
    dependencies = [t.dependencies for t in tasks]
    plan = _analyzed(names, dependencies, [t.estimated_duration_s for t in tasks])
    if any(t.gang for t in tasks):
        problems = gang_problems(tasks)
        if problems:
            raise InvalidArgument(problems)
    _resolve(tasks)
    workflow = _workflow(workflow_id, header, tasks, idempotency_key, standalone)
    if values:
        workflow.params = json.dumps(values, separators=(",", ":")).encode()
    return Admitted(workflow, tasks, plan)
