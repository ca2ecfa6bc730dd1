"""Where domain objects become protobuf messages and back (specs: wire_spec; a task's status: wire_task)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from google.protobuf.timestamp_pb2 import Timestamp

from corral.controller.core import events as ev
from corral.controller.core.analysis import DependencyInsights, ExecutionPlan, analyze, path_weights
from corral.controller.core.dag import Dag
from corral.controller.core.machine import Machine
from corral.controller.core.model import (
    Agent,
    AgentState,
    AttemptState,
    Inventory,
    Resources,
    Task,
    TaskState,
    Workflow,
    WorkflowEvent,
    WorkflowState,
)
from corral.controller.core.placement import AgentView
from corral.controller.core.schedule_ops import schedule_of
from corral.controller.rpc.wire_task import TASK_STATE_TO_PB, set_stamp, task_status
from corral.controller.spec_common import Limits
from corral.v1 import agent_pb2, orchestrator_pb2, scheduler_pb2
from corral.v1 import types_pb2 as pb

if TYPE_CHECKING:
    pass

__all__ = [
    "AGENT_STATE_FROM_PB",
    "AGENT_STATE_TO_PB",
    "TASK_STATE_TO_PB",
    "WORKFLOW_STATE_FROM_PB",
    "WORKFLOW_STATE_TO_PB",
    "agent_info",
    "assignment_to_proto",
    "event_to_proto",
    "executed_critical_path",
    "executed_plan",
    "hello_from_proto",
    "inventory_from_proto",
    "plan_to_proto",
    "resources_from_proto",
    "resources_to_proto",
    "task_event_from_proto",
    "task_status",
    "timestamp",
    "workflow_result",
    "workflow_status",
    "workflow_summary",
]

WORKFLOW_STATE_TO_PB = {
    WorkflowState.PENDING: pb.WORKFLOW_STATE_PENDING,
    WorkflowState.RUNNING: pb.WORKFLOW_STATE_RUNNING,
    WorkflowState.PAUSED: pb.WORKFLOW_STATE_PAUSED,
    WorkflowState.CANCELLING: pb.WORKFLOW_STATE_CANCELLING,
    WorkflowState.COMPLETED: pb.WORKFLOW_STATE_COMPLETED,
    WorkflowState.FAILED: pb.WORKFLOW_STATE_FAILED,
    WorkflowState.CANCELLED: pb.WORKFLOW_STATE_CANCELLED,
    WorkflowState.COMPENSATING: pb.WORKFLOW_STATE_COMPENSATING,
}
WORKFLOW_STATE_FROM_PB = {v: k for k, v in WORKFLOW_STATE_TO_PB.items()}
AGENT_STATE_TO_PB = {
    AgentState.CONNECTED: pb.AGENT_STATE_CONNECTED,
    AgentState.DRAINING: pb.AGENT_STATE_DRAINING,
    AgentState.LOST: pb.AGENT_STATE_LOST,
    AgentState.DISCONNECTED: pb.AGENT_STATE_DISCONNECTED,
    AgentState.DRAINED: pb.AGENT_STATE_DRAINED,
}
AGENT_STATE_FROM_PB = {v: k for k, v in AGENT_STATE_TO_PB.items()}
_OUTCOME_FROM_PB = {
    pb.ATTEMPT_OUTCOME_SUCCEEDED: AttemptState.SUCCEEDED,
    pb.ATTEMPT_OUTCOME_FAILED: AttemptState.FAILED,
    pb.ATTEMPT_OUTCOME_TIMED_OUT: AttemptState.TIMED_OUT,
    pb.ATTEMPT_OUTCOME_CANCELLED: AttemptState.CANCELLED,
    pb.ATTEMPT_OUTCOME_LOST: AttemptState.LOST,
    # Its supervisor killed it when the agent's lease ran out: requeued like a lost attempt.
    pb.ATTEMPT_OUTCOME_FENCED: AttemptState.LOST,
}
ON_DISCONNECT_TO_PB = {"stop": pb.ON_DISCONNECT_STOP, "keep": pb.ON_DISCONNECT_KEEP}


def timestamp(value: float | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    seconds = int(value)
    stamp.seconds = seconds
    stamp.nanos = int((value - seconds) * 1e9)
    return stamp


def seconds_of(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


def _amounts(res: Resources) -> dict[str, Any]:
    # ResourceRequirements and Inventory spell the amounts alike. The custom map is set apart, and
    # only when there is one: a map given to a constructor goes through a slow generic update.
    return {
        "cpu_cores": res.cpu_cores,
        "memory_mb": res.memory_mb,
        "disk_mb": res.disk_mb,
        "network_bandwidth_mbps": res.network_bandwidth_mbps,
        "gpu_count": res.gpu_count,
    }


def resources_to_proto(res: Resources) -> pb.ResourceRequirements:
    message = pb.ResourceRequirements(**_amounts(res))
    if res.custom:
        message.custom_resources.update(res.custom)
    return message


def resources_from_proto(message: pb.ResourceRequirements | pb.Inventory) -> Resources:
    """The amounts of a ResourceRequirements, or the capacity of an Inventory."""
    return Resources(
        cpu_cores=message.cpu_cores,
        memory_mb=message.memory_mb,
        disk_mb=message.disk_mb,
        network_bandwidth_mbps=message.network_bandwidth_mbps,
        gpu_count=message.gpu_count,
        custom=dict(message.custom_resources),
    )


def inventory_from_proto(message: pb.Inventory) -> Inventory:
    gpu_ids = tuple(g.index for g in message.gpus) or tuple(range(message.gpu_count))
    return Inventory(capacity=resources_from_proto(message), slots=max(1, message.slots), gpu_ids=gpu_ids)


def inventory_to_proto(inventory: Inventory) -> pb.Inventory:
    message = pb.Inventory(
        **_amounts(inventory.capacity),
        gpus=[pb.GpuInfo(index=i) for i in inventory.gpu_ids],
        slots=inventory.slots,
    )
    if inventory.capacity.custom:
        message.custom_resources.update(inventory.capacity.custom)
    return message


def hello_from_proto(message: agent_pb2.Hello) -> ev.AgentHello:
    return ev.AgentHello(
        agent_id=message.agent_id or message.name,
        name=message.name or message.agent_id,
        hostname=message.hostname,
        agent_types=tuple(message.agent_types),
        labels=dict(message.labels),
        inventory=inventory_from_proto(message.inventory),
        running_attempt_ids=tuple(message.running_attempt_ids),
        version=message.version,
        draining=message.draining,
        incarnation=message.incarnation,
        finished_attempt_ids=tuple(message.finished_attempt_ids),
    )


def task_event_from_proto(
    agent_id: str, session_epoch: int, message: agent_pb2.TaskEvent
) -> ev.AttemptStarted | ev.AttemptFinished | ev.AttemptAccepted | ev.AttemptReleased | ev.AttemptCheckpoint | None:
    """A Started, Finished, Accepted, Released or Checkpoint report as a machine event (Output is
    handled apart)."""
    kind = message.WhichOneof("kind")
    if kind == "accepted":
        return ev.AttemptAccepted(agent_id, message.attempt_id)
    if kind == "released":
        return ev.AttemptReleased(agent_id, message.attempt_id)
    at = seconds_of(message.at) if message.HasField("at") else None
    if kind == "started":
        return ev.AttemptStarted(agent_id, message.attempt_id, at)
    if kind == "finished":
        done = message.finished
        return ev.AttemptFinished(
            reporter=agent_id,
            attempt_id=message.attempt_id,
            outcome=_OUTCOME_FROM_PB.get(done.outcome, AttemptState.FAILED),
            exit_code=done.exit_code,
            result=done.result_json or None,
            error=done.error,
            retryable=done.retryable,
            session_epoch=session_epoch,
            at=at,
            fenced=done.outcome == pb.ATTEMPT_OUTCOME_FENCED,
            peak_rss_bytes=done.peak_rss_bytes,
            cpu_s=done.cpu_s,
            oom_killed=done.oom_killed,
        )
    if kind == "checkpoint":
        return ev.AttemptCheckpoint(agent_id, message.attempt_id, message.checkpoint.data_json)
    return None  # Output and Spawn are decoded apart (gateway, spawn_input)


def assignment_to_proto(assignment: ev.Assignment) -> pb.TaskAssignment:
    task = assignment.task
    message = pb.TaskAssignment(
        attempt_id=assignment.attempt_id,
        task_id=task.id,
        workflow_id=task.workflow_id,
        task_name=task.name,
        agent_type=task.agent_type,
        payload_json=task.run_payload if task.fallback_used else task.payload,
        resources=resources_to_proto(task.resources),
        timeout_s=task.timeout_s or 0.0,
        gpu_ids=assignment.gpu_ids,
        attempt_number=assignment.attempt_number,
        namespace=task.namespace,
        on_disconnect=ON_DISCONNECT_TO_PB.get(task.on_disconnect, pb.ON_DISCONNECT_STOP),
        max_disconnect_s=assignment.max_disconnect_s,
    )
    # Maps only when set: given to the constructor, even an empty one costs a generic update.
    if assignment.inputs:
        message.inputs_json.update(assignment.inputs)
    if assignment.secrets:
        message.secrets.update(assignment.secrets)
    if assignment.checkpoint is not None:  # issue 10: resume from the task's last checkpoint
        message.checkpoint_json = assignment.checkpoint
    if assignment.order:
        message.queue_order.extend(assignment.order)
    return message


def _counts(machine: Machine, workflow: Workflow) -> dict[str, int]:
    counts = machine.counts[workflow.id]
    records = machine.sagas.of_workflow.get(workflow.id)
    if records:  # issue 10: compensation records are counted there, but are not tasks of the listing
        counts = counts.copy()
        counts.subtract(machine.tasks[r].state for r in records)
    return {str(state): n for state, n in counts.items() if n}


def workflow_status(
    machine: Machine,
    workflow: Workflow,
    include_tasks: bool,
    now: float,
    page_start: int = 0,
    page_size: int | None = None,
) -> pb.WorkflowStatus:
    """A workflow's status; with ``include_tasks``, the page of its tasks from ``page_start``."""
    message = pb.WorkflowStatus(
        workflow_id=workflow.id,
        name=workflow.name,
        state=WORKFLOW_STATE_TO_PB[workflow.state],
        task_counts=_counts(machine, workflow),
        created_at=timestamp(workflow.created_at),
        started_at=timestamp(workflow.started_at),
        finished_at=timestamp(workflow.finished_at),
        error=workflow.error,
        metadata_json=workflow.metadata,
        labels=dict(workflow.labels),
        task_total=len(workflow.task_ids),
        namespace=workflow.namespace,
        max_parallel=workflow.max_parallel or 0,
        concurrency_limit=machine.parallelism.current(workflow.id),
        run=workflow.run,
        on_failure=workflow.on_failure,
        params_json=workflow.params if workflow.params != b"{}" else b"",
    )
    if workflow.deadline is not None:
        set_stamp(message.deadline, workflow.deadline)
        message.deadline_verdict = workflow.deadline_verdict
        if not workflow.state.terminal:
            unfinished = [t for t in workflow.task_ids if not machine.tasks[t].state.terminal]
            slack = machine.deadline_book.workflow_slack(unfinished, now)
            if slack is not None:
                message.slack_s = slack
    if workflow.scheduled_at is not None:
        set_stamp(message.scheduled_at, workflow.scheduled_at)
        message.schedule_id = schedule_of(workflow)
    if include_tasks:
        ids = workflow.task_ids
        end = page_end(machine, ids, page_start, Limits.page_tasks if page_size is None else page_size)
        tasks = [machine.tasks[t] for t in ids[page_start:end]]
        message.tasks.extend(
            task_status(machine, task, reason, unschedulable, now)
            for task, reason, unschedulable in machine.waiting_reasons(tasks, now)
        )
        message.next_page_token = str(end) if end < len(ids) else ""
    return message


def workflow_summary(machine: Machine, workflow: Workflow) -> pb.WorkflowSummary:
    return pb.WorkflowSummary(
        workflow_id=workflow.id,
        name=workflow.name,
        state=WORKFLOW_STATE_TO_PB[workflow.state],
        task_counts=_counts(machine, workflow),
        task_total=len(workflow.task_ids),
        created_at=timestamp(workflow.created_at),
        started_at=timestamp(workflow.started_at),
        finished_at=timestamp(workflow.finished_at),
        namespace=workflow.namespace,
    )


def plan_to_proto(plan: ExecutionPlan) -> pb.ExecutionPlan:
    return pb.ExecutionPlan(
        stages=[
            pb.ExecutionStage(
                index=stage.index, task_names=stage.task_names, estimated_duration_s=stage.estimated_duration_s
            )
            for stage in plan.stages
        ],
        critical_path=plan.critical_path,
        estimated_duration_s=plan.estimated_duration_s,
        parallelism_factor=plan.parallelism_factor,
        task_count=plan.task_count,
        total_work_s=plan.total_work_s,
    )


def analysis_to_proto(plan: ExecutionPlan, insights: DependencyInsights) -> scheduler_pb2.AnalyzeDependenciesResponse:
    """AnalyzeDependencies' answer: the plan, its shape, redundant dependencies and dominators."""
    return scheduler_pb2.AnalyzeDependenciesResponse(
        plan=plan_to_proto(plan),
        roots=plan.roots,
        leaves=plan.leaves,
        max_width=plan.max_width,
        depth=plan.depth,
        # "from" is a Python keyword: the field is set through a mapping.
        redundant_edges=[scheduler_pb2.DependencyEdge(**{"from": a, "to": b}) for a, b in insights.redundant_edges],
        immediate_dominators=dict(insights.immediate_dominators),
    )


def executed_plan(machine: Machine, workflow: Workflow) -> ExecutionPlan:
    """The workflow's DAG weighted by measured run times (the critical path as executed)."""
    tasks = [machine.tasks[t] for t in workflow.task_ids]
    durations = list(_run_times(tasks))
    return analyze([t.name for t in tasks], [[machine.tasks[d].name for d in t.dependencies] for t in tasks], durations)


def executed_critical_path(machine: Machine, workflow: Workflow) -> list[str]:
    """The names along :func:`executed_plan`'s critical path, without building the whole plan.

    A result needs only the path: the plan's stages, names and lists of lists cost ~400 bytes per
    task on top of a finished workflow's records (80 MiB at 200k tasks, at the controller's peak).
    """
    ids = workflow.task_ids
    tasks = [machine.tasks[t] for t in ids]
    _, weights, _ = path_weights(_run_times(tasks))
    path = Dag(ids, [t.dependencies for t in tasks], position=_positions(machine, ids)).longest_path(weights)
    return [tasks[i].name for i in path]


def _positions(machine: Machine, ids: Sequence[str]) -> Callable[[str], int | None]:
    """Each task's place in ``ids`` from its ``index`` (a dict of the whole workflow, as
    :class:`Dag` would build, was 1.2 MiB at 20k tasks at the end of the run: the wait's answer
    is rendered then). A record whose index is not its place (a compensation shares its task's)
    falls back to a dict built on first need."""
    tasks, size = machine.tasks, len(ids)
    fallback: dict[str, int] = {}

    def position(task_id: str) -> int | None:
        task = tasks.get(task_id)
        if task is None:
            return None
        index = task.index
        if 0 <= index < size and ids[index] == task_id:
            return index
        if not fallback:
            fallback.update((other, i) for i, other in enumerate(ids))
        return fallback.get(task_id)

    return position


def _run_times(tasks: Sequence[Task]) -> Iterator[float]:
    """Each task's measured run time (0 when it did not both start and finish)."""
    for t in tasks:
        yield (t.finished_at - t.started_at) if t.finished_at is not None and t.started_at is not None else 0.0


def workflow_result(
    machine: Machine,
    workflow: Workflow,
    now: float,
    into: pb.WorkflowResult | None = None,
    limit: int | None = None,
) -> pb.WorkflowResult:
    """A finished workflow's result: its tasks' statuses and results, and the executed critical path.

    The tasks are the first page (at most ``limit``, by default ``Limits.page_tasks``, fewer past
    ``Limits.max_page_bytes``); a
    workflow with more sets ``next_page_token`` for GetWorkflowStatus to carry on from.
    With ``into`` (e.g. ``response.result``) it is written there in place: a big result is
    tens of MiB, and building it apart then copying it into the response held it twice.
    """
    ids = workflow.task_ids
    end = page_end(machine, ids, 0, Limits.page_tasks if limit is None else limit)
    tasks = [machine.tasks[t] for t in ids[:end]]
    start = workflow.started_at or workflow.created_at
    finish = workflow.finished_at or now
    result = pb.WorkflowResult() if into is None else into
    result.Clear()  # a command may run again after a failed tick: never append twice
    result.workflow_id = workflow.id
    result.state = WORKFLOW_STATE_TO_PB[workflow.state]
    results = result.results_json
    for task in tasks:
        if task.state is TaskState.COMPLETED and task.result is not None:
            results[task.name] = task.result
    result.critical_path.extend(executed_critical_path(machine, workflow))
    result.duration_s = max(0.0, finish - start)
    result.error = workflow.error
    statuses = result.tasks
    for task in tasks:
        task_status(machine, task, into=statuses)
    result.next_page_token = str(end) if end < len(ids) else ""
    return result


# What a task's status costs in an answer besides its result (ids, name, times, agent, error).
_STATUS_BYTES = 256


def page_end(machine: Machine, ids: Sequence[str], start: int, size: int) -> int:
    """Where a page of tasks from ``start`` ends: ``size`` tasks, or fewer once the page's results
    pass ``Limits.max_page_bytes`` (a page holds at least one task, if any is left)."""
    end = min(len(ids), start + max(0, size))
    budget = Limits.max_page_bytes
    tasks = machine.tasks
    for index in range(start, end):
        result = tasks[ids[index]].result
        budget -= _STATUS_BYTES + (len(result) if result else 0)
        if budget < 0 and index > start:
            return index
    return end


def event_to_proto(event: WorkflowEvent) -> orchestrator_pb2.WorkflowEvent:
    return orchestrator_pb2.WorkflowEvent(
        seq=event.seq,
        at=timestamp(event.at),
        workflow_id=event.workflow_id,
        workflow_state=WORKFLOW_STATE_TO_PB[event.workflow_state],
        task_id=event.task_id,
        task_name=event.task_name,
        task_state=TASK_STATE_TO_PB[event.task_state] if event.task_state else pb.TASK_STATE_UNSPECIFIED,
        attempt_id=event.attempt_id,
        agent_id=event.agent_id,
        message=event.message,
        kind=event.kind,
        reason=event.reason,
    )


def agent_info(agent: Agent, view: AgentView | None, running: int, usage: pb.Usage | None) -> pb.AgentInfo:
    message = pb.AgentInfo(
        agent_id=agent.id,
        name=agent.name,
        state=AGENT_STATE_TO_PB[agent.state],
        agent_types=agent.agent_types,
        labels=dict(agent.labels),
        inventory=inventory_to_proto(agent.inventory),
        allocated=resources_to_proto(view.allocated if view else Resources()),
        running_attempts=running,
        last_heartbeat=timestamp(agent.last_seen),
        connected_at=timestamp(agent.connected_at),
        hostname=agent.hostname,
        version=agent.version,
    )
    if usage is not None:
        message.usage.CopyFrom(usage)
    if agent.cordoned_until is not None:
        set_stamp(message.cordoned_until, agent.cordoned_until)
        message.cordon_reason = agent.cordon_reason
    if agent.cordoned_by:  # issue 11: a manual cordon (no end)
        message.cordon_reason = agent.cordon_reason
        message.cordoned_by = agent.cordoned_by
    message.cordoned = agent.cordoned_until is not None or bool(agent.cordoned_by)
    return message
