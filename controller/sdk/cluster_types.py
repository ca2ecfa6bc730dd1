"""Result types of the Cluster and Scheduler calls: agents, assignments and worker reports."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from corral.controller.sdk.records import Record, Resources, decode_json, state_name, timestamp
from corral.v1 import scheduler_pb2
from corral.v1 import types_pb2 as pb

__all__ = ["AgentInfo", "AgentVerdict", "Assignment", "FailOutcome", "Inventory", "ScheduledTask", "Usage"]


@dataclasses.dataclass(frozen=True)
class Inventory(Record):
    """What an agent's machine offers."""

    cpu_cores: float
    memory_mb: int
    disk_mb: int
    network_bandwidth_mbps: int
    gpu_count: int
    gpus: tuple[Mapping[str, Any], ...]
    custom_resources: Mapping[str, float]
    slots: int

    @classmethod
    def from_proto(cls, m: pb.Inventory) -> Inventory:
        gpus = tuple({"index": g.index, "name": g.name, "memory_mb": g.memory_mb, "uuid": g.uuid} for g in m.gpus)
        return cls(
            m.cpu_cores,
            m.memory_mb,
            m.disk_mb,
            m.network_bandwidth_mbps,
            m.gpu_count,
            gpus,
            dict(m.custom_resources),
            m.slots,
        )


@dataclasses.dataclass(frozen=True)
class Usage(Record):
    """An agent's load from its last heartbeat."""

    cpu_percent: float
    memory_used_mb: int
    load_1m: float
    running_attempts: int
    disk_free_mb: int

    @classmethod
    def from_proto(cls, m: pb.Usage) -> Usage:
        return cls(m.cpu_percent, m.memory_used_mb, m.load_1m, m.running_attempts, m.disk_free_mb)


@dataclasses.dataclass(frozen=True)
class AgentInfo(Record):
    """An agent known to the controller."""

    agent_id: str
    name: str
    state: str
    hostname: str
    version: str
    agent_types: tuple[str, ...]
    labels: Mapping[str, str]
    inventory: Inventory
    allocated: Resources
    usage: Usage
    running_attempts: int
    connected_at: datetime | None
    last_heartbeat: datetime | None
    raw: pb.AgentInfo = dataclasses.field(repr=False, compare=False)
    # Issue 10: no new work until then because its tasks kept failing (None: not cordoned), and why.
    cordoned_until: datetime | None = None
    cordon_reason: str = ""
    # Issue 11: cordoned at all (a manual cordon has no cordoned_until), and by whom ("": automatic).
    cordoned: bool = False
    cordoned_by: str = ""

    @classmethod
    def from_proto(cls, m: pb.AgentInfo) -> AgentInfo:
        return cls(
            agent_id=m.agent_id,
            name=m.name,
            state=state_name(pb.AgentState, m.state, "AGENT_STATE_"),
            hostname=m.hostname,
            version=m.version,
            agent_types=tuple(m.agent_types),
            labels=dict(m.labels),
            inventory=Inventory.from_proto(m.inventory),
            allocated=Resources.from_proto(m.allocated),
            usage=Usage.from_proto(m.usage),
            running_attempts=m.running_attempts,
            connected_at=timestamp(m, "connected_at"),
            last_heartbeat=timestamp(m, "last_heartbeat"),
            raw=m,
            cordoned_until=timestamp(m, "cordoned_until"),
            cordon_reason=m.cordon_reason,
            cordoned=m.cordoned,
            cordoned_by=m.cordoned_by,
        )


@dataclasses.dataclass(frozen=True)
class AgentVerdict(Record):
    """Why one agent can (``reason`` empty) or cannot take a task now."""

    agent_id: str
    agent_name: str
    reason: str

    @classmethod
    def from_proto(cls, m: scheduler_pb2.AgentVerdict) -> AgentVerdict:
        return cls(m.agent_id, m.agent_name, m.reason)


@dataclasses.dataclass(frozen=True)
class Assignment(Record):
    """One attempt handed to an external worker by GetNextTask; report it with complete/fail_task."""

    attempt_id: str
    task_id: str
    workflow_id: str
    task_name: str
    agent_type: str
    payload: Any
    resources: Resources
    timeout_s: float | None
    inputs: Mapping[str, Any]
    gpu_ids: tuple[int, ...]
    attempt_number: int
    raw: pb.TaskAssignment = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: pb.TaskAssignment) -> Assignment:
        return cls(
            attempt_id=m.attempt_id,
            task_id=m.task_id,
            workflow_id=m.workflow_id,
            task_name=m.task_name,
            agent_type=m.agent_type,
            payload=decode_json(m.payload_json),
            resources=Resources.from_proto(m.resources),
            timeout_s=m.timeout_s or None,
            inputs={name: decode_json(value) for name, value in m.inputs_json.items()},
            gpu_ids=tuple(m.gpu_ids),
            attempt_number=m.attempt_number,
            raw=m,
        )


@dataclasses.dataclass(frozen=True)
class ScheduledTask(Record):
    """A standalone task accepted by ScheduleTask (it runs in a workflow of its own)."""

    task_id: str
    workflow_id: str
    raw: scheduler_pb2.ScheduleTaskResponse = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: scheduler_pb2.ScheduleTaskResponse) -> ScheduledTask:
        return cls(m.task_id, m.workflow_id, raw=m)


@dataclasses.dataclass(frozen=True)
class FailOutcome(Record):
    """FailTask: whether the report was applied, and whether the task will be retried."""

    accepted: bool
    will_retry: bool
    raw: scheduler_pb2.FailTaskResponse = dataclasses.field(repr=False, compare=False)
