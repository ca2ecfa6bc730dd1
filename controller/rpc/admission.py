"""Admission at the rpc edge: a request's workflow (or standalone task) through one validation path,
with every violation's path naming the request field it came from."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from corral.controller.errors import FieldViolation, InvalidArgument
from corral.controller.rpc.cache_wire import ParamsInvalid
from corral.controller.rpc.submission import Admitted, TaskMessages, admit_workflow
from corral.controller.rpc.wire_spec import wire_path
from corral.v1 import types_pb2

__all__ = ["admit", "admit_task"]


def _in_request(violation: FieldViolation, field: str) -> FieldViolation:
    path = wire_path(violation.field)
    if not path:
        path = field
    elif not path.startswith(field):
        path = f"{field}.{path}"
    return FieldViolation(path, violation.description)


def admit(
    message: types_pb2.WorkflowSpec,
    present: bool,
    make_id: Callable[[], str],
    *,
    field: str = "spec",
    idempotency_key: str | None = None,
    params: Mapping[str, str] | None = None,
    task_messages: TaskMessages | None = None,
) -> Admitted:
    """Validate a WorkflowSpec field of a request and build its records (see :func:`admit_workflow`)."""
    if not present:
        raise InvalidArgument.field(field, "a workflow spec is required")
    try:
        return admit_workflow(
            message, make_id, idempotency_key=idempotency_key, params=params, task_messages=task_messages
        )
    except ParamsInvalid:
        raise  # the request's own `params` field
    except InvalidArgument as exc:
        raise InvalidArgument(_in_request(v, field) for v in exc.violations) from None


def admit_task(
    message: types_pb2.TaskSpec, present: bool, make_id: Callable[[], str], *, idempotency_key: str | None = None
) -> Admitted:
    """A standalone task (Scheduler.ScheduleTask), admitted as a workflow of its own named after it."""
    if not present:
        raise InvalidArgument.field("task", "a task spec is required")
    wrapper = types_pb2.WorkflowSpec(name=message.name, tasks=[message])
    try:
        return admit_workflow(wrapper, make_id, idempotency_key=idempotency_key, standalone=True)
    except InvalidArgument as exc:
        violations: list[FieldViolation] = []
        for v in exc.violations:
            path = wire_path(v.field)
            # The wrapper's name is the task's: its problems are the task name's, reported once.
            path = "task" + path.removeprefix("tasks[0]") if path != "name" else "task.name"
            moved = FieldViolation(path, v.description)
            if moved not in violations:
                violations.append(moved)
        raise InvalidArgument(violations) from None
