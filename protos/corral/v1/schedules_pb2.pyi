import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from corral.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateScheduleRequest(_message.Message):
    __slots__ = ("name", "spec", "cron", "timezone", "overlap", "catchup")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    CATCHUP_FIELD_NUMBER: _ClassVar[int]
    name: str
    spec: _types_pb2.WorkflowSpec
    cron: str
    timezone: str
    overlap: str
    catchup: int
    def __init__(self, name: _Optional[str] = ..., spec: _Optional[_Union[_types_pb2.WorkflowSpec, _Mapping]] = ..., cron: _Optional[str] = ..., timezone: _Optional[str] = ..., overlap: _Optional[str] = ..., catchup: _Optional[int] = ...) -> None: ...

class ScheduleRef(_message.Message):
    __slots__ = ("schedule",)
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    schedule: str
    def __init__(self, schedule: _Optional[str] = ...) -> None: ...

class ListSchedulesRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class ScheduleFire(_message.Message):
    __slots__ = ("nominal", "fired_at", "workflow_id", "late", "outcome", "error")
    NOMINAL_FIELD_NUMBER: _ClassVar[int]
    FIRED_AT_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    nominal: _timestamp_pb2.Timestamp
    fired_at: _timestamp_pb2.Timestamp
    workflow_id: str
    late: bool
    outcome: str
    error: str
    def __init__(self, nominal: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., fired_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., workflow_id: _Optional[str] = ..., late: _Optional[bool] = ..., outcome: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ScheduleInfo(_message.Message):
    __slots__ = ("schedule_id", "name", "namespace", "cron", "timezone", "overlap", "catchup", "paused", "created_at", "next_fire", "last_nominal", "last_workflow_id", "fired", "skipped", "missed", "recent_fires", "workflow_name")
    SCHEDULE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    CATCHUP_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIRE_FIELD_NUMBER: _ClassVar[int]
    LAST_NOMINAL_FIELD_NUMBER: _ClassVar[int]
    LAST_WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    FIRED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIRES_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_NAME_FIELD_NUMBER: _ClassVar[int]
    schedule_id: str
    name: str
    namespace: str
    cron: str
    timezone: str
    overlap: str
    catchup: int
    paused: bool
    created_at: _timestamp_pb2.Timestamp
    next_fire: _timestamp_pb2.Timestamp
    last_nominal: _timestamp_pb2.Timestamp
    last_workflow_id: str
    fired: int
    skipped: int
    missed: int
    recent_fires: _containers.RepeatedCompositeFieldContainer[ScheduleFire]
    workflow_name: str
    def __init__(self, schedule_id: _Optional[str] = ..., name: _Optional[str] = ..., namespace: _Optional[str] = ..., cron: _Optional[str] = ..., timezone: _Optional[str] = ..., overlap: _Optional[str] = ..., catchup: _Optional[int] = ..., paused: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_fire: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_nominal: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_workflow_id: _Optional[str] = ..., fired: _Optional[int] = ..., skipped: _Optional[int] = ..., missed: _Optional[int] = ..., recent_fires: _Optional[_Iterable[_Union[ScheduleFire, _Mapping]]] = ..., workflow_name: _Optional[str] = ...) -> None: ...

class ListSchedulesResponse(_message.Message):
    __slots__ = ("schedules",)
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[ScheduleInfo]
    def __init__(self, schedules: _Optional[_Iterable[_Union[ScheduleInfo, _Mapping]]] = ...) -> None: ...
