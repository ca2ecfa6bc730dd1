"""Issue 10's fallback, allow_failure, min_success and approval fields on the wire (both ways), and
their records: spec -> ``FallbackRules`` at admission, ``FallbackRules`` -> TaskStatus fields."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from corral.controller import safejson
from corral.controller.core.model import FallbackRules, Task, TaskState
from corral.controller.errors import InvalidArgument
from corral.controller.spec import Limits, TaskSpec
from corral.v1 import types_pb2 as pb

if TYPE_CHECKING:
    from corral.controller.core.machine import Machine

__all__ = ["rules_from_proto", "rules_of", "rules_status", "rules_to_proto"]


def rules_to_proto(task: TaskSpec, fields: dict[str, Any]) -> None:
    """Add a validated task's rules to the keyword arguments of its ``pb.TaskSpec``."""
    if task.fallback is not None:
        fields["fallback_json"] = json.dumps(task.fallback, separators=(",", ":")).encode()
    if task.allow_failure:
        fields["allow_failure"] = True
    if task.min_success is not None:
        fields["min_success"] = task.min_success
    if task.approval is not None:
        approval = pb.ApprovalSpec(message=task.approval.message)
        if task.approval.timeout is not None:
            approval.timeout_s = task.approval.timeout
        fields["approval"] = approval


def rules_from_proto(message: pb.TaskSpec, path: str, data: dict[str, Any]) -> None:
    """Add a task message's rules to the mapping the pydantic model validates (file-format names)."""
    if message.fallback_json:
        if len(message.fallback_json) > Limits.max_payload_bytes:
            raise InvalidArgument.field(
                f"{path}.fallback_json",
                f"{len(message.fallback_json)} bytes, over the max_payload_bytes={Limits.max_payload_bytes} limit",
            )
        try:
            data["fallback"] = safejson.loads(message.fallback_json, Limits.maxjson_depth)
        except safejson.JsonError as exc:
            raise InvalidArgument.field(f"{path}.fallback_json", str(exc)) from None
    if message.allow_failure:
        data["allow_failure"] = True
    if message.HasField("min_success"):
        data["min_success"] = message.min_success
    if message.HasField("approval"):
        approval: dict[str, Any] = {"message": message.approval.message}
        if message.approval.HasField("timeout_s"):
            approval["timeout"] = message.approval.timeout_s
        data["approval"] = approval


def rules_of(spec: TaskSpec) -> FallbackRules | None:
    """The core's record of a validated task's rules (None when it has none: the common case)."""
    if spec.fallback is None and not spec.allow_failure and spec.min_success is None and spec.approval is None:
        return None
    approval = spec.approval
    return FallbackRules(
        fallback=None if spec.fallback is None else json.dumps(spec.fallback, separators=(",", ":")).encode(),
        allow_failure=spec.allow_failure,
        min_success=spec.min_success,
        approval=approval is not None,
        approval_timeout_s=approval.timeout if approval is not None else None,
        approval_message=approval.message if approval is not None else "",
    )


def rules_status(machine: Machine, task: Task, message: pb.TaskStatus) -> None:
    """Fill a TaskStatus's issue 10 fields."""
    message.fallback_used = task.fallback_used
    rules = task.rules
    if rules is None or not rules.approval:
        return
    message.approval_message = rules.approval_message
    if task.state is TaskState.READY:
        message.approval_state = "waiting"
        due = machine.fallbacks.approvals.get(task.id)
        if due is not None:
            message.approval_deadline.seconds = int(due)
            message.approval_deadline.nanos = int((due - int(due)) * 1e9)
    elif task.state is TaskState.COMPLETED:
        message.approval_state = "approved"
    elif task.state is TaskState.FAILED:
        message.approval_state = task.failure_reason or "rejected"
