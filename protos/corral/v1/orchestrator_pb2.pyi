import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from corral.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmitWorkflowRequest(_message.Message):
    __slots__ = ("spec", "idempotency_key", "start", "wait", "wait_timeout_s", "no_cache", "params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SPEC_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    WAIT_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    NO_CACHE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    spec: _types_pb2.WorkflowSpec
    idempotency_key: str
    start: bool
    wait: bool
    wait_timeout_s: float
    no_cache: bool
    params: _containers.ScalarMap[str, str]
    def __init__(self, spec: _Optional[_Union[_types_pb2.WorkflowSpec, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., start: _Optional[bool] = ..., wait: _Optional[bool] = ..., wait_timeout_s: _Optional[float] = ..., no_cache: _Optional[bool] = ..., params: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SubmitWorkflowResponse(_message.Message):
    __slots__ = ("workflow_id", "plan", "deduplicated", "result", "deadline_verdict", "deadline_message")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_VERDICT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    plan: _types_pb2.ExecutionPlan
    deduplicated: bool
    result: _types_pb2.WorkflowResult
    deadline_verdict: str
    deadline_message: str
    def __init__(self, workflow_id: _Optional[str] = ..., plan: _Optional[_Union[_types_pb2.ExecutionPlan, _Mapping]] = ..., deduplicated: _Optional[bool] = ..., result: _Optional[_Union[_types_pb2.WorkflowResult, _Mapping]] = ..., deadline_verdict: _Optional[str] = ..., deadline_message: _Optional[str] = ...) -> None: ...

class ExecuteWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id", "wait", "wait_timeout_s", "summary_only")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    WAIT_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_ONLY_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    wait: bool
    wait_timeout_s: float
    summary_only: bool
    def __init__(self, workflow_id: _Optional[str] = ..., wait: _Optional[bool] = ..., wait_timeout_s: _Optional[float] = ..., summary_only: _Optional[bool] = ...) -> None: ...

class ExecuteWorkflowResponse(_message.Message):
    __slots__ = ("status", "result")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    status: _types_pb2.WorkflowStatus
    result: _types_pb2.WorkflowResult
    def __init__(self, status: _Optional[_Union[_types_pb2.WorkflowStatus, _Mapping]] = ..., result: _Optional[_Union[_types_pb2.WorkflowResult, _Mapping]] = ...) -> None: ...

class CancelWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id", "force", "reason")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    force: bool
    reason: str
    def __init__(self, workflow_id: _Optional[str] = ..., force: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelWorkflowResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _types_pb2.WorkflowStatus
    def __init__(self, status: _Optional[_Union[_types_pb2.WorkflowStatus, _Mapping]] = ...) -> None: ...

class GetWorkflowStatusRequest(_message.Message):
    __slots__ = ("workflow_id", "include_tasks", "page_size", "page_token")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TASKS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    include_tasks: bool
    page_size: int
    page_token: str
    def __init__(self, workflow_id: _Optional[str] = ..., include_tasks: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetWorkflowStatusResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _types_pb2.WorkflowStatus
    def __init__(self, status: _Optional[_Union[_types_pb2.WorkflowStatus, _Mapping]] = ...) -> None: ...

class PauseWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id",)
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ...) -> None: ...

class PauseWorkflowResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _types_pb2.WorkflowStatus
    def __init__(self, status: _Optional[_Union[_types_pb2.WorkflowStatus, _Mapping]] = ...) -> None: ...

class ResumeWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id",)
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ...) -> None: ...

class ResumeWorkflowResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _types_pb2.WorkflowStatus
    def __init__(self, status: _Optional[_Union[_types_pb2.WorkflowStatus, _Mapping]] = ...) -> None: ...

class ListWorkflowsRequest(_message.Message):
    __slots__ = ("states", "name_prefix", "limit", "page_token", "namespace")
    STATES_FIELD_NUMBER: _ClassVar[int]
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[_types_pb2.WorkflowState]
    name_prefix: str
    limit: int
    page_token: str
    namespace: str
    def __init__(self, states: _Optional[_Iterable[_Union[_types_pb2.WorkflowState, str]]] = ..., name_prefix: _Optional[str] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ..., namespace: _Optional[str] = ...) -> None: ...

class ListWorkflowsResponse(_message.Message):
    __slots__ = ("workflows", "next_page_token")
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workflows: _containers.RepeatedCompositeFieldContainer[_types_pb2.WorkflowSummary]
    next_page_token: str
    def __init__(self, workflows: _Optional[_Iterable[_Union[_types_pb2.WorkflowSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id", "after_seq")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    after_seq: int
    def __init__(self, workflow_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class WorkflowEvent(_message.Message):
    __slots__ = ("seq", "at", "workflow_id", "workflow_state", "task_id", "task_name", "task_state", "attempt_id", "agent_id", "message", "kind", "reason")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_STATE_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at: _timestamp_pb2.Timestamp
    workflow_id: str
    workflow_state: _types_pb2.WorkflowState
    task_id: str
    task_name: str
    task_state: _types_pb2.TaskState
    attempt_id: str
    agent_id: str
    message: str
    kind: str
    reason: str
    def __init__(self, seq: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., workflow_id: _Optional[str] = ..., workflow_state: _Optional[_Union[_types_pb2.WorkflowState, str]] = ..., task_id: _Optional[str] = ..., task_name: _Optional[str] = ..., task_state: _Optional[_Union[_types_pb2.TaskState, str]] = ..., attempt_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., message: _Optional[str] = ..., kind: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetWorkflowEventsRequest(_message.Message):
    __slots__ = ("workflow_id", "after_seq", "limit", "task")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    after_seq: int
    limit: int
    task: str
    def __init__(self, workflow_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., limit: _Optional[int] = ..., task: _Optional[str] = ...) -> None: ...

class GetWorkflowEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[WorkflowEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[WorkflowEvent, _Mapping]]] = ...) -> None: ...

class GetExecutionPlanRequest(_message.Message):
    __slots__ = ("workflow_id", "spec")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    spec: _types_pb2.WorkflowSpec
    def __init__(self, workflow_id: _Optional[str] = ..., spec: _Optional[_Union[_types_pb2.WorkflowSpec, _Mapping]] = ...) -> None: ...

class GetExecutionPlanResponse(_message.Message):
    __slots__ = ("plan",)
    PLAN_FIELD_NUMBER: _ClassVar[int]
    plan: _types_pb2.ExecutionPlan
    def __init__(self, plan: _Optional[_Union[_types_pb2.ExecutionPlan, _Mapping]] = ...) -> None: ...

class GetTaskLogsRequest(_message.Message):
    __slots__ = ("task_id", "attempt_id", "stdout_offset", "stderr_offset")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    STDOUT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    STDERR_OFFSET_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt_id: str
    stdout_offset: int
    stderr_offset: int
    def __init__(self, task_id: _Optional[str] = ..., attempt_id: _Optional[str] = ..., stdout_offset: _Optional[int] = ..., stderr_offset: _Optional[int] = ...) -> None: ...

class GetTaskLogsResponse(_message.Message):
    __slots__ = ("attempt_id", "stdout", "stderr", "stdout_offset", "stderr_offset", "finished", "truncated")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    STDOUT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    STDERR_OFFSET_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    attempt_id: str
    stdout: bytes
    stderr: bytes
    stdout_offset: int
    stderr_offset: int
    finished: bool
    truncated: bool
    def __init__(self, attempt_id: _Optional[str] = ..., stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., stdout_offset: _Optional[int] = ..., stderr_offset: _Optional[int] = ..., finished: _Optional[bool] = ..., truncated: _Optional[bool] = ...) -> None: ...

class RetryWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id", "from_task", "fresh")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_TASK_FIELD_NUMBER: _ClassVar[int]
    FRESH_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    from_task: str
    fresh: bool
    def __init__(self, workflow_id: _Optional[str] = ..., from_task: _Optional[str] = ..., fresh: _Optional[bool] = ...) -> None: ...

class RetryWorkflowResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _types_pb2.WorkflowStatus
    def __init__(self, status: _Optional[_Union[_types_pb2.WorkflowStatus, _Mapping]] = ...) -> None: ...

class RerunWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id",)
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ...) -> None: ...

class RerunWorkflowResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _types_pb2.WorkflowStatus
    def __init__(self, status: _Optional[_Union[_types_pb2.WorkflowStatus, _Mapping]] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("workflow_id",)
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ...) -> None: ...

class RunInfo(_message.Message):
    __slots__ = ("number", "kind", "from_task", "fresh", "started_at", "finished_at", "state", "error", "attempts", "failed_attempts", "tasks_run")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FROM_TASK_FIELD_NUMBER: _ClassVar[int]
    FRESH_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    FAILED_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    TASKS_RUN_FIELD_NUMBER: _ClassVar[int]
    number: int
    kind: str
    from_task: str
    fresh: bool
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    state: _types_pb2.WorkflowState
    error: str
    attempts: int
    failed_attempts: int
    tasks_run: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, number: _Optional[int] = ..., kind: _Optional[str] = ..., from_task: _Optional[str] = ..., fresh: _Optional[bool] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[_types_pb2.WorkflowState, str]] = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ..., failed_attempts: _Optional[int] = ..., tasks_run: _Optional[_Iterable[str]] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("workflow_id", "runs")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    runs: _containers.RepeatedCompositeFieldContainer[RunInfo]
    def __init__(self, workflow_id: _Optional[str] = ..., runs: _Optional[_Iterable[_Union[RunInfo, _Mapping]]] = ...) -> None: ...

class ResolveApprovalRequest(_message.Message):
    __slots__ = ("workflow_id", "task", "approve", "reason")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    APPROVE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    task: str
    approve: bool
    reason: str
    def __init__(self, workflow_id: _Optional[str] = ..., task: _Optional[str] = ..., approve: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ResolveApprovalResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _types_pb2.TaskStatus
    def __init__(self, task: _Optional[_Union[_types_pb2.TaskStatus, _Mapping]] = ...) -> None: ...

class ListAttemptsRequest(_message.Message):
    __slots__ = ("workflow_id", "task")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    task: str
    def __init__(self, workflow_id: _Optional[str] = ..., task: _Optional[str] = ...) -> None: ...

class AttemptInfo(_message.Message):
    __slots__ = ("attempt_id", "number", "run", "state", "agent_id", "agent_name", "assigned_at", "started_at", "finished_at", "exit_code_known", "exit_code", "error", "peak_rss_bytes", "cpu_s")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_KNOWN_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PEAK_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_S_FIELD_NUMBER: _ClassVar[int]
    attempt_id: str
    number: int
    run: int
    state: str
    agent_id: str
    agent_name: str
    assigned_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    exit_code_known: bool
    exit_code: int
    error: str
    peak_rss_bytes: int
    cpu_s: float
    def __init__(self, attempt_id: _Optional[str] = ..., number: _Optional[int] = ..., run: _Optional[int] = ..., state: _Optional[str] = ..., agent_id: _Optional[str] = ..., agent_name: _Optional[str] = ..., assigned_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exit_code_known: _Optional[bool] = ..., exit_code: _Optional[int] = ..., error: _Optional[str] = ..., peak_rss_bytes: _Optional[int] = ..., cpu_s: _Optional[float] = ...) -> None: ...

class ListAttemptsResponse(_message.Message):
    __slots__ = ("workflow_id", "task_id", "task_name", "attempts")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    task_id: str
    task_name: str
    attempts: _containers.RepeatedCompositeFieldContainer[AttemptInfo]
    def __init__(self, workflow_id: _Optional[str] = ..., task_id: _Optional[str] = ..., task_name: _Optional[str] = ..., attempts: _Optional[_Iterable[_Union[AttemptInfo, _Mapping]]] = ...) -> None: ...

class AppendTasksRequest(_message.Message):
    __slots__ = ("upload_id", "tasks", "index", "chunks", "submit")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    tasks: _containers.RepeatedCompositeFieldContainer[_types_pb2.TaskSpec]
    index: int
    chunks: int
    submit: SubmitWorkflowRequest
    def __init__(self, upload_id: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[_types_pb2.TaskSpec, _Mapping]]] = ..., index: _Optional[int] = ..., chunks: _Optional[int] = ..., submit: _Optional[_Union[SubmitWorkflowRequest, _Mapping]] = ...) -> None: ...

class AppendTasksResponse(_message.Message):
    __slots__ = ("upload_id", "received", "task_count", "submitted")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    TASK_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    received: int
    task_count: int
    submitted: SubmitWorkflowResponse
    def __init__(self, upload_id: _Optional[str] = ..., received: _Optional[int] = ..., task_count: _Optional[int] = ..., submitted: _Optional[_Union[SubmitWorkflowResponse, _Mapping]] = ...) -> None: ...
