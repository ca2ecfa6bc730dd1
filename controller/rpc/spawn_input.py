"""Spawn reports (issue 10) checked at the edge: each task validated as a submission's would be.

The machine then checks them against the workflow (names, dependencies, bounds: see
:mod:`corral.controller.core.dynamic`). A problem found here does not close the agent's stream:
it becomes the report's ``error``, which fails the spawner with the field path.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from corral.controller.core.dynamic import MAX_CHILDREN, SpawnedTask
from corral.controller.core.events import AttemptSpawn
from corral.controller.errors import InvalidArgument
from corral.controller.rpc.submission import _Records, _task_ids
from corral.controller.rpc.wire_spec import decode_json_field
from corral.controller.spec import Limits, TaskSpec, violations_of

__all__ = ["MAX_SPAWN_BYTES", "spawn_report"]

#: One Spawn report's JSON (a list of tasks).
MAX_SPAWN_BYTES = 4 << 20
# Fields a spawned task may not set: its deadline is its workflow's, a gang must be placed whole at
# submission, and a map is declared in the workflow file.
_REFUSED = ("deadline", "gang", "map")


def spawn_report(reporter: str, attempt_id: str, tasks_json: bytes, path: str) -> AttemptSpawn:
    """The machine event for a Spawn report; ``error`` set (and no tasks) when it is invalid."""
    try:
        return AttemptSpawn(reporter, attempt_id, _children(tasks_json, path))
    except InvalidArgument as exc:
        return AttemptSpawn(reporter, attempt_id, (), exc.message)


def _children(tasks_json: bytes, path: str) -> tuple[SpawnedTask, ...]:
    items = decode_json_field(tasks_json, path, MAX_SPAWN_BYTES, "max_spawn_bytes")
    if not isinstance(items, list) or not items:
        raise InvalidArgument.field("spawn", "must be a non-empty list of tasks")
    if len(items) > MAX_CHILDREN:
        raise InvalidArgument.field("spawn", f"{len(items)} tasks, over the limit of {MAX_CHILDREN} per spawner")
    records = _Records("", None, "")
    ids = _task_ids(len(items))
    children = []
    for i, item in enumerate(items):
        where = f"spawn[{i}]"
        if not isinstance(item, dict):
            raise InvalidArgument.field(where, "must be a task (a mapping)")
        for name in _REFUSED:
            if name in item:
                raise InvalidArgument.field(f"{where}.{name}", "not allowed on a spawned task")
        mapping: dict[str, Any] = dict(item)
        dependencies = _dependencies(mapping.pop("dependencies", []), where)
        try:
            spec = TaskSpec.model_validate(mapping)
        except ValidationError as exc:
            raise InvalidArgument(violations_of(exc, where)) from None
        # The model checked the payload's size and depth (as for a workflow file).
        record = records.task(spec, ids[i], 0, json.dumps(spec.payload, separators=(",", ":")).encode())
        children.append(SpawnedTask(replace(record, dependencies=dependencies), spec.priority is not None))
    return tuple(children)


def _dependencies(raw: Any, where: str) -> tuple[str, ...]:
    """Names as given: a sibling's short name, or any task of the workflow (resolved by the machine)."""
    if not isinstance(raw, list) or len(raw) > Limits.max_dependencies:
        raise InvalidArgument.field(
            f"{where}.dependencies", f"must be a list of at most {Limits.max_dependencies} names"
        )
    for j, name in enumerate(raw):
        if not isinstance(name, str) or not 0 < len(name) <= 4 * Limits.max_name_length or not name.isprintable():
            raise InvalidArgument.field(f"{where}.dependencies[{j}]", "must be a task name")
    return tuple(raw)
