"""The workflow file format: pydantic models shared by the YAML/JSON loader, the SDK builder and the rpc edge.

One source of truth for what a valid workflow is. ``parse_workflow`` turns any mapping (a parsed
file, a built SDK workflow, a decoded wire message) into a validated :class:`WorkflowSpec` or raises
:class:`~corral.controller.errors.InvalidArgument` listing every problem with its field path.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from corral.controller.core.deadlines import parse_deadline
from corral.controller.core.graph import graph_problems
from corral.controller.core.model import LabelExpr
from corral.controller.core.params import MAX_PARAMS, unknown_references
from corral.controller.core.schedules import check_start
from corral.controller.errors import FieldViolation, InvalidArgument, clip
from corral.controller.safejson import json_depth
from corral.controller.spec_common import (
    LIMITS,
    NAME_PATTERN,
    DependencyName,
    LabelValue,
    Limits,
    Name,
    _finite,
    _Strict,
    check_json_value,
    control_character,
    parse_duration,
    plain_dependencies,
)
from corral.controller.spec_durable import (
    ApprovalSpec,
    CacheSpec,
    CompensateSpec,
    ParamDefault,
    _cache_schema,
    cache_shorthand,
)

__all__ = [
    "LIMITS",
    "NAME_PATTERN",
    "ApprovalSpec",
    "CacheSpec",
    "CompensateSpec",
    "LabelExpressionSpec",
    "LabelValue",
    "Limits",
    "ResourceSpec",
    "TaskSpec",
    "WorkflowHeader",
    "WorkflowSpec",
    "check_json_value",
    "check_payload_shape",
    "control_character",
    "format_loc",
    "json_depth",
    "load_workflow_file",
    "parse_duration",
    "parse_workflow",
    "parse_workflow_text",
    "plain_dependencies",
    "violations_of",
]


class ResourceSpec(_Strict):
    """What one task needs on the agent that runs it. Zero means 'none needed'."""

    cpu_cores: float = 0.0
    memory_mb: int = Field(0, ge=0, le=Limits.max_memory_mb)
    disk_mb: int = Field(0, ge=0, le=Limits.max_disk_mb)
    network_bandwidth_mbps: int = Field(0, ge=0, le=Limits.max_network_mbps)
    gpu_count: int = Field(0, ge=0, le=Limits.max_gpu_count)
    custom_resources: dict[Name, float] = Field(default_factory=dict, max_length=Limits.max_labels)

    @field_validator("cpu_cores")
    @classmethod
    def _cpu(cls, value: float) -> float:
        return _finite(value, "cpu_cores", Limits.max_cpu_cores)

    @field_validator("custom_resources")
    @classmethod
    def _custom(cls, value: dict[str, float]) -> dict[str, float]:
        for key, amount in value.items():
            _finite(amount, f"custom_resources[{key!r}]", Limits.max_custom_resource)
        return value


class LabelExpressionSpec(_Strict):
    """A label expression as a constraint's value: exactly one of ``in``, ``not_in``, ``exists``.

    ``{in: [a, b]}``: the label is one of these; ``{not_in: [a]}``: it is none of these (an agent
    without the label passes); ``{exists: true}`` / ``{exists: false}``: it is set / not set.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    in_: list[LabelValue] | None = Field(None, alias="in", min_length=1, max_length=Limits.max_labels)
    not_in: list[LabelValue] | None = Field(None, min_length=1, max_length=Limits.max_labels)
    exists: bool | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> LabelExpressionSpec:
        given = [
            name for name, v in (("in", self.in_), ("not_in", self.not_in), ("exists", self.exists)) if v is not None
        ]
        if len(given) != 1:
            found = ", ".join(given) or "none"
            raise ValueError(f"a label expression needs exactly one of 'in', 'not_in', 'exists' (found: {found})")
        return self

    def expr(self, key: str) -> LabelExpr:
        """The core's form of this expression on label ``key``."""
        if self.in_ is not None:
            return LabelExpr(key, "in", tuple(self.in_))
        if self.not_in is not None:
            return LabelExpr(key, "not_in", tuple(self.not_in))
        return LabelExpr(key, "exists" if self.exists else "does_not_exist")

    @staticmethod
    def mapping(expr: LabelExpr) -> dict[str, Any]:
        """The file form of a core expression (the inverse of :meth:`expr`)."""
        if expr.op in ("in", "not_in"):
            return {expr.op: list(expr.values)}
        return {"exists": expr.op == "exists"}


def _constraint_kind(value: Any) -> str:
    # A mapping is an expression, anything else a plain value: errors then name one shape only.
    return "expression" if isinstance(value, (dict, LabelExpressionSpec)) else "value"


#: A constraint's value: a label value that must equal, or a :class:`LabelExpressionSpec`.
Constraint = Annotated[
    Annotated[LabelValue, Tag("value")] | Annotated[LabelExpressionSpec, Tag("expression")],
    Discriminator(_constraint_kind),
]


TaskTypeName = Literal["compute", "io", "network", "hybrid"]


class TaskSpec(_Strict):
    """One task of a workflow file."""

    name: Name
    agent_type: Name = "shell"
    type: TaskTypeName = "compute"
    payload: dict[str, Any] = Field(default_factory=dict)
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    priority: int | None = Field(None, ge=0, le=100)
    timeout: float | None = Field(None, description="seconds; none means no limit")
    retries: int = Field(0, ge=0, le=Limits.max_retries)
    retry_backoff: float = Field(1.0, description="base of the exponential retry backoff, seconds")
    dependencies: list[DependencyName] = Field(
        default_factory=list,
        max_length=Limits.max_dependencies,
        description='task names; "X/*": X and every task X spawns',
    )
    constraints: dict[Name, Constraint] = Field(
        default_factory=dict,
        max_length=Limits.max_labels,
        description="agent labels: a value (must equal) or an expression {in: [..]} | {not_in: [..]} | {exists: bool}",
    )
    spread: Name | None = Field(
        None, description='spread this workflow\'s tasks over the values of this agent label ("agent": over agents)'
    )
    affinity: dict[Name, LabelValue] = Field(
        default_factory=dict, max_length=Limits.max_labels, description="agent labels preferred, not required"
    )
    estimated_duration: float = Field(0.0, description="seconds, for planning (critical path)")
    on_disconnect: Literal["stop", "keep"] = Field(
        "stop", description="stop: fenced when its agent is cut off; keep: runs through (only these can overlap)"
    )
    max_disconnect: float | None = Field(
        None, description='keep tasks: requeued after this long cut off (seconds or "10m"; default 1h)'
    )
    max_agent_losses: int | None = Field(
        None, ge=1, le=Limits.max_agent_losses, description="agent deaths after which it fails as poison (default 3)"
    )
    deadline: str | None = Field(
        None, description='latest finish: seconds or "10m" after submit, or RFC 3339 with a zone', max_length=64
    )

    @field_validator("deadline", mode="before")
    @classmethod
    def _task_deadline(cls, value: Any) -> Any:
        return _check_deadline(value)

    preemptible: bool = Field(False, description="may be stopped (and requeued) for higher base-priority work")
    max_preemptions: int | None = Field(
        None, ge=0, le=1000, description="preempted at most this many times, then no longer a victim (default 3)"
    )
    gang: Name | None = Field(None, description="placed all at once with the workflow's other tasks of this gang")
    map: Name | None = Field(
        None,
        description="fan out over the list result of this dependency: one copy per item, "
        "which gets the item as inputs['item']; the task's result is the list of theirs",
    )

    @field_validator("map")
    @classmethod
    def _map_over_a_dependency(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Declared after dependencies and gang, so both are in info.data (when they were valid).
        if value is not None:
            if value not in info.data.get("dependencies", [value]):
                raise ValueError(f"{value!r} must be one of the task's dependencies")
            if info.data.get("gang"):
                raise ValueError("a map task cannot be in a gang")
        return value

    compensate: CompensateSpec | None = Field(
        None, description="what undoes this task when its workflow fails or is cancelled (on_failure: compensate)"
    )

    @model_validator(mode="after")
    def _compensation_payload(self) -> TaskSpec:
        if self.compensate is not None:
            try:  # the same payload rules as the task's own, for its agent type
                TaskSpec.model_validate(
                    {"name": self.name, "agent_type": self.agent_type, "payload": self.compensate.payload}
                )
            except ValidationError as exc:
                raise ValueError(f"compensate.payload: {exc.errors()[0]['msg']}") from None
        return self

    cache: CacheSpec | None = Field(
        None,
        description="true, or {key, ttl, version}: complete at once with a cached result of the same work",
        json_schema_extra=_cache_schema,
    )

    @field_validator("cache", mode="before")
    @classmethod
    def _cache(cls, value: Any) -> Any:
        return cache_shorthand(value)

    @field_validator("max_disconnect", mode="before")
    @classmethod
    def _max_disconnect(cls, value: Any) -> Any:
        if value is None:
            return None
        seconds = parse_duration(value)
        if not 0 < seconds <= Limits.max_timeout_s:
            raise ValueError(f"max_disconnect must be > 0 and <= max_timeout_s={Limits.max_timeout_s:g} seconds")
        return seconds

    def equality_constraints(self) -> dict[str, str]:
        """The ``key: value`` constraints (labels that must equal a value)."""
        return {k: v for k, v in self.constraints.items() if isinstance(v, str)}

    def label_expressions(self) -> tuple[LabelExpr, ...]:
        """The expression constraints, in file order (one per label key)."""
        return tuple(v.expr(k) for k, v in self.constraints.items() if isinstance(v, LabelExpressionSpec))

    @model_validator(mode="after")
    def _keep_only(self) -> TaskSpec:
        if self.max_disconnect is not None and self.on_disconnect != "keep":
            raise ValueError("max_disconnect applies to on_disconnect: keep tasks only")
        return self

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float | None) -> float | None:
        if value is None:
            return None
        if not math.isfinite(value) or value <= 0:
            raise ValueError("timeout must be a finite number of seconds > 0")
        if value > Limits.max_timeout_s:
            raise ValueError(f"timeout must be <= max_timeout_s={Limits.max_timeout_s:g}")
        return value

    @field_validator("retry_backoff", "estimated_duration")
    @classmethod
    def _seconds(cls, value: float) -> float:
        return _finite(value, "seconds", Limits.max_timeout_s)

    @field_validator("payload")
    @classmethod
    def _payload(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if info.context and info.context.get("payload_checked"):
            pass  # size and nesting were checked on the encoded bytes (see wire_spec)
        else:
            check_json_value(value, "payload", Limits.max_payload_bytes, "max_payload_bytes")
        return value

    @model_validator(mode="after")
    def _payload_shape(self) -> TaskSpec:
        if self.approval is None:  # an approval task has no payload (checked on the field)
            check_payload_shape(self.agent_type, self.payload, "payload")
        return self

    # Issue 10: fallbacks, partial results and approvals (core/fallbacks.py).
    fallback: dict[str, Any] | None = Field(
        None, description="alternative payload (same agent type) run once every retry of the payload failed"
    )
    allow_failure: bool = Field(False, description="dependents run anyway, receiving null and the error")
    min_success: int | None = Field(
        None,
        ge=1,
        le=Limits.max_dependencies,
        description="fan-in: runs once its dependencies ended with at least this many completed",
    )
    approval: ApprovalSpec | None = Field(
        None, description="waits for `corral approve` / `corral reject` (no payload; optional timeout)"
    )

    @field_validator("fallback")
    @classmethod
    def _fallback(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        if value is None:
            return None
        check_json_value(value, "fallback", Limits.max_payload_bytes, "max_payload_bytes")
        check_payload_shape(info.data.get("agent_type", "shell"), value, "fallback")
        return value

    @field_validator("min_success")
    @classmethod
    def _min_success(cls, value: int | None, info: ValidationInfo) -> int | None:
        deps = len(info.data.get("dependencies", ()))
        if value is not None and value > deps:
            raise ValueError(f"min_success={value} is more than its {deps} dependencies")
        return value

    @field_validator("approval")
    @classmethod
    def _approval(cls, value: ApprovalSpec | None, info: ValidationInfo) -> ApprovalSpec | None:
        if value is not None and (info.data.get("payload") or info.data.get("fallback") is not None):
            raise ValueError("an approval task runs nothing: it takes no payload and no fallback")
        return value

    def payload_json(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":")).encode()


_PY_FUNCTION = re.compile(r"[\w.]+:[\w.]+")  # compiled once: checked on every task of a submission


def check_payload_shape(agent_type: str, payload: Mapping[str, Any], p: str) -> None:
    """The shape a payload (or a fallback, ``p``) must have for its agent type; ValueError if not."""
    if agent_type == "shell":
        command = payload.get("command")
        shell = payload.get("shell")
        if (command is None) == (shell is None):
            raise ValueError(f"a shell task's {p} needs exactly one of 'command' (argv list) or 'shell'")
        if command is not None and (
            not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command)
        ):
            raise ValueError(f"{p}.command must be a non-empty list of strings")
        if shell is not None and (not isinstance(shell, str) or not shell.strip()):
            raise ValueError(f"{p}.shell must be a non-empty string")
        _check_env_cwd(payload, p)
        # NUL can never reach exec (argv, environment and paths are C strings): refuse it here
        # rather than fail on the agent.
        for i, arg in enumerate(command or [shell]):
            if "\x00" in arg:
                where = f"command[{i}]" if command else "shell"
                raise ValueError(f"{p}.{where} must not contain NUL")
    elif agent_type == "python":
        function = payload.get("function")
        if not isinstance(function, str) or not _PY_FUNCTION.fullmatch(function):
            raise ValueError(f"a python task's {p} needs 'function' as 'module:function'")
        if not isinstance(payload.get("args", []), list):
            raise ValueError(f"{p}.args must be a list")
        if not isinstance(payload.get("kwargs", {}), dict):
            raise ValueError(f"{p}.kwargs must be a mapping")


def _env_value(value: Any) -> bool:
    """A plain string, or a reference to a secret of the workflow's namespace."""
    if isinstance(value, str):
        return True
    return (
        isinstance(value, dict)
        and list(value) == ["secret"]
        and isinstance(value["secret"], str)
        and 0 < len(value["secret"]) <= 128
    )


def _check_env_cwd(payload: Mapping[str, Any], p: str = "payload") -> None:
    env = payload.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(k, str) and _env_value(v) for k, v in env.items()):
        raise ValueError(p + '.env must map strings to strings or to {"secret": NAME}')
    if any("\x00" in k or (isinstance(v, str) and "\x00" in v) for k, v in env.items()):
        raise ValueError(f"{p}.env must not contain NUL")
    cwd = payload.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise ValueError(f"{p}.cwd must be a string")
    if cwd is not None and "\x00" in cwd:
        raise ValueError(f"{p}.cwd must not contain NUL")


def _check_deadline(value: Any) -> Any:
    """Validate a deadline's form (``core.deadlines.parse_deadline``); numbers become their text."""
    if value is None:
        return None
    parse_deadline(value)  # ValueError -> a field violation
    return value if isinstance(value, str) else repr(float(value))


class WorkflowHeader(_Strict):
    """Everything of a workflow but its tasks (validated apart when tasks stream in one by one)."""

    name: Name
    metadata: dict[str, Any] = Field(default_factory=dict)
    labels: dict[Name, LabelValue] = Field(default_factory=dict, max_length=Limits.max_labels)
    priority: int | None = Field(None, ge=0, le=100, description="default priority of its tasks")
    namespace: Name | None = Field(None, description='where it lives (default "default"); the token must cover it')
    max_agent_losses: int | None = Field(
        None, ge=1, le=Limits.max_agent_losses, description="default of its tasks' max_agent_losses (3)"
    )
    deadline: str | None = Field(
        None,
        description='every task\'s latest finish: seconds or "10m" after submit, or RFC 3339 with a zone',
        max_length=64,
    )
    deadline_policy: Literal["reject", "warn", "best_effort"] = Field(
        "warn",
        description="when the deadline looks infeasible at submit: refuse, accept with a warning, or say nothing",
    )

    @field_validator("deadline", mode="before")
    @classmethod
    def _deadline(cls, value: Any) -> Any:
        return _check_deadline(value)

    max_parallel: int | None = Field(
        None, ge=1, le=Limits.max_tasks, description="at most this many of its tasks assigned or running at once"
    )
    on_failure: Literal["fail", "compensate", "pause"] = Field(
        "fail",
        description="when a task fails for good: fail the workflow, compensate its completed tasks, "
        "or pause it for `corral retry`",
    )
    params: dict[Name, ParamDefault] = Field(
        default_factory=dict,
        max_length=MAX_PARAMS,
        description="parameters and their defaults (null: required); ${params.NAME} in payload strings",
    )
    scheduled_at: str | None = Field(
        None,
        description='no task starts before this: seconds or "10m" after submit, or RFC 3339 with a zone',
        max_length=64,
    )

    @field_validator("scheduled_at", mode="before")
    @classmethod
    def _scheduled_at(cls, value: Any) -> Any:
        return check_start(value)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_json_value(value, "metadata", Limits.max_metadata_bytes, "max_metadata_bytes")
        return value

    def task_priority(self, task: TaskSpec) -> int:
        if task.priority is not None:
            return task.priority
        return self.priority if self.priority is not None else 50


class WorkflowSpec(WorkflowHeader):
    """A workflow file: a named DAG of tasks."""

    tasks: list[TaskSpec] = Field(min_length=1, max_length=Limits.max_tasks)


_CONSTRAINT_TAGS = ("value", "expression")


def format_loc(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as a field path: ``("tasks", 2, "name")`` -> ``tasks[2].name``."""
    out = ""
    for i, part in enumerate(loc):
        if part in _CONSTRAINT_TAGS and i >= 2 and loc[i - 2] == "constraints":
            continue  # the union branch a constraint value was read as, not a field
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-after") or part.startswith("function-") or part == "[key]":
            continue  # "[key]": the problem is the mapping key named by the previous part
        else:
            part = clip(part)  # a mapping key from the caller: never echo a huge one
            out += f".{part}" if out else part
    return out


def violations_of(exc: ValidationError, prefix: str = "") -> list[FieldViolation]:
    """Every error of a pydantic validation as a field violation (paths under ``prefix``)."""
    result = []
    for err in exc.errors(include_url=False):
        message = str(err["msg"]).removeprefix("Value error, ")
        path = format_loc(tuple(err["loc"]))
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        result.append(FieldViolation(path, message))
    return result


def parse_workflow(data: Any) -> WorkflowSpec:
    """Validate a mapping as a workflow, structure and graph; raise InvalidArgument with every problem."""
    if not isinstance(data, Mapping):
        raise InvalidArgument.field("", "a workflow must be a mapping with 'name' and 'tasks'")
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidArgument(violations_of(exc)) from None
    problems = graph_problems([t.name for t in spec.tasks], [plain_dependencies(t.dependencies) for t in spec.tasks])
    for i, task in enumerate(spec.tasks):  # ${params.x} of undeclared parameters (issue 10)
        problems.extend(unknown_references(task.payload, f"tasks[{i}].payload", spec.params))
    if problems:
        raise InvalidArgument(problems)
    return spec


def parse_workflow_text(text: str, source: str = "<workflow>") -> WorkflowSpec:
    """Parse YAML (a superset of JSON) text and validate it as a workflow."""
    import yaml  # only for workflow files (the CLI, the simulator): a daemon never parses one

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidArgument.field("", f"{source}: malformed YAML{where}: {problem}") from None
    except RecursionError:  # PyYAML composes recursively: a file nested thousands deep
        raise InvalidArgument.field(
            "", f"{source}: nested too deeply (the limit in JSON fields is maxjson_depth={Limits.maxjson_depth})"
        ) from None
    return parse_workflow(data)


def load_workflow_file(path: str | Path) -> WorkflowSpec:
    """Read and validate a workflow file (``.yaml``, ``.yml`` or ``.json``)."""
    file = Path(path)
    return parse_workflow_text(file.read_text(encoding="utf-8"), str(file))
