"""Admission of secret references: every ``{"secret": NAME}`` in a task's env must name a secret of its namespace."""

from __future__ import annotations

from collections.abc import Iterable

from corral.controller.core.access import AccessState, secret_env
from corral.controller.core.model import Task
from corral.controller.errors import FieldViolation, InvalidArgument

__all__ = ["check_secret_refs"]


def check_secret_refs(access: AccessState, tasks: Iterable[Task], field: str) -> None:
    """InvalidArgument naming each ``field.tasks[i].payload_json.env.VAR`` whose secret does not exist.

    Runs inside the submitting command, so a secret deleted concurrently cannot slip between
    this check and the submission; one deleted later fails its task at dispatch instead.
    """
    violations: list[FieldViolation] = []
    for task in tasks:
        for variable, name in secret_env(task.payload):
            if (task.namespace, name) not in access.secrets:
                path = (
                    f"{field}.tasks[{task.index}].payload_json.env.{variable}"
                    if field != "task"
                    else (f"task.payload_json.env.{variable}")
                )
                violations.append(
                    FieldViolation(
                        path,
                        f"secret {name[:128]!r} does not exist in namespace {task.namespace!r}; "
                        f"create it with `corral secret set {task.namespace} {name[:128]}`",
                    )
                )
    if violations:
        raise InvalidArgument(violations)
