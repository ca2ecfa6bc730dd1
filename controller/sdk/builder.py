"""Build workflows in Python: the same :class:`~corral.controller.spec.WorkflowSpec` a YAML file gives.

::

    wf = Workflow("etl")
    extract = wf.shell("extract", command=["./extract.sh"], timeout=600)
    clean = wf.python("clean", "etl.steps:clean", kwargs={"day": "2024-05-01"})
    load = wf.shell("load", shell="psql -f load.sql", resources={"memory_mb": 512})
    extract >> clean >> load
    spec = wf.build()          # frozen, validated; the builder refuses changes afterwards

Every call validates at once with the rules of :mod:`corral.controller.spec` (one source of
truth): a bad field, a duplicate name, an unknown dependency or a cycle raises
:class:`~corral.controller.sdk.errors.InvalidArgumentError` naming the field, before anything is
sent. ``a >> b`` makes ``b`` depend on ``a``; either side may be a task, a list of tasks, or a
segment returned by :meth:`Workflow.include`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Unpack

import yaml
from pydantic import ValidationError

from corral.controller.errors import InvalidArgument
from corral.controller.sdk.builder_parts import Deadline, TaskOptions, _deadline, _from_domain, _from_pydantic, _seconds
from corral.controller.sdk.errors import FailedPreconditionError, InvalidArgumentError, Violation
from corral.controller.spec import (
    ResourceSpec,
    TaskSpec,
    TaskTypeName,
    WorkflowSpec,
    load_workflow_file,
    parse_workflow,
    plain_dependencies,
)

__all__ = [
    "Segment",
    "TaskHandle",
    "TaskOptions",
    "Workflow",
    "WorkflowLike",
    "as_spec",
    "spec_to_yaml",
]


class TaskHandle:
    """A task added to a :class:`Workflow`; wire it with ``>>`` / ``<<`` or :meth:`depends_on`."""

    __slots__ = ("_workflow", "name")

    def __init__(self, workflow: Workflow, name: str) -> None:
        self._workflow = workflow
        self.name = name

    @property
    def spec(self) -> TaskSpec:
        """The task as it stands now, dependencies included."""
        return self._workflow._tasks[self.name]

    @property
    def dependencies(self) -> tuple[str, ...]:
        return tuple(self.spec.dependencies)

    def depends_on(self, *upstream: TaskHandle | Segment | str) -> TaskHandle:
        """Make this task wait for ``upstream``; returns ``self`` for chaining."""
        self._workflow._link([self._workflow._resolve(u) for u in upstream], self)
        return self

    def _entries(self) -> list[TaskHandle]:
        return [self]

    def _exits(self) -> list[TaskHandle]:
        return [self]

    def __rshift__(self, downstream: Node) -> Node:
        self._workflow._link(self, downstream)
        return downstream

    def __rrshift__(self, upstream: Node) -> TaskHandle:
        self._workflow._link(upstream, self)
        return self

    def __lshift__(self, upstream: Node) -> Node:
        self._workflow._link(upstream, self)
        return upstream

    def __rlshift__(self, downstream: Node) -> TaskHandle:
        self._workflow._link(self, downstream)
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskHandle) and other._workflow is self._workflow and other.name == self.name

    def __hash__(self) -> int:
        return hash((id(self._workflow), self.name))

    def __repr__(self) -> str:
        return f"TaskHandle({self.name!r})"


class Segment:
    """Tasks added together by :meth:`Workflow.include`.

    As the right side of ``>>`` it stands for its roots; as the left side, for its leaves.
    """

    __slots__ = ("_workflow", "leaves", "roots", "tasks")

    def __init__(
        self, workflow: Workflow, tasks: Sequence[TaskHandle], roots: Sequence[TaskHandle], leaves: Sequence[TaskHandle]
    ) -> None:
        self._workflow = workflow
        self.tasks = tuple(tasks)
        self.roots = tuple(roots)
        self.leaves = tuple(leaves)

    def _entries(self) -> list[TaskHandle]:
        return list(self.roots)

    def _exits(self) -> list[TaskHandle]:
        return list(self.leaves)

    def __getitem__(self, name: str) -> TaskHandle:
        for task in self.tasks:
            if task.name == name or task.name.endswith("." + name):
                return task
        raise KeyError(name)

    def __iter__(self) -> Iterator[TaskHandle]:
        return iter(self.tasks)

    def __rshift__(self, downstream: Node) -> Node:
        self._workflow._link(self, downstream)
        return downstream

    def __rrshift__(self, upstream: Node) -> Segment:
        self._workflow._link(upstream, self)
        return self

    def __lshift__(self, upstream: Node) -> Node:
        self._workflow._link(upstream, self)
        return upstream

    def __rlshift__(self, downstream: Node) -> Segment:
        self._workflow._link(self, downstream)
        return self

    def __repr__(self) -> str:
        return f"Segment(roots={[t.name for t in self.roots]}, leaves={[t.name for t in self.leaves]})"


Node = TaskHandle | Segment | Sequence[TaskHandle | Segment]


class Workflow:
    """A workflow under construction. ``build()`` returns the validated, frozen ``WorkflowSpec``."""

    def __init__(
        self,
        name: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
        priority: int | None = None,
        max_agent_losses: int | None = None,
        deadline: Deadline = None,
        deadline_policy: Literal["reject", "warn", "best_effort"] = "warn",
        on_failure: Literal["fail", "compensate", "pause"] = "fail",
        params: Mapping[str, Any] | None = None,
        scheduled_at: Deadline = None,
    ) -> None:
        self._name = name
        self._on_failure = on_failure
        self._params = dict(params or {})  # name -> default (None: required); ${params.NAME} in payloads
        self._deadline = _deadline(deadline)
        self._deadline_policy = deadline_policy
        self._scheduled_at = _deadline(scheduled_at)  # no task starts before (same forms as a deadline)
        self._metadata = dict(metadata or {})
        self._labels = dict(labels or {})
        self._priority = priority
        self._max_agent_losses = max_agent_losses
        self._tasks: dict[str, TaskSpec] = {}
        self._built: WorkflowSpec | None = None
        self._check_header()

    # -- reading -------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def tasks(self) -> tuple[TaskHandle, ...]:
        """Handles of every task, in the order they were added."""
        return tuple(TaskHandle(self, name) for name in self._tasks)

    @property
    def built(self) -> bool:
        """True once :meth:`build` was called; the builder then refuses changes."""
        return self._built is not None

    def __getitem__(self, name: str) -> TaskHandle:
        if name not in self._tasks:
            raise KeyError(name)
        return TaskHandle(self, name)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def __repr__(self) -> str:
        return f"Workflow({self._name!r}, tasks={len(self._tasks)}{', built' if self.built else ''})"

    # -- adding tasks --------------------------------------------------------------------------

    def task(
        self,
        name: str,
        *,
        agent_type: str = "shell",
        payload: Mapping[str, Any] | None = None,
        type: TaskTypeName = "compute",
        resources: ResourceSpec | Mapping[str, Any] | None = None,
        priority: int | None = None,
        timeout: float | timedelta | None = None,
        retries: int = 0,
        retry_backoff: float | timedelta = 1.0,
        depends_on: Iterable[TaskHandle | Segment | str] = (),
        constraints: Mapping[str, str | Mapping[str, Any]] | None = None,
        estimated_duration: float | timedelta = 0.0,
        on_disconnect: Literal["stop", "keep"] = "stop",
        max_disconnect: float | timedelta | str | None = None,
        max_agent_losses: int | None = None,
        spread: str | None = None,
        affinity: Mapping[str, str] | None = None,
        deadline: Deadline = None,
        map_over: TaskHandle | str | None = None,
        after_spawned: Iterable[TaskHandle | str] = (),
        compensate: Mapping[str, Any] | None = None,
        fallback: Mapping[str, Any] | None = None,
        allow_failure: bool = False,
        min_success: int | None = None,
        approval: Mapping[str, Any] | None = None,
        cache: bool | Mapping[str, Any] | None = None,
        **payload_fields: Any,
    ) -> TaskHandle:
        """Add a task run by agents of ``agent_type``; extra keywords go into its payload.

        ``wf.task("x", agent_type="shell", command=["echo", "hi"])`` equals
        ``wf.task("x", payload={"command": ["echo", "hi"]})``.

        ``constraints`` maps an agent label to a value it must equal, or to an expression:
        ``{"zone": {"in": ["a", "b"]}, "gpu": {"exists": True}}``. ``spread="zone"`` prefers agents
        whose zone runs the fewest of this workflow's tasks (``"agent"``: per agent); ``affinity``
        names labels preferred but not required.

        Dynamic tasks (issue 10): ``map_over=items`` runs one copy per item of ``items``' list result
        (``inputs["item"]``; it becomes a dependency), its result the list of theirs;
        ``after_spawned=[x]`` waits for ``x`` and every task ``x`` spawns (``"x/*"``).
        ``compensate={"payload": {...}, "retries": 2}`` undoes the task when the workflow fails or is
        cancelled (with ``on_failure="compensate"``). ``fallback`` (a payload run once every retry
        failed), ``allow_failure``, ``min_success`` (checked at build: wiring may come later) and
        ``approval`` (``{"timeout": "1h", "message": ...}``, no payload) are issue 10's rules.
        ``cache=True`` (or ``{"ttl": "1d", "key": ..., "version": ...}``) completes it at once with a
        cached result of the same work.
        """
        self._check_open()
        index = len(self._tasks)
        prefix = f"tasks[{index}]"
        upstream: list[str] = []
        for dep in depends_on:
            upstream.extend(t.name for t in self._resolve(dep)._exits())
        mapped = map_over.name if isinstance(map_over, TaskHandle) else map_over
        if mapped is not None and mapped not in upstream:
            upstream.append(mapped)
        upstream.extend(f"{t.name if isinstance(t, TaskHandle) else t}/*" for t in after_spawned)
        data: dict[str, Any] = {
            "name": name,
            "agent_type": agent_type,
            "type": type,
            "payload": {**(payload or {}), **payload_fields},
            "resources": resources.model_dump() if isinstance(resources, ResourceSpec) else dict(resources or {}),
            "priority": priority,
            "timeout": _seconds(timeout),
            "retries": retries,
            "retry_backoff": _seconds(retry_backoff),
            "dependencies": upstream,
            "constraints": {k: v if isinstance(v, str) else dict(v) for k, v in (constraints or {}).items()},
            "spread": spread,
            "affinity": dict(affinity or {}),
            "estimated_duration": _seconds(estimated_duration),
            "on_disconnect": on_disconnect,
            "max_disconnect": max_disconnect if isinstance(max_disconnect, str) else _seconds(max_disconnect),
            "max_agent_losses": max_agent_losses,
            "deadline": _deadline(deadline),
            "map": mapped,
            "fallback": None if fallback is None else dict(fallback),
            "allow_failure": allow_failure,
            "approval": None if approval is None else dict(approval),
            "cache": dict(cache) if isinstance(cache, Mapping) else cache,
        }
        if compensate is not None:
            data["compensate"] = dict(compensate)
        try:
            spec = TaskSpec.model_validate(data)
            if min_success is not None:  # its dependencies may be wired later: build() checks it
                spec = spec.model_copy(update={"min_success": min_success})
        except ValidationError as exc:
            violations = _from_pydantic(exc, prefix)
            raise InvalidArgumentError(f"task {name!r}: " + "; ".join(str(v) for v in violations), violations) from None
        self._check_new(spec, prefix)
        self._tasks[spec.name] = spec
        return TaskHandle(self, spec.name)

    def shell(
        self,
        name: str,
        command: Sequence[str] | str | None = None,
        *,
        shell: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        **options: Unpack[TaskOptions],
    ) -> TaskHandle:
        """Add a ``shell`` task: an argv list (``command``) or a shell string (``shell``, or a str command)."""
        payload: dict[str, Any] = {}
        if isinstance(command, str):
            payload["shell"] = command
        elif command is not None:
            payload["command"] = list(command)
        if shell is not None:
            payload["shell"] = shell
        if env:
            payload["env"] = dict(env)
        if cwd is not None:
            payload["cwd"] = cwd
        return self.task(name, agent_type="shell", payload=payload, **options)

    def python(
        self,
        name: str,
        function: str,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[TaskOptions],
    ) -> TaskHandle:
        """Add a ``python`` task calling ``function`` (``"package.module:function"``) in a warm worker."""
        payload: dict[str, Any] = {"function": function}
        if args:
            payload["args"] = list(args)
        if kwargs:
            payload["kwargs"] = dict(kwargs)
        return self.task(name, agent_type="python", payload=payload, **options)

    def include(self, other: Workflow | WorkflowSpec, *, prefix: str | None = None) -> Segment:
        """Copy every task of ``other`` into this workflow, names prefixed ``"{prefix}."``.

        Dependencies inside the segment are rewritten; a task without an explicit priority takes
        ``other``'s default. Returns a :class:`Segment` to wire with ``>>``.
        """
        self._check_open()
        spec = as_spec(other)
        rename = {t.name: f"{prefix}.{t.name}" if prefix else t.name for t in spec.tasks}
        added: list[TaskSpec] = []
        taken = set(self._tasks)
        for offset, task in enumerate(spec.tasks):
            data = task.model_dump()
            data["name"] = rename[task.name]
            data["dependencies"] = [rename[d] for d in task.dependencies]
            data["priority"] = spec.task_priority(task) if spec.priority is not None else task.priority
            path = f"tasks[{len(self._tasks) + offset}]"
            try:
                new = TaskSpec.model_validate(data)
            except ValidationError as exc:
                violations = _from_pydantic(exc, path)
                raise InvalidArgumentError("; ".join(str(v) for v in violations), violations) from None
            if new.name in taken:
                raise InvalidArgumentError(
                    violations=[(f"{path}.name", f"duplicate task name {new.name!r} (use a different prefix)")]
                )
            taken.add(new.name)
            added.append(new)
        for new in added:
            self._tasks[new.name] = new
        has_dependents = {d for t in added for d in t.dependencies}
        handles = [TaskHandle(self, t.name) for t in added]
        roots = [h for h, t in zip(handles, added, strict=True) if not t.dependencies]
        leaves = [h for h in handles if h.name not in has_dependents]
        return Segment(self, handles, roots, leaves)

    # -- finishing -----------------------------------------------------------------------------

    def build(self) -> WorkflowSpec:
        """Validate the whole workflow and freeze the builder; returns the same spec every time."""
        if self._built is None:
            self._built = self._snapshot()
        return self._built

    def to_yaml(self) -> str:
        """The workflow as a workflow file; loading it gives an equal spec."""
        return spec_to_yaml(self._built or self._snapshot())

    @classmethod
    def from_spec(cls, spec: WorkflowSpec) -> Workflow:
        """A builder holding ``spec``'s tasks, open for more."""
        wf = cls(
            spec.name,
            metadata=spec.metadata,
            labels=spec.labels,
            priority=spec.priority,
            max_agent_losses=spec.max_agent_losses,
            deadline=spec.deadline,
            deadline_policy=spec.deadline_policy,
            on_failure=spec.on_failure,
            params=spec.params,
            scheduled_at=spec.scheduled_at,
        )
        wf._tasks = {t.name: t for t in spec.tasks}
        return wf

    @classmethod
    def from_file(cls, path: str | Path) -> Workflow:
        """Load a workflow file (YAML or JSON) into a builder; raises InvalidArgumentError with paths."""
        try:
            spec = load_workflow_file(path)
        except InvalidArgument as exc:
            raise _from_domain(exc) from None
        return cls.from_spec(spec)

    # -- internals -----------------------------------------------------------------------------

    def _snapshot(self) -> WorkflowSpec:
        data = {
            "name": self._name,
            "tasks": [t.model_dump() for t in self._tasks.values()],
            "metadata": self._metadata,
            "labels": self._labels,
            "priority": self._priority,
            "max_agent_losses": self._max_agent_losses,
            "deadline": self._deadline,
            "deadline_policy": self._deadline_policy,
            "on_failure": self._on_failure,
            "params": self._params,
            "scheduled_at": self._scheduled_at,
        }
        try:
            return parse_workflow(data)
        except InvalidArgument as exc:
            raise _from_domain(exc) from None

    def _check_open(self) -> None:
        if self._built is not None:
            raise FailedPreconditionError(f"workflow {self._name!r} was built; it cannot change any more")

    def _check_header(self) -> None:
        # Validate name, metadata, labels and priority with the spec's own rules, using a
        # placeholder task so that only header problems can be reported.
        placeholder = {"name": "placeholder", "payload": {"shell": "true"}}
        data = {
            "name": self._name,
            "tasks": [placeholder],
            "metadata": self._metadata,
            "labels": self._labels,
            "priority": self._priority,
            "max_agent_losses": self._max_agent_losses,
            "deadline": self._deadline,
            "deadline_policy": self._deadline_policy,
            "on_failure": self._on_failure,
            "params": self._params,
            "scheduled_at": self._scheduled_at,
        }
        try:
            WorkflowSpec.model_validate(data)
        except ValidationError as exc:
            violations = _from_pydantic(exc, "")
            violations = [Violation(v.field.lstrip("."), v.description) for v in violations]
            raise InvalidArgumentError(violations=violations) from None

    def _check_new(self, spec: TaskSpec, prefix: str) -> None:
        problems: list[tuple[str, str]] = []
        if spec.name in self._tasks:
            problems.append((f"{prefix}.name", f"duplicate task name {spec.name!r}"))
        for j, dep in enumerate(spec.dependencies):
            dep = dep.removesuffix("/*")  # "x/*": x and the tasks it spawns
            if dep == spec.name:
                problems.append((f"{prefix}.dependencies[{j}]", f"task {dep!r} depends on itself"))
            elif dep not in self._tasks:
                problems.append((f"{prefix}.dependencies[{j}]", f"unknown task {dep!r}"))
        if problems:
            raise InvalidArgumentError(violations=problems)

    def _resolve(self, item: TaskHandle | Segment | str) -> TaskHandle | Segment:
        if isinstance(item, str):
            if item not in self._tasks:
                raise InvalidArgumentError(violations=[("dependencies", f"unknown task {item!r}")])
            return TaskHandle(self, item)
        if item._workflow is not self:
            raise InvalidArgumentError(
                violations=[("dependencies", f"{item!r} belongs to another workflow; use include() to copy it")]
            )
        return item

    def _nodes(self, node: Node) -> list[TaskHandle | Segment]:
        if isinstance(node, TaskHandle | Segment):
            return [self._resolve(node)]
        if isinstance(node, Sequence) and not isinstance(node, str):
            return [self._resolve(n) for n in node]
        raise TypeError(f"cannot wire {type(node).__name__}; use a task, a segment or a list of them")

    def _link(self, upstream: Node, downstream: Node) -> None:
        """Make every entry of ``downstream`` depend on every exit of ``upstream``, atomically."""
        self._check_open()
        sources = [t.name for n in self._nodes(upstream) for t in n._exits()]
        targets = [t.name for n in self._nodes(downstream) for t in n._entries()]
        edges: dict[str, list[str]] = {
            name: plain_dependencies(spec.dependencies) for name, spec in self._tasks.items()
        }
        changed: dict[str, list[str]] = {}
        for target in targets:
            for source in sources:
                if source in edges[target]:
                    continue  # wiring the same edge twice is harmless
                if source == target:
                    raise InvalidArgumentError(violations=[("dependencies", f"task {source!r} depends on itself")])
                path = _path(edges, source, target)
                if path is not None:
                    loop = " -> ".join([*path, target])
                    raise InvalidArgumentError(violations=[("dependencies", f"dependency cycle: {loop}")])
                edges[target].append(source)
                changed.setdefault(target, []).append(source)
        for name, added in changed.items():
            dependencies = [*self._tasks[name].dependencies, *added]  # an "x/*" stays as it was
            self._tasks[name] = self._tasks[name].model_copy(update={"dependencies": dependencies})


def _path(edges: Mapping[str, Sequence[str]], start: str, goal: str) -> list[str] | None:
    """A chain ``goal -> ... -> start`` in run order if ``start`` already (transitively) depends on ``goal``."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen = {start}
    while stack:
        name, trail = stack.pop()
        if name == goal:
            return list(reversed(trail))
        for dep in edges[name]:
            if dep not in seen:
                seen.add(dep)
                stack.append((dep, [*trail, dep]))
    return None


WorkflowLike = Workflow | WorkflowSpec | Mapping[str, Any]


def as_spec(workflow: WorkflowLike) -> WorkflowSpec:
    """Any accepted workflow form as a validated ``WorkflowSpec`` (a builder is not frozen by this)."""
    if isinstance(workflow, WorkflowSpec):
        return workflow
    if isinstance(workflow, Workflow):
        return workflow._built or workflow._snapshot()
    if isinstance(workflow, Mapping):
        try:
            return parse_workflow(workflow)
        except InvalidArgument as exc:
            raise _from_domain(exc) from None
    raise TypeError(f"expected a Workflow, a WorkflowSpec or a mapping, not {type(workflow).__name__}")


def spec_to_yaml(spec: WorkflowSpec) -> str:
    """Render a spec as a workflow file, leaving out fields at their defaults."""
    data = spec.model_dump(mode="json", exclude_defaults=True, by_alias=True)
    data.setdefault("tasks", [])
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
