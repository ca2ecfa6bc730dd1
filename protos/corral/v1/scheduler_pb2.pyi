from corral.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScheduleTaskRequest(_message.Message):
    __slots__ = ("task", "idempotency_key")
    TASK_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    task: _types_pb2.TaskSpec
    idempotency_key: str
    def __init__(self, task: _Optional[_Union[_types_pb2.TaskSpec, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ScheduleTaskResponse(_message.Message):
    __slots__ = ("task_id", "workflow_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    workflow_id: str
    def __init__(self, task_id: _Optional[str] = ..., workflow_id: _Optional[str] = ...) -> None: ...

class GetNextTaskRequest(_message.Message):
    __slots__ = ("worker_id", "agent_types", "labels", "capacity", "wait_s")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    agent_types: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    capacity: _types_pb2.ResourceRequirements
    wait_s: float
    def __init__(self, worker_id: _Optional[str] = ..., agent_types: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., capacity: _Optional[_Union[_types_pb2.ResourceRequirements, _Mapping]] = ..., wait_s: _Optional[float] = ...) -> None: ...

class GetNextTaskResponse(_message.Message):
    __slots__ = ("found", "assignment")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    found: bool
    assignment: _types_pb2.TaskAssignment
    def __init__(self, found: _Optional[bool] = ..., assignment: _Optional[_Union[_types_pb2.TaskAssignment, _Mapping]] = ...) -> None: ...

class CompleteTaskRequest(_message.Message):
    __slots__ = ("attempt_id", "worker_id", "result_json")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    attempt_id: str
    worker_id: str
    result_json: bytes
    def __init__(self, attempt_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., result_json: _Optional[bytes] = ...) -> None: ...

class CompleteTaskResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    def __init__(self, accepted: _Optional[bool] = ...) -> None: ...

class FailTaskRequest(_message.Message):
    __slots__ = ("attempt_id", "worker_id", "error", "permanent")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PERMANENT_FIELD_NUMBER: _ClassVar[int]
    attempt_id: str
    worker_id: str
    error: str
    permanent: bool
    def __init__(self, attempt_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., error: _Optional[str] = ..., permanent: _Optional[bool] = ...) -> None: ...

class FailTaskResponse(_message.Message):
    __slots__ = ("accepted", "will_retry")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    WILL_RETRY_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    will_retry: bool
    def __init__(self, accepted: _Optional[bool] = ..., will_retry: _Optional[bool] = ...) -> None: ...

class AnalyzeDependenciesRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: _types_pb2.WorkflowSpec
    def __init__(self, spec: _Optional[_Union[_types_pb2.WorkflowSpec, _Mapping]] = ...) -> None: ...

class AnalyzeDependenciesResponse(_message.Message):
    __slots__ = ("plan", "roots", "leaves", "max_width", "depth", "redundant_edges", "immediate_dominators")
    class ImmediateDominatorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PLAN_FIELD_NUMBER: _ClassVar[int]
    ROOTS_FIELD_NUMBER: _ClassVar[int]
    LEAVES_FIELD_NUMBER: _ClassVar[int]
    MAX_WIDTH_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    REDUNDANT_EDGES_FIELD_NUMBER: _ClassVar[int]
    IMMEDIATE_DOMINATORS_FIELD_NUMBER: _ClassVar[int]
    plan: _types_pb2.ExecutionPlan
    roots: _containers.RepeatedScalarFieldContainer[str]
    leaves: _containers.RepeatedScalarFieldContainer[str]
    max_width: int
    depth: int
    redundant_edges: _containers.RepeatedCompositeFieldContainer[DependencyEdge]
    immediate_dominators: _containers.ScalarMap[str, str]
    def __init__(self, plan: _Optional[_Union[_types_pb2.ExecutionPlan, _Mapping]] = ..., roots: _Optional[_Iterable[str]] = ..., leaves: _Optional[_Iterable[str]] = ..., max_width: _Optional[int] = ..., depth: _Optional[int] = ..., redundant_edges: _Optional[_Iterable[_Union[DependencyEdge, _Mapping]]] = ..., immediate_dominators: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DependencyEdge(_message.Message):
    __slots__ = ("to",)
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    to: str
    def __init__(self, to: _Optional[str] = ..., **kwargs) -> None: ...

class ExplainTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class AgentVerdict(_message.Message):
    __slots__ = ("agent_id", "agent_name", "reason")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    agent_name: str
    reason: str
    def __init__(self, agent_id: _Optional[str] = ..., agent_name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ExplainTaskResponse(_message.Message):
    __slots__ = ("task", "reason", "waiting_on", "agents", "last_plan_reason", "last_plan_age_s", "demand_class", "slack_s", "deadline_note", "preemption", "checkpoint", "on_failure_note")
    TASK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WAITING_ON_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    LAST_PLAN_REASON_FIELD_NUMBER: _ClassVar[int]
    LAST_PLAN_AGE_S_FIELD_NUMBER: _ClassVar[int]
    DEMAND_CLASS_FIELD_NUMBER: _ClassVar[int]
    SLACK_S_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_NOTE_FIELD_NUMBER: _ClassVar[int]
    PREEMPTION_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    ON_FAILURE_NOTE_FIELD_NUMBER: _ClassVar[int]
    task: _types_pb2.TaskStatus
    reason: str
    waiting_on: _containers.RepeatedScalarFieldContainer[str]
    agents: _containers.RepeatedCompositeFieldContainer[AgentVerdict]
    last_plan_reason: str
    last_plan_age_s: float
    demand_class: str
    slack_s: float
    deadline_note: str
    preemption: str
    checkpoint: str
    on_failure_note: str
    def __init__(self, task: _Optional[_Union[_types_pb2.TaskStatus, _Mapping]] = ..., reason: _Optional[str] = ..., waiting_on: _Optional[_Iterable[str]] = ..., agents: _Optional[_Iterable[_Union[AgentVerdict, _Mapping]]] = ..., last_plan_reason: _Optional[str] = ..., last_plan_age_s: _Optional[float] = ..., demand_class: _Optional[str] = ..., slack_s: _Optional[float] = ..., deadline_note: _Optional[str] = ..., preemption: _Optional[str] = ..., checkpoint: _Optional[str] = ..., on_failure_note: _Optional[str] = ...) -> None: ...
