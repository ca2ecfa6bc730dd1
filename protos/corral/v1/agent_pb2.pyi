import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from corral.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JoinRequest(_message.Message):
    __slots__ = ("join_token", "name")
    JOIN_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    join_token: str
    name: str
    def __init__(self, join_token: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("agent_id", "credential", "labels", "agent_types", "namespaces")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    AGENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    credential: str
    labels: _containers.ScalarMap[str, str]
    agent_types: _containers.RepeatedScalarFieldContainer[str]
    namespaces: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent_id: _Optional[str] = ..., credential: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., agent_types: _Optional[_Iterable[str]] = ..., namespaces: _Optional[_Iterable[str]] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "heartbeat", "events")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    heartbeat: Heartbeat
    events: TaskEvents
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., events: _Optional[_Union[TaskEvents, _Mapping]] = ...) -> None: ...

class ControllerMessage(_message.Message):
    __slots__ = ("welcome", "assign", "cancel", "drain", "ack", "heartbeat_ack")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ASSIGN_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_ACK_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    assign: Assign
    cancel: Cancel
    drain: Drain
    ack: Ack
    heartbeat_ack: HeartbeatAck
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., assign: _Optional[_Union[Assign, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., heartbeat_ack: _Optional[_Union[HeartbeatAck, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("agent_id", "name", "hostname", "agent_types", "labels", "inventory", "running_attempt_ids", "version", "draining", "incarnation", "finished_attempt_ids", "protocol_version")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    RUNNING_ATTEMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    FINISHED_ATTEMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    name: str
    hostname: str
    agent_types: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    inventory: _types_pb2.Inventory
    running_attempt_ids: _containers.RepeatedScalarFieldContainer[str]
    version: str
    draining: bool
    incarnation: str
    finished_attempt_ids: _containers.RepeatedScalarFieldContainer[str]
    protocol_version: int
    def __init__(self, agent_id: _Optional[str] = ..., name: _Optional[str] = ..., hostname: _Optional[str] = ..., agent_types: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., inventory: _Optional[_Union[_types_pb2.Inventory, _Mapping]] = ..., running_attempt_ids: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ..., draining: _Optional[bool] = ..., incarnation: _Optional[str] = ..., finished_attempt_ids: _Optional[_Iterable[str]] = ..., protocol_version: _Optional[int] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("agent_id", "session_epoch", "heartbeat_interval_s", "lease_s", "kill_attempt_ids", "assignment_lease_s", "labels", "agent_types", "fence_after_s", "kill_grace_s")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_EPOCH_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    KILL_ATTEMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_LEASE_S_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    AGENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    FENCE_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    KILL_GRACE_S_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    session_epoch: int
    heartbeat_interval_s: float
    lease_s: float
    kill_attempt_ids: _containers.RepeatedScalarFieldContainer[str]
    assignment_lease_s: float
    labels: _containers.ScalarMap[str, str]
    agent_types: _containers.RepeatedScalarFieldContainer[str]
    fence_after_s: float
    kill_grace_s: float
    def __init__(self, agent_id: _Optional[str] = ..., session_epoch: _Optional[int] = ..., heartbeat_interval_s: _Optional[float] = ..., lease_s: _Optional[float] = ..., kill_attempt_ids: _Optional[_Iterable[str]] = ..., assignment_lease_s: _Optional[float] = ..., labels: _Optional[_Mapping[str, str]] = ..., agent_types: _Optional[_Iterable[str]] = ..., fence_after_s: _Optional[float] = ..., kill_grace_s: _Optional[float] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("usage", "inventory", "draining", "seq")
    USAGE_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    usage: _types_pb2.Usage
    inventory: _types_pb2.Inventory
    draining: bool
    seq: int
    def __init__(self, usage: _Optional[_Union[_types_pb2.Usage, _Mapping]] = ..., inventory: _Optional[_Union[_types_pb2.Inventory, _Mapping]] = ..., draining: _Optional[bool] = ..., seq: _Optional[int] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ("seq", "heartbeat_interval_s")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    seq: int
    heartbeat_interval_s: float
    def __init__(self, seq: _Optional[int] = ..., heartbeat_interval_s: _Optional[float] = ...) -> None: ...

class TaskEvents(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[TaskEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[TaskEvent, _Mapping]]] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("attempt_id", "at", "started", "finished", "output", "checkpoint", "accepted", "released", "spawn")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    SPAWN_FIELD_NUMBER: _ClassVar[int]
    attempt_id: str
    at: _timestamp_pb2.Timestamp
    started: Started
    finished: Finished
    output: Output
    checkpoint: Checkpoint
    accepted: Accepted
    released: Released
    spawn: Spawn
    def __init__(self, attempt_id: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started: _Optional[_Union[Started, _Mapping]] = ..., finished: _Optional[_Union[Finished, _Mapping]] = ..., output: _Optional[_Union[Output, _Mapping]] = ..., checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., accepted: _Optional[_Union[Accepted, _Mapping]] = ..., released: _Optional[_Union[Released, _Mapping]] = ..., spawn: _Optional[_Union[Spawn, _Mapping]] = ...) -> None: ...

class Accepted(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Released(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Started(_message.Message):
    __slots__ = ("pid",)
    PID_FIELD_NUMBER: _ClassVar[int]
    pid: int
    def __init__(self, pid: _Optional[int] = ...) -> None: ...

class Finished(_message.Message):
    __slots__ = ("outcome", "exit_code", "result_json", "error", "retryable", "oom_killed", "peak_rss_bytes", "cpu_s")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    OOM_KILLED_FIELD_NUMBER: _ClassVar[int]
    PEAK_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_S_FIELD_NUMBER: _ClassVar[int]
    outcome: _types_pb2.AttemptOutcome
    exit_code: int
    result_json: bytes
    error: str
    retryable: bool
    oom_killed: bool
    peak_rss_bytes: int
    cpu_s: float
    def __init__(self, outcome: _Optional[_Union[_types_pb2.AttemptOutcome, str]] = ..., exit_code: _Optional[int] = ..., result_json: _Optional[bytes] = ..., error: _Optional[str] = ..., retryable: _Optional[bool] = ..., oom_killed: _Optional[bool] = ..., peak_rss_bytes: _Optional[int] = ..., cpu_s: _Optional[float] = ...) -> None: ...

class Output(_message.Message):
    __slots__ = ("stdout", "stderr", "truncated")
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    stdout: bytes
    stderr: bytes
    truncated: bool
    def __init__(self, stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., truncated: _Optional[bool] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("data_json",)
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    data_json: bytes
    def __init__(self, data_json: _Optional[bytes] = ...) -> None: ...

class Spawn(_message.Message):
    __slots__ = ("tasks_json",)
    TASKS_JSON_FIELD_NUMBER: _ClassVar[int]
    tasks_json: bytes
    def __init__(self, tasks_json: _Optional[bytes] = ...) -> None: ...

class Assign(_message.Message):
    __slots__ = ("assignments",)
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[_types_pb2.TaskAssignment]
    def __init__(self, assignments: _Optional[_Iterable[_Union[_types_pb2.TaskAssignment, _Mapping]]] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("attempt_ids", "force", "grace_s", "release_only")
    ATTEMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    GRACE_S_FIELD_NUMBER: _ClassVar[int]
    RELEASE_ONLY_FIELD_NUMBER: _ClassVar[int]
    attempt_ids: _containers.RepeatedScalarFieldContainer[str]
    force: bool
    grace_s: float
    release_only: bool
    def __init__(self, attempt_ids: _Optional[_Iterable[str]] = ..., force: _Optional[bool] = ..., grace_s: _Optional[float] = ..., release_only: _Optional[bool] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ("grace_s",)
    GRACE_S_FIELD_NUMBER: _ClassVar[int]
    grace_s: float
    def __init__(self, grace_s: _Optional[float] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("attempt_ids", "ended_workflows")
    ATTEMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    ENDED_WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    attempt_ids: _containers.RepeatedScalarFieldContainer[str]
    ended_workflows: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, attempt_ids: _Optional[_Iterable[str]] = ..., ended_workflows: _Optional[_Iterable[str]] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ("states",)
    STATES_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[_types_pb2.AgentState]
    def __init__(self, states: _Optional[_Iterable[_Union[_types_pb2.AgentState, str]]] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[_types_pb2.AgentInfo]
    def __init__(self, agents: _Optional[_Iterable[_Union[_types_pb2.AgentInfo, _Mapping]]] = ...) -> None: ...

class GetAgentRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class GetAgentResponse(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: _types_pb2.AgentInfo
    def __init__(self, agent: _Optional[_Union[_types_pb2.AgentInfo, _Mapping]] = ...) -> None: ...

class DrainAgentRequest(_message.Message):
    __slots__ = ("agent_id", "grace_s")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_S_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    grace_s: float
    def __init__(self, agent_id: _Optional[str] = ..., grace_s: _Optional[float] = ...) -> None: ...

class DrainAgentResponse(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: _types_pb2.AgentInfo
    def __init__(self, agent: _Optional[_Union[_types_pb2.AgentInfo, _Mapping]] = ...) -> None: ...

class CordonAgentRequest(_message.Message):
    __slots__ = ("agent_id", "reason")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    reason: str
    def __init__(self, agent_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CordonAgentResponse(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: _types_pb2.AgentInfo
    def __init__(self, agent: _Optional[_Union[_types_pb2.AgentInfo, _Mapping]] = ...) -> None: ...

class UncordonAgentRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class UncordonAgentResponse(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: _types_pb2.AgentInfo
    def __init__(self, agent: _Optional[_Union[_types_pb2.AgentInfo, _Mapping]] = ...) -> None: ...

class RemoveAgentRequest(_message.Message):
    __slots__ = ("agent_id", "force")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    force: bool
    def __init__(self, agent_id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class RemoveAgentResponse(_message.Message):
    __slots__ = ("agent", "requeued_attempts")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    REQUEUED_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    agent: _types_pb2.AgentInfo
    requeued_attempts: int
    def __init__(self, agent: _Optional[_Union[_types_pb2.AgentInfo, _Mapping]] = ..., requeued_attempts: _Optional[int] = ...) -> None: ...
