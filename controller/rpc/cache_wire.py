"""Issue 10 at the rpc edge: task cache policies, workflow parameters and cache sources on the wire.

Parameters are resolved here, at submit time: the declared defaults (``WorkflowSpec.params_json``)
and the supplied values (``SubmitWorkflowRequest.params``) give every parameter its value, and
payloads holding ``${params.`` are rewritten before their task is validated, so a substituted
payload is checked exactly like a written one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from corral.controller.core.model import Task, TaskCache
from corral.controller.core.params import ParamValue, resolve_params, substitute
from corral.controller.errors import FieldViolation, InvalidArgument
from corral.controller.spec import CacheSpec, Limits, WorkflowHeader, check_json_value
from corral.v1 import types_pb2 as pb

__all__ = [
    "ParamsInvalid",
    "cache_mapping",
    "cache_status",
    "cache_to_proto",
    "declared_params",
    "param_values",
    "task_cache",
    "with_params",
]


def cache_to_proto(cache: CacheSpec) -> pb.TaskCache:
    """A validated cache policy as its message (defaults left unset)."""
    message = pb.TaskCache(key=cache.key or "", version=cache.version)
    if cache.ttl is not None:
        message.ttl_s = cache.ttl
    return message


def cache_mapping(message: pb.TaskCache) -> dict[str, Any]:
    """A cache message as the mapping :class:`CacheSpec` validates (paths ``tasks[i].cache.ttl``)."""
    data: dict[str, Any] = {}
    if message.key:
        data["key"] = message.key
    if message.HasField("ttl_s"):
        data["ttl"] = message.ttl_s
    if message.version:
        data["version"] = message.version
    return data


def task_cache(cache: CacheSpec) -> TaskCache:
    """The core's form of a validated cache policy."""
    return TaskCache(cache.key or "", cache.ttl, cache.version)


def cache_status(task: Task, message: pb.TaskStatus) -> None:
    """Set the TaskStatus fields of a task completed from the cache (its ``cache_source``)."""
    workflow_id, task_id, attempt_id = [*task.cache_source.split("/"), "", "", ""][:3]
    message.cache_source_workflow_id = workflow_id
    message.cache_source_task_id = task_id
    message.cache_source_attempt_id = attempt_id


def declared_params(message: pb.WorkflowSpec, data: dict[str, Any], violations: list[FieldViolation]) -> None:
    """Put the declared parameters of a workflow message into its header mapping (``params``)."""
    from corral.controller.rpc.wire_spec import decode_json_field  # wire_spec imports this module

    try:
        declared = decode_json_field(message.params_json, "params", Limits.max_metadata_bytes, "max_metadata_bytes")
    except InvalidArgument as exc:
        violations.extend(exc.violations)
        return
    if declared is not None:
        data["params"] = declared


class ParamsInvalid(InvalidArgument):
    """The supplied parameter values (the request's ``params``) do not fit the declared ones."""


def param_values(header: WorkflowHeader | None, supplied: Mapping[str, str] | None) -> dict[str, ParamValue]:
    """Every declared parameter's value: supplied, else its default (see :func:`resolve_params`).

    Raises :class:`ParamsInvalid`, whose paths (``params.NAME``) name the request's own field.
    ``supplied`` None (a plan or an analysis, not a submission): the defaults, required ones null.
    """
    if header is None or (not header.params and not supplied):
        return {}
    if supplied is None:
        return dict(header.params)
    try:
        return resolve_params(header.params, supplied or {})
    except InvalidArgument as exc:
        raise ParamsInvalid(exc.violations) from None


def with_params(mapping: dict[str, Any], values: Mapping[str, ParamValue], path: str) -> bytes:
    """Substitute the parameters in a task mapping's payload (in place); the new payload's JSON.

    InvalidArgument at the string's path for an unknown parameter, or when the result is over the
    payload limits.
    """
    payload = substitute(mapping["payload"], values, f"{path}.payload")
    try:
        encoded = check_json_value(payload, "payload", Limits.max_payload_bytes, "max_payload_bytes")
    except ValueError as exc:
        raise InvalidArgument.field(f"{path}.payload", f"after substituting parameters: {exc}") from None
    mapping["payload"] = payload
    return encoded


def params_text(raw: bytes) -> dict[str, Any]:
    """A workflow's stored parameter values (``{}`` when it has none)."""
    value = json.loads(raw) if raw else {}
    return value if isinstance(value, dict) else {}
