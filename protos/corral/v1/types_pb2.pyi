import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_TYPE_UNSPECIFIED: _ClassVar[TaskType]
    TASK_TYPE_COMPUTE: _ClassVar[TaskType]
    TASK_TYPE_IO: _ClassVar[TaskType]
    TASK_TYPE_NETWORK: _ClassVar[TaskType]
    TASK_TYPE_HYBRID: _ClassVar[TaskType]

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_PENDING: _ClassVar[TaskState]
    TASK_STATE_READY: _ClassVar[TaskState]
    TASK_STATE_ASSIGNED: _ClassVar[TaskState]
    TASK_STATE_RUNNING: _ClassVar[TaskState]
    TASK_STATE_COMPLETED: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
    TASK_STATE_CANCELLED: _ClassVar[TaskState]
    TASK_STATE_SKIPPED: _ClassVar[TaskState]

class WorkflowState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKFLOW_STATE_UNSPECIFIED: _ClassVar[WorkflowState]
    WORKFLOW_STATE_PENDING: _ClassVar[WorkflowState]
    WORKFLOW_STATE_RUNNING: _ClassVar[WorkflowState]
    WORKFLOW_STATE_PAUSED: _ClassVar[WorkflowState]
    WORKFLOW_STATE_CANCELLING: _ClassVar[WorkflowState]
    WORKFLOW_STATE_COMPLETED: _ClassVar[WorkflowState]
    WORKFLOW_STATE_FAILED: _ClassVar[WorkflowState]
    WORKFLOW_STATE_CANCELLED: _ClassVar[WorkflowState]
    WORKFLOW_STATE_COMPENSATING: _ClassVar[WorkflowState]

class AttemptOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTEMPT_OUTCOME_UNSPECIFIED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_SUCCEEDED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_FAILED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_TIMED_OUT: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_CANCELLED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_LOST: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_FENCED: _ClassVar[AttemptOutcome]

class OnDisconnect(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ON_DISCONNECT_UNSPECIFIED: _ClassVar[OnDisconnect]
    ON_DISCONNECT_STOP: _ClassVar[OnDisconnect]
    ON_DISCONNECT_KEEP: _ClassVar[OnDisconnect]

class AgentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGENT_STATE_UNSPECIFIED: _ClassVar[AgentState]
    AGENT_STATE_CONNECTED: _ClassVar[AgentState]
    AGENT_STATE_DRAINING: _ClassVar[AgentState]
    AGENT_STATE_LOST: _ClassVar[AgentState]
    AGENT_STATE_DISCONNECTED: _ClassVar[AgentState]
    AGENT_STATE_DRAINED: _ClassVar[AgentState]
TASK_TYPE_UNSPECIFIED: TaskType
TASK_TYPE_COMPUTE: TaskType
TASK_TYPE_IO: TaskType
TASK_TYPE_NETWORK: TaskType
TASK_TYPE_HYBRID: TaskType
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_PENDING: TaskState
TASK_STATE_READY: TaskState
TASK_STATE_ASSIGNED: TaskState
TASK_STATE_RUNNING: TaskState
TASK_STATE_COMPLETED: TaskState
TASK_STATE_FAILED: TaskState
TASK_STATE_CANCELLED: TaskState
TASK_STATE_SKIPPED: TaskState
WORKFLOW_STATE_UNSPECIFIED: WorkflowState
WORKFLOW_STATE_PENDING: WorkflowState
WORKFLOW_STATE_RUNNING: WorkflowState
WORKFLOW_STATE_PAUSED: WorkflowState
WORKFLOW_STATE_CANCELLING: WorkflowState
WORKFLOW_STATE_COMPLETED: WorkflowState
WORKFLOW_STATE_FAILED: WorkflowState
WORKFLOW_STATE_CANCELLED: WorkflowState
WORKFLOW_STATE_COMPENSATING: WorkflowState
ATTEMPT_OUTCOME_UNSPECIFIED: AttemptOutcome
ATTEMPT_OUTCOME_SUCCEEDED: AttemptOutcome
ATTEMPT_OUTCOME_FAILED: AttemptOutcome
ATTEMPT_OUTCOME_TIMED_OUT: AttemptOutcome
ATTEMPT_OUTCOME_CANCELLED: AttemptOutcome
ATTEMPT_OUTCOME_LOST: AttemptOutcome
ATTEMPT_OUTCOME_FENCED: AttemptOutcome
ON_DISCONNECT_UNSPECIFIED: OnDisconnect
ON_DISCONNECT_STOP: OnDisconnect
ON_DISCONNECT_KEEP: OnDisconnect
AGENT_STATE_UNSPECIFIED: AgentState
AGENT_STATE_CONNECTED: AgentState
AGENT_STATE_DRAINING: AgentState
AGENT_STATE_LOST: AgentState
AGENT_STATE_DISCONNECTED: AgentState
AGENT_STATE_DRAINED: AgentState

class ResourceRequirements(_message.Message):
    __slots__ = ("cpu_cores", "memory_mb", "disk_mb", "network_bandwidth_mbps", "gpu_count", "custom_resources")
    class CustomResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    DISK_MB_FIELD_NUMBER: _ClassVar[int]
    NETWORK_BANDWIDTH_MBPS_FIELD_NUMBER: _ClassVar[int]
    GPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    cpu_cores: float
    memory_mb: int
    disk_mb: int
    network_bandwidth_mbps: int
    gpu_count: int
    custom_resources: _containers.ScalarMap[str, float]
    def __init__(self, cpu_cores: _Optional[float] = ..., memory_mb: _Optional[int] = ..., disk_mb: _Optional[int] = ..., network_bandwidth_mbps: _Optional[int] = ..., gpu_count: _Optional[int] = ..., custom_resources: _Optional[_Mapping[str, float]] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("name", "type", "agent_type", "payload_json", "resources", "priority", "timeout_s", "retries", "dependencies", "constraints", "estimated_duration_s", "retry_backoff_s", "on_disconnect", "max_disconnect_s", "max_agent_losses", "constraint_exprs", "spread", "affinity", "deadline", "preemptible", "max_preemptions", "gang", "map", "compensate_json", "fallback_json", "allow_failure", "min_success", "approval", "cache")
    class ConstraintsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AffinityEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    AGENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    RETRY_BACKOFF_S_FIELD_NUMBER: _ClassVar[int]
    ON_DISCONNECT_FIELD_NUMBER: _ClassVar[int]
    MAX_DISCONNECT_S_FIELD_NUMBER: _ClassVar[int]
    MAX_AGENT_LOSSES_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_EXPRS_FIELD_NUMBER: _ClassVar[int]
    SPREAD_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIBLE_FIELD_NUMBER: _ClassVar[int]
    MAX_PREEMPTIONS_FIELD_NUMBER: _ClassVar[int]
    GANG_FIELD_NUMBER: _ClassVar[int]
    MAP_FIELD_NUMBER: _ClassVar[int]
    COMPENSATE_JSON_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_JSON_FIELD_NUMBER: _ClassVar[int]
    ALLOW_FAILURE_FIELD_NUMBER: _ClassVar[int]
    MIN_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: TaskType
    agent_type: str
    payload_json: bytes
    resources: ResourceRequirements
    priority: int
    timeout_s: float
    retries: int
    dependencies: _containers.RepeatedScalarFieldContainer[str]
    constraints: _containers.ScalarMap[str, str]
    estimated_duration_s: float
    retry_backoff_s: float
    on_disconnect: OnDisconnect
    max_disconnect_s: float
    max_agent_losses: int
    constraint_exprs: _containers.RepeatedCompositeFieldContainer[LabelExpression]
    spread: str
    affinity: _containers.ScalarMap[str, str]
    deadline: str
    preemptible: bool
    max_preemptions: int
    gang: str
    map: str
    compensate_json: bytes
    fallback_json: bytes
    allow_failure: bool
    min_success: int
    approval: ApprovalSpec
    cache: TaskCache
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[TaskType, str]] = ..., agent_type: _Optional[str] = ..., payload_json: _Optional[bytes] = ..., resources: _Optional[_Union[ResourceRequirements, _Mapping]] = ..., priority: _Optional[int] = ..., timeout_s: _Optional[float] = ..., retries: _Optional[int] = ..., dependencies: _Optional[_Iterable[str]] = ..., constraints: _Optional[_Mapping[str, str]] = ..., estimated_duration_s: _Optional[float] = ..., retry_backoff_s: _Optional[float] = ..., on_disconnect: _Optional[_Union[OnDisconnect, str]] = ..., max_disconnect_s: _Optional[float] = ..., max_agent_losses: _Optional[int] = ..., constraint_exprs: _Optional[_Iterable[_Union[LabelExpression, _Mapping]]] = ..., spread: _Optional[str] = ..., affinity: _Optional[_Mapping[str, str]] = ..., deadline: _Optional[str] = ..., preemptible: _Optional[bool] = ..., max_preemptions: _Optional[int] = ..., gang: _Optional[str] = ..., map: _Optional[str] = ..., compensate_json: _Optional[bytes] = ..., fallback_json: _Optional[bytes] = ..., allow_failure: _Optional[bool] = ..., min_success: _Optional[int] = ..., approval: _Optional[_Union[ApprovalSpec, _Mapping]] = ..., cache: _Optional[_Union[TaskCache, _Mapping]] = ...) -> None: ...

class ApprovalSpec(_message.Message):
    __slots__ = ("timeout_s", "message")
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    timeout_s: float
    message: str
    def __init__(self, timeout_s: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class TaskCache(_message.Message):
    __slots__ = ("key", "ttl_s", "version")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    key: str
    ttl_s: float
    version: str
    def __init__(self, key: _Optional[str] = ..., ttl_s: _Optional[float] = ..., version: _Optional[str] = ...) -> None: ...

class LabelExpression(_message.Message):
    __slots__ = ("key", "op", "values")
    KEY_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    key: str
    op: str
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[str] = ..., op: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class WorkflowSpec(_message.Message):
    __slots__ = ("name", "tasks", "metadata_json", "labels", "priority", "namespace", "max_agent_losses", "deadline", "deadline_policy", "max_parallel", "on_failure", "params_json", "scheduled_at")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    MAX_AGENT_LOSSES_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_POLICY_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_FIELD_NUMBER: _ClassVar[int]
    ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    tasks: _containers.RepeatedCompositeFieldContainer[TaskSpec]
    metadata_json: bytes
    labels: _containers.ScalarMap[str, str]
    priority: int
    namespace: str
    max_agent_losses: int
    deadline: str
    deadline_policy: str
    max_parallel: int
    on_failure: str
    params_json: bytes
    scheduled_at: str
    def __init__(self, name: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[TaskSpec, _Mapping]]] = ..., metadata_json: _Optional[bytes] = ..., labels: _Optional[_Mapping[str, str]] = ..., priority: _Optional[int] = ..., namespace: _Optional[str] = ..., max_agent_losses: _Optional[int] = ..., deadline: _Optional[str] = ..., deadline_policy: _Optional[str] = ..., max_parallel: _Optional[int] = ..., on_failure: _Optional[str] = ..., params_json: _Optional[bytes] = ..., scheduled_at: _Optional[str] = ...) -> None: ...

class ExecutionStage(_message.Message):
    __slots__ = ("index", "task_names", "estimated_duration_s")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TASK_NAMES_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    index: int
    task_names: _containers.RepeatedScalarFieldContainer[str]
    estimated_duration_s: float
    def __init__(self, index: _Optional[int] = ..., task_names: _Optional[_Iterable[str]] = ..., estimated_duration_s: _Optional[float] = ...) -> None: ...

class ExecutionPlan(_message.Message):
    __slots__ = ("stages", "critical_path", "estimated_duration_s", "parallelism_factor", "task_count", "total_work_s")
    STAGES_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_PATH_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    PARALLELISM_FACTOR_FIELD_NUMBER: _ClassVar[int]
    TASK_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_WORK_S_FIELD_NUMBER: _ClassVar[int]
    stages: _containers.RepeatedCompositeFieldContainer[ExecutionStage]
    critical_path: _containers.RepeatedScalarFieldContainer[str]
    estimated_duration_s: float
    parallelism_factor: float
    task_count: int
    total_work_s: float
    def __init__(self, stages: _Optional[_Iterable[_Union[ExecutionStage, _Mapping]]] = ..., critical_path: _Optional[_Iterable[str]] = ..., estimated_duration_s: _Optional[float] = ..., parallelism_factor: _Optional[float] = ..., task_count: _Optional[int] = ..., total_work_s: _Optional[float] = ...) -> None: ...

class TaskStatus(_message.Message):
    __slots__ = ("task_id", "name", "state", "agent_type", "priority", "attempts", "retries_used", "attempt_id", "agent_id", "result_json", "error", "waiting_reason", "created_at", "started_at", "finished_at", "dependencies", "workflow_id", "exit_code", "unschedulable", "agent_losses", "reruns_after_fence", "failure_reason", "peak_rss_bytes", "cpu_s", "plan_reason", "rank_s", "expected_duration_s", "duration_source", "deadline", "latest_start", "slack_s", "preemptions", "last_preemption", "preemptible", "gang", "expected_peak_rss_bytes", "expected_cpu_s", "checkpointed_at", "checkpoint_bytes", "compensation_state", "compensation_error", "compensation_task_id", "fallback_used", "approval_state", "approval_deadline", "approval_message", "cache_source_workflow_id", "cache_source_task_id", "cache_source_attempt_id", "ready_at", "exit_code_known")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    AGENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_USED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WAITING_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    UNSCHEDULABLE_FIELD_NUMBER: _ClassVar[int]
    AGENT_LOSSES_FIELD_NUMBER: _ClassVar[int]
    RERUNS_AFTER_FENCE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    PEAK_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_S_FIELD_NUMBER: _ClassVar[int]
    PLAN_REASON_FIELD_NUMBER: _ClassVar[int]
    RANK_S_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    DURATION_SOURCE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    LATEST_START_FIELD_NUMBER: _ClassVar[int]
    SLACK_S_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIONS_FIELD_NUMBER: _ClassVar[int]
    LAST_PREEMPTION_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIBLE_FIELD_NUMBER: _ClassVar[int]
    GANG_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_PEAK_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CPU_S_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTED_AT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPENSATION_STATE_FIELD_NUMBER: _ClassVar[int]
    COMPENSATION_ERROR_FIELD_NUMBER: _ClassVar[int]
    COMPENSATION_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_USED_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_STATE_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CACHE_SOURCE_WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    CACHE_SOURCE_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CACHE_SOURCE_ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    READY_AT_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_KNOWN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    name: str
    state: TaskState
    agent_type: str
    priority: int
    attempts: int
    retries_used: int
    attempt_id: str
    agent_id: str
    result_json: bytes
    error: str
    waiting_reason: str
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    dependencies: _containers.RepeatedScalarFieldContainer[str]
    workflow_id: str
    exit_code: int
    unschedulable: bool
    agent_losses: int
    reruns_after_fence: int
    failure_reason: str
    peak_rss_bytes: int
    cpu_s: float
    plan_reason: str
    rank_s: float
    expected_duration_s: float
    duration_source: str
    deadline: _timestamp_pb2.Timestamp
    latest_start: _timestamp_pb2.Timestamp
    slack_s: float
    preemptions: int
    last_preemption: str
    preemptible: bool
    gang: str
    expected_peak_rss_bytes: int
    expected_cpu_s: float
    checkpointed_at: _timestamp_pb2.Timestamp
    checkpoint_bytes: int
    compensation_state: str
    compensation_error: str
    compensation_task_id: str
    fallback_used: bool
    approval_state: str
    approval_deadline: _timestamp_pb2.Timestamp
    approval_message: str
    cache_source_workflow_id: str
    cache_source_task_id: str
    cache_source_attempt_id: str
    ready_at: _timestamp_pb2.Timestamp
    exit_code_known: bool
    def __init__(self, task_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., agent_type: _Optional[str] = ..., priority: _Optional[int] = ..., attempts: _Optional[int] = ..., retries_used: _Optional[int] = ..., attempt_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., result_json: _Optional[bytes] = ..., error: _Optional[str] = ..., waiting_reason: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dependencies: _Optional[_Iterable[str]] = ..., workflow_id: _Optional[str] = ..., exit_code: _Optional[int] = ..., unschedulable: _Optional[bool] = ..., agent_losses: _Optional[int] = ..., reruns_after_fence: _Optional[int] = ..., failure_reason: _Optional[str] = ..., peak_rss_bytes: _Optional[int] = ..., cpu_s: _Optional[float] = ..., plan_reason: _Optional[str] = ..., rank_s: _Optional[float] = ..., expected_duration_s: _Optional[float] = ..., duration_source: _Optional[str] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., latest_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., slack_s: _Optional[float] = ..., preemptions: _Optional[int] = ..., last_preemption: _Optional[str] = ..., preemptible: _Optional[bool] = ..., gang: _Optional[str] = ..., expected_peak_rss_bytes: _Optional[int] = ..., expected_cpu_s: _Optional[float] = ..., checkpointed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., checkpoint_bytes: _Optional[int] = ..., compensation_state: _Optional[str] = ..., compensation_error: _Optional[str] = ..., compensation_task_id: _Optional[str] = ..., fallback_used: _Optional[bool] = ..., approval_state: _Optional[str] = ..., approval_deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., approval_message: _Optional[str] = ..., cache_source_workflow_id: _Optional[str] = ..., cache_source_task_id: _Optional[str] = ..., cache_source_attempt_id: _Optional[str] = ..., ready_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exit_code_known: _Optional[bool] = ...) -> None: ...

class WorkflowStatus(_message.Message):
    __slots__ = ("workflow_id", "name", "state", "tasks", "task_counts", "created_at", "started_at", "finished_at", "error", "metadata_json", "labels", "task_total", "namespace", "deadline", "deadline_verdict", "slack_s", "max_parallel", "concurrency_limit", "run", "on_failure", "params_json", "scheduled_at", "schedule_id", "next_page_token")
    class TaskCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    TASK_COUNTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TASK_TOTAL_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_VERDICT_FIELD_NUMBER: _ClassVar[int]
    SLACK_S_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_AT_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_ID_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    name: str
    state: WorkflowState
    tasks: _containers.RepeatedCompositeFieldContainer[TaskStatus]
    task_counts: _containers.ScalarMap[str, int]
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    error: str
    metadata_json: bytes
    labels: _containers.ScalarMap[str, str]
    task_total: int
    namespace: str
    deadline: _timestamp_pb2.Timestamp
    deadline_verdict: str
    slack_s: float
    max_parallel: int
    concurrency_limit: int
    run: int
    on_failure: str
    params_json: bytes
    scheduled_at: _timestamp_pb2.Timestamp
    schedule_id: str
    next_page_token: str
    def __init__(self, workflow_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[WorkflowState, str]] = ..., tasks: _Optional[_Iterable[_Union[TaskStatus, _Mapping]]] = ..., task_counts: _Optional[_Mapping[str, int]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ..., metadata_json: _Optional[bytes] = ..., labels: _Optional[_Mapping[str, str]] = ..., task_total: _Optional[int] = ..., namespace: _Optional[str] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deadline_verdict: _Optional[str] = ..., slack_s: _Optional[float] = ..., max_parallel: _Optional[int] = ..., concurrency_limit: _Optional[int] = ..., run: _Optional[int] = ..., on_failure: _Optional[str] = ..., params_json: _Optional[bytes] = ..., scheduled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., schedule_id: _Optional[str] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WorkflowResult(_message.Message):
    __slots__ = ("workflow_id", "state", "results_json", "tasks", "critical_path", "duration_s", "error", "next_page_token")
    class ResultsJsonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESULTS_JSON_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_PATH_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    state: WorkflowState
    results_json: _containers.ScalarMap[str, bytes]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskStatus]
    critical_path: _containers.RepeatedScalarFieldContainer[str]
    duration_s: float
    error: str
    next_page_token: str
    def __init__(self, workflow_id: _Optional[str] = ..., state: _Optional[_Union[WorkflowState, str]] = ..., results_json: _Optional[_Mapping[str, bytes]] = ..., tasks: _Optional[_Iterable[_Union[TaskStatus, _Mapping]]] = ..., critical_path: _Optional[_Iterable[str]] = ..., duration_s: _Optional[float] = ..., error: _Optional[str] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WorkflowSummary(_message.Message):
    __slots__ = ("workflow_id", "name", "state", "task_counts", "task_total", "created_at", "started_at", "finished_at", "namespace")
    class TaskCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TASK_COUNTS_FIELD_NUMBER: _ClassVar[int]
    TASK_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    name: str
    state: WorkflowState
    task_counts: _containers.ScalarMap[str, int]
    task_total: int
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    namespace: str
    def __init__(self, workflow_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[WorkflowState, str]] = ..., task_counts: _Optional[_Mapping[str, int]] = ..., task_total: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., namespace: _Optional[str] = ...) -> None: ...

class GpuInfo(_message.Message):
    __slots__ = ("index", "name", "memory_mb", "uuid")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    memory_mb: int
    uuid: str
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., memory_mb: _Optional[int] = ..., uuid: _Optional[str] = ...) -> None: ...

class Inventory(_message.Message):
    __slots__ = ("cpu_cores", "memory_mb", "disk_mb", "network_bandwidth_mbps", "gpu_count", "gpus", "custom_resources", "slots")
    class CustomResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    DISK_MB_FIELD_NUMBER: _ClassVar[int]
    NETWORK_BANDWIDTH_MBPS_FIELD_NUMBER: _ClassVar[int]
    GPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    cpu_cores: float
    memory_mb: int
    disk_mb: int
    network_bandwidth_mbps: int
    gpu_count: int
    gpus: _containers.RepeatedCompositeFieldContainer[GpuInfo]
    custom_resources: _containers.ScalarMap[str, float]
    slots: int
    def __init__(self, cpu_cores: _Optional[float] = ..., memory_mb: _Optional[int] = ..., disk_mb: _Optional[int] = ..., network_bandwidth_mbps: _Optional[int] = ..., gpu_count: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[GpuInfo, _Mapping]]] = ..., custom_resources: _Optional[_Mapping[str, float]] = ..., slots: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("cpu_percent", "memory_used_mb", "load_1m", "running_attempts", "disk_free_mb")
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_MB_FIELD_NUMBER: _ClassVar[int]
    LOAD_1M_FIELD_NUMBER: _ClassVar[int]
    RUNNING_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DISK_FREE_MB_FIELD_NUMBER: _ClassVar[int]
    cpu_percent: float
    memory_used_mb: int
    load_1m: float
    running_attempts: int
    disk_free_mb: int
    def __init__(self, cpu_percent: _Optional[float] = ..., memory_used_mb: _Optional[int] = ..., load_1m: _Optional[float] = ..., running_attempts: _Optional[int] = ..., disk_free_mb: _Optional[int] = ...) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("agent_id", "name", "state", "agent_types", "labels", "inventory", "allocated", "running_attempts", "last_heartbeat", "connected_at", "hostname", "usage", "version", "namespaces", "cordoned_until", "cordon_reason", "cordoned", "cordoned_by")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    AGENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    CORDONED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    CORDON_REASON_FIELD_NUMBER: _ClassVar[int]
    CORDONED_FIELD_NUMBER: _ClassVar[int]
    CORDONED_BY_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    name: str
    state: AgentState
    agent_types: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    inventory: Inventory
    allocated: ResourceRequirements
    running_attempts: int
    last_heartbeat: _timestamp_pb2.Timestamp
    connected_at: _timestamp_pb2.Timestamp
    hostname: str
    usage: Usage
    version: str
    namespaces: _containers.RepeatedScalarFieldContainer[str]
    cordoned_until: _timestamp_pb2.Timestamp
    cordon_reason: str
    cordoned: bool
    cordoned_by: str
    def __init__(self, agent_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[AgentState, str]] = ..., agent_types: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., inventory: _Optional[_Union[Inventory, _Mapping]] = ..., allocated: _Optional[_Union[ResourceRequirements, _Mapping]] = ..., running_attempts: _Optional[int] = ..., last_heartbeat: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., connected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., hostname: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., version: _Optional[str] = ..., namespaces: _Optional[_Iterable[str]] = ..., cordoned_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cordon_reason: _Optional[str] = ..., cordoned: _Optional[bool] = ..., cordoned_by: _Optional[str] = ...) -> None: ...

class TaskAssignment(_message.Message):
    __slots__ = ("attempt_id", "task_id", "workflow_id", "task_name", "agent_type", "payload_json", "resources", "timeout_s", "inputs_json", "gpu_ids", "attempt_number", "secrets", "namespace", "on_disconnect", "max_disconnect_s", "checkpoint_json", "queue_order")
    class InputsJsonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    class SecretsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    INPUTS_JSON_FIELD_NUMBER: _ClassVar[int]
    GPU_IDS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ON_DISCONNECT_FIELD_NUMBER: _ClassVar[int]
    MAX_DISCONNECT_S_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_JSON_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ORDER_FIELD_NUMBER: _ClassVar[int]
    attempt_id: str
    task_id: str
    workflow_id: str
    task_name: str
    agent_type: str
    payload_json: bytes
    resources: ResourceRequirements
    timeout_s: float
    inputs_json: _containers.ScalarMap[str, bytes]
    gpu_ids: _containers.RepeatedScalarFieldContainer[int]
    attempt_number: int
    secrets: _containers.ScalarMap[str, str]
    namespace: str
    on_disconnect: OnDisconnect
    max_disconnect_s: float
    checkpoint_json: bytes
    queue_order: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, attempt_id: _Optional[str] = ..., task_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., task_name: _Optional[str] = ..., agent_type: _Optional[str] = ..., payload_json: _Optional[bytes] = ..., resources: _Optional[_Union[ResourceRequirements, _Mapping]] = ..., timeout_s: _Optional[float] = ..., inputs_json: _Optional[_Mapping[str, bytes]] = ..., gpu_ids: _Optional[_Iterable[int]] = ..., attempt_number: _Optional[int] = ..., secrets: _Optional[_Mapping[str, str]] = ..., namespace: _Optional[str] = ..., on_disconnect: _Optional[_Union[OnDisconnect, str]] = ..., max_disconnect_s: _Optional[float] = ..., checkpoint_json: _Optional[bytes] = ..., queue_order: _Optional[_Iterable[float]] = ...) -> None: ...
