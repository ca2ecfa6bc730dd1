"""Turn a validated workflow spec into domain records with fresh ids."""

from __future__ import annotations

import json
from collections.abc import Callable

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
) -> tuple[Workflow, list[Task]]:
    """The workflow record and its tasks (PENDING), dependencies resolved to task ids."""
    workflow_id = "wf-" + make_id()
    ids = {task.name: "t-" + make_id() for task in spec.tasks}
    tasks = []
    for index, task in enumerate(spec.tasks):
        res = task.resources
        tasks.append(
            Task(
                id=ids[task.name],
                workflow_id=workflow_id,
                name=task.name,
                index=index,
                agent_type=task.agent_type,
                payload=task.payload_json(),
                type=TaskType(task.type),
                resources=Resources(
                    cpu_cores=res.cpu_cores,
                    memory_mb=res.memory_mb,
                    disk_mb=res.disk_mb,
                    network_bandwidth_mbps=res.network_bandwidth_mbps,
                    gpu_count=res.gpu_count,
                    custom=dict(res.custom_resources),
                ),
                priority=spec.task_priority(task),
                timeout_s=task.timeout,
                max_retries=task.retries,
                retry_backoff_s=task.retry_backoff,
                dependencies=tuple(ids[d] for d in task.dependencies),
                constraints=dict(task.constraints),
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
