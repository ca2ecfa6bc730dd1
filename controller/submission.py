"""Turn a validated workflow spec into domain records with fresh ids."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence

from corral.controller.core.analysis import ExecutionPlan, analyze
from corral.controller.core.model import Resources, Task, TaskType, Workflow
from corral.controller.spec import WorkflowSpec

__all__ = ["build_workflow", "plan_of"]


def build_workflow(
    spec: WorkflowSpec,
    make_id: Callable[[], str],
    *,
    idempotency_key: str | None = None,
    standalone: bool = False,
    payloads: Sequence[bytes] | None = None,
) -> tuple[Workflow, list[Task]]:
    """The workflow record and its tasks (PENDING), dependencies resolved to task ids.

    ``payloads`` are the tasks' payloads as received (JSON bytes), kept as they are; without them
    the payloads are encoded from the spec.
    """
    workflow_id = "wf-" + make_id()
    # Random ids, so any short prefix tells tasks apart; drawn in one call, which matters for
    # workflows of 100k tasks.
    digits = os.urandom(10 * len(spec.tasks)).hex()
    ids = {task.name: "t-" + digits[20 * index : 20 * index + 20] for index, task in enumerate(spec.tasks)}
    types = {t.value: t for t in TaskType}
    shared_resources: dict[object, Resources] = {}  # identical requirements share one object
    no_constraints: Mapping[str, str] = {}
    tasks = []
    for index, task in enumerate(spec.tasks):
        res = task.resources
        key = (res.cpu_cores, res.memory_mb, res.disk_mb, res.network_bandwidth_mbps, res.gpu_count)
        resources = None if res.custom_resources else shared_resources.get(key)
        if resources is None:
            resources = Resources(*key, custom=dict(res.custom_resources))
            if not res.custom_resources:
                shared_resources[key] = resources
        tasks.append(
            Task(
                id=ids[task.name],
                workflow_id=workflow_id,
                name=task.name,
                index=index,
                agent_type=task.agent_type,
                payload=payloads[index] if payloads is not None else task.payload_json(),
                type=types[task.type],
                resources=resources,
                priority=spec.task_priority(task),
                timeout_s=task.timeout,
                max_retries=task.retries,
                retry_backoff_s=task.retry_backoff,
                dependencies=tuple([ids[d] for d in task.dependencies]),
                constraints=dict(task.constraints) if task.constraints else no_constraints,
                estimated_duration_s=task.estimated_duration,
            )
        )
    workflow = Workflow(
        id=workflow_id,
        name=spec.name,
        task_ids=[t.id for t in tasks],
        metadata=json.dumps(spec.metadata, separators=(",", ":")).encode(),
        labels=dict(spec.labels),
        idempotency_key=idempotency_key or None,
        standalone=standalone,
    )
    return workflow, tasks


def plan_of(spec: WorkflowSpec) -> ExecutionPlan:
    """Stages, critical path and estimates of a spec (not submitted)."""
    return analyze(
        [t.name for t in spec.tasks],
        [t.dependencies for t in spec.tasks],
        [t.estimated_duration for t in spec.tasks],
    )
