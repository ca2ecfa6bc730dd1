"""Workflow specs on the wire: pydantic :mod:`spec` models <-> ``corral.v1`` protobuf messages.

Used by both sides: the client SDK encodes, the rpc edge decodes and validates. Decoding never
trusts the message: it rebuilds a plain mapping and runs it through :func:`spec.parse_workflow`,
so every field error carries its path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from corral.controller import safejson
from corral.controller.errors import InvalidArgument, clip
from corral.controller.rpc.cache_wire import cache_mapping, cache_to_proto
from corral.controller.rpc.wire_fallbacks import rules_from_proto, rules_to_proto
from corral.controller.spec import Limits, TaskSpec, WorkflowSpec
from corral.v1 import types_pb2 as pb

__all__ = [
    "ON_DISCONNECT_FROM_PB",
    "ON_DISCONNECT_TO_PB",
    "TASK_TYPE_FROM_PB",
    "TASK_TYPE_TO_PB",
    "add_tasks",
    "decode_json_field",
    "spec_header_to_proto",
    "spec_to_proto",
    "task_mapping",
    "task_spec_to_proto",
    "wire_path",
]

TASK_TYPE_TO_PB = {
    "compute": pb.TASK_TYPE_COMPUTE,
    "io": pb.TASK_TYPE_IO,
    "network": pb.TASK_TYPE_NETWORK,
    "hybrid": pb.TASK_TYPE_HYBRID,
}
TASK_TYPE_FROM_PB = {value: key for key, value in TASK_TYPE_TO_PB.items()}


_encode_json = json.JSONEncoder(separators=(",", ":")).encode
_DEFAULT_BACKOFF = TaskSpec.model_fields["retry_backoff"].default


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def task_spec_to_proto(task: TaskSpec, default_priority: int | None = None) -> pb.TaskSpec:
    """Encode one validated task, leaving defaults unset (a 100k-task workflow encodes quickly)."""
    return pb.TaskSpec(**_task_fields(task, default_priority))


def _task_fields(task: TaskSpec, default_priority: int | None = None) -> dict[str, Any]:
    """The set fields of a task's message (``repeated.add(**fields)`` builds it in place, no copy)."""
    fields: dict[str, Any] = {
        "name": task.name,
        "agent_type": task.agent_type,
        "payload_json": _encode_json(task.payload).encode(),
    }
    if task.type != "compute":
        fields["type"] = TASK_TYPE_TO_PB[task.type]
    res = task.resources
    if (
        res.cpu_cores
        or res.memory_mb
        or res.disk_mb
        or res.network_bandwidth_mbps
        or res.gpu_count
        or (res.custom_resources)
    ):
        fields["resources"] = pb.ResourceRequirements(
            cpu_cores=res.cpu_cores,
            memory_mb=res.memory_mb,
            disk_mb=res.disk_mb,
            network_bandwidth_mbps=res.network_bandwidth_mbps,
            gpu_count=res.gpu_count,
            custom_resources=res.custom_resources,
        )
    if task.retries:
        fields["retries"] = task.retries
    if task.dependencies:
        fields["dependencies"] = task.dependencies
    if task.constraints:
        fields["constraints"] = task.equality_constraints()
        exprs = task.label_expressions()
        if exprs:
            fields["constraint_exprs"] = [pb.LabelExpression(key=e.key, op=e.op, values=e.values) for e in exprs]
    if task.spread:
        fields["spread"] = task.spread
    if task.affinity:
        fields["affinity"] = task.affinity
    if task.estimated_duration:
        fields["estimated_duration_s"] = task.estimated_duration
    if task.retry_backoff != _DEFAULT_BACKOFF:
        fields["retry_backoff_s"] = task.retry_backoff
    priority = task.priority if task.priority is not None else default_priority
    if priority is not None:
        fields["priority"] = priority
    if task.timeout is not None:
        fields["timeout_s"] = task.timeout
    if task.on_disconnect != "stop":
        fields["on_disconnect"] = ON_DISCONNECT_TO_PB[task.on_disconnect]
    if task.max_disconnect is not None:
        fields["max_disconnect_s"] = task.max_disconnect
    if task.max_agent_losses is not None:
        fields["max_agent_losses"] = task.max_agent_losses
    if task.deadline is not None:
        fields["deadline"] = task.deadline
    if task.preemptible:
        fields["preemptible"] = True
    if task.max_preemptions is not None:
        fields["max_preemptions"] = task.max_preemptions
    if task.gang:
        fields["gang"] = task.gang
    if task.map:
        fields["map"] = task.map
    if task.compensate is not None:
        fields["compensate_json"] = _json_bytes(task.compensate.model_dump(exclude_defaults=True))
    if task.fallback is not None or task.allow_failure or task.min_success is not None or task.approval is not None:
        rules_to_proto(task, fields)
    if task.cache is not None:
        fields["cache"] = cache_to_proto(task.cache)
    return fields


def spec_to_proto(spec: WorkflowSpec) -> pb.WorkflowSpec:
    """Encode a validated workflow for SubmitWorkflow / GetExecutionPlan / AnalyzeDependencies."""
    message = spec_header_to_proto(spec)
    add_tasks(message.tasks, spec.tasks)
    return message


def add_tasks(into: Any, tasks: Sequence[TaskSpec]) -> None:
    """Encode ``tasks`` at the end of the repeated ``TaskSpec`` field ``into`` (each built in place)."""
    add = into.add
    for task in tasks:
        add(**_task_fields(task))


def spec_header_to_proto(spec: WorkflowSpec) -> pb.WorkflowSpec:
    """The workflow's message without its tasks (:func:`add_tasks` adds them, here or in chunks)."""
    message = pb.WorkflowSpec(name=spec.name, metadata_json=_json_bytes(spec.metadata), labels=spec.labels)
    if spec.priority is not None:
        message.priority = spec.priority
    if spec.namespace is not None:
        message.namespace = spec.namespace
    if spec.max_agent_losses is not None:
        message.max_agent_losses = spec.max_agent_losses
    if spec.deadline is not None:
        message.deadline = spec.deadline
    if spec.deadline_policy != "warn":
        message.deadline_policy = spec.deadline_policy
    if spec.max_parallel is not None:
        message.max_parallel = spec.max_parallel
    if spec.on_failure != "fail":
        message.on_failure = spec.on_failure
    if spec.params:
        message.params_json = _json_bytes(spec.params)
    if spec.scheduled_at is not None:
        message.scheduled_at = spec.scheduled_at
    return message


def decode_json_field(raw: bytes, path: str, max_bytes: int, limit_name: str) -> Any:
    """Decode a JSON ``bytes`` field of a message (payload, metadata, a result from a worker or agent).

    Checks, cheapest first: the size limit, then the nesting depth on the raw bytes (so no parse
    ever recurses deep), then the parse itself, which refuses NaN, Infinity and out-of-range
    numbers. Any problem is an InvalidArgument at ``path``. Empty bytes decode to None.
    """
    if not raw:
        return None
    if len(raw) > max_bytes:
        raise InvalidArgument.field(path, f"{len(raw)} bytes, over the {limit_name}={max_bytes} bytes limit")
    try:
        return safejson.loads(raw, Limits.maxjson_depth)
    except safejson.JsonError as exc:
        raise InvalidArgument.field(path, str(exc)) from None


def task_mapping(message: pb.TaskSpec, path: str) -> dict[str, Any]:
    """A task message as the mapping the pydantic model validates; defaults are left out (cheaper)."""
    payload = decode_json_field(message.payload_json, f"{path}.payload", Limits.max_payload_bytes, "max_payload_bytes")
    data: dict[str, Any] = {
        "name": message.name,
        "agent_type": message.agent_type or "shell",
        "payload": {} if payload is None else payload,
    }
    if message.HasField("resources"):
        res = message.resources
        data["resources"] = {
            "cpu_cores": res.cpu_cores,
            "memory_mb": res.memory_mb,
            "disk_mb": res.disk_mb,
            "network_bandwidth_mbps": res.network_bandwidth_mbps,
            "gpu_count": res.gpu_count,
            "custom_resources": dict(res.custom_resources),
        }
    if message.dependencies:
        data["dependencies"] = list(message.dependencies)
    if message.constraints or message.constraint_exprs:
        data["constraints"] = _constraints(message, path)
    if message.spread:
        data["spread"] = message.spread
    if message.affinity:
        data["affinity"] = dict(message.affinity)
    if message.estimated_duration_s:
        data["estimated_duration"] = message.estimated_duration_s
    if message.type != pb.TASK_TYPE_UNSPECIFIED:
        data["type"] = TASK_TYPE_FROM_PB.get(message.type, f"unknown({message.type})")
    if message.HasField("priority"):
        data["priority"] = message.priority
    if message.HasField("timeout_s"):
        data["timeout"] = message.timeout_s
    if message.HasField("retries"):
        data["retries"] = message.retries
    if message.HasField("retry_backoff_s"):
        data["retry_backoff"] = message.retry_backoff_s
    if message.on_disconnect != pb.ON_DISCONNECT_UNSPECIFIED:
        data["on_disconnect"] = ON_DISCONNECT_FROM_PB.get(message.on_disconnect, f"unknown({message.on_disconnect})")
    if message.HasField("max_disconnect_s"):
        data["max_disconnect"] = message.max_disconnect_s
    if message.HasField("max_agent_losses"):
        data["max_agent_losses"] = message.max_agent_losses
    if message.deadline:
        data["deadline"] = message.deadline
    if message.preemptible:
        data["preemptible"] = True
    if message.HasField("max_preemptions"):
        data["max_preemptions"] = message.max_preemptions
    if message.gang:
        data["gang"] = message.gang
    if message.map:
        data["map"] = message.map
    if message.compensate_json:
        where = f"{path}.compensate"
        data["compensate"] = decode_json_field(
            message.compensate_json, where, Limits.max_payload_bytes, "max_payload_bytes"
        )
    if (
        message.fallback_json
        or message.allow_failure
        or message.HasField("min_success")
        or message.HasField("approval")
    ):
        rules_from_proto(message, path, data)
    if message.HasField("cache"):
        data["cache"] = cache_mapping(message.cache)
    return data


_OPS_WITH_VALUES = ("in", "not_in")
_OPS_WITHOUT = ("exists", "does_not_exist")


def _constraints(message: pb.TaskSpec, path: str) -> dict[str, Any]:
    """The equality map and the label expressions as the file's one ``constraints`` mapping.

    The expressions' wire shape is checked here (the file form cannot express these mistakes):
    a known op, values exactly for ``in``/``not_in``, one expression per key, no key in both.
    """
    data: dict[str, Any] = dict(message.constraints)
    exprs = message.constraint_exprs
    if len(exprs) + len(data) > Limits.max_labels:
        raise InvalidArgument.field(
            f"{path}.constraint_exprs",
            f"{len(exprs)} expressions and {len(data)} constraints, over the max_labels={Limits.max_labels} limit",
        )
    for i, expr in enumerate(exprs):
        where = f"{path}.constraint_exprs[{i}]"
        if expr.op in _OPS_WITH_VALUES:
            if not expr.values:
                raise InvalidArgument.field(f"{where}.values", f"op {expr.op!r} needs at least one value")
            value: dict[str, Any] = {expr.op: list(expr.values)}
        elif expr.op in _OPS_WITHOUT:
            if expr.values:
                raise InvalidArgument.field(f"{where}.values", f"op {expr.op!r} takes no values")
            value = {"exists": expr.op == "exists"}
        else:
            known = ", ".join(_OPS_WITH_VALUES + _OPS_WITHOUT)
            raise InvalidArgument.field(f"{where}.op", f"unknown op {clip(expr.op)!r} (known: {known})")
        if expr.key in data:
            raise InvalidArgument.field(
                f"{where}.key", f"label {clip(expr.key)!r} is constrained twice (one constraint per label)"
            )
        data[expr.key] = value
    return data


# File-format field names that the wire spells differently, so errors point into the request.
_WIRE_NAMES = {
    "timeout": "timeout_s",
    "payload": "payload_json",
    "metadata": "metadata_json",
    "retry_backoff": "retry_backoff_s",
    "estimated_duration": "estimated_duration_s",
    "max_disconnect": "max_disconnect_s",
    "compensate": "compensate_json",
    "fallback": "fallback_json",
    "ttl": "ttl_s",
    "params": "params_json",
}
ON_DISCONNECT_TO_PB = {"stop": pb.ON_DISCONNECT_STOP, "keep": pb.ON_DISCONNECT_KEEP}
ON_DISCONNECT_FROM_PB = {v: k for k, v in ON_DISCONNECT_TO_PB.items()}


def wire_path(path: str) -> str:
    """A file-format field path (``tasks[0].timeout``) as the request's (``tasks[0].timeout_s``)."""
    parts = path.split(".")
    for i, part in enumerate(parts):
        name, bracket, rest = part.partition("[")
        if name in _WIRE_NAMES and (i > 0 or name in ("metadata", "params")):
            parts[i] = _WIRE_NAMES[name] + bracket + rest
            break  # inside a JSON field the rest of the path is the document's own
    return ".".join(parts)
