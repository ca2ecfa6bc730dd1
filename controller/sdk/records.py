"""Shared machinery of the SDK's result types: the ``Record`` base and proto field decoding."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from corral.v1 import types_pb2 as pb

__all__ = [
    "TERMINAL_TASK_STATES",
    "TERMINAL_WORKFLOW_STATES",
    "Record",
    "Resources",
    "build",
    "decode_json",
    "optional_state",
    "plain",
    "state_name",
    "timestamp",
]

_R = TypeVar("_R")

#: workflow states after which nothing changes any more
TERMINAL_WORKFLOW_STATES = frozenset({"completed", "failed", "cancelled"})
#: task states after which the task never runs again
TERMINAL_TASK_STATES = frozenset({"completed", "failed", "cancelled", "skipped"})


def state_name(enum: Any, value: int, prefix: str) -> str:
    """``TASK_STATE_RUNNING`` -> ``"running"``; an unknown number -> ``"unknown(N)"``."""
    try:
        name: str = enum.Name(value)
    except ValueError:
        return f"unknown({value})"
    return name.removeprefix(prefix).lower()


def optional_state(enum: Any, value: int, prefix: str) -> str | None:
    """As :func:`state_name`, with ``None`` for the unset (``*_UNSPECIFIED``) value."""
    return None if value == 0 else state_name(enum, value, prefix)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(message: Message, field: str) -> datetime | None:
    """A Timestamp field as an aware UTC datetime, ``None`` when unset."""
    if not message.HasField(field):
        return None
    stamp: Timestamp = getattr(message, field)
    # Arithmetic instead of Timestamp.ToDatetime, which is slow: results carry 3 per task.
    return _EPOCH + timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)


def decode_json(raw: bytes) -> Any:
    """A JSON ``bytes`` field decoded (``None`` when empty; text when not JSON)."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        # A value the server stored but that is not JSON is shown as text rather than lost.
        return raw.decode("utf-8", errors="replace")


def plain(value: Any) -> Any:
    """A value made JSON-ready: records as dicts, datetimes as RFC 3339, bytes as text."""
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        return [plain(v) for v in value]
    return value


def build(cls: type[_R], **values: Any) -> _R:
    """An instance of the frozen record ``cls`` from every one of its field values, without ``__init__``.

    A frozen dataclass's generated ``__init__`` stores each field through ``object.__setattr__``:
    6 us for a task status's 46 fields, more than decoding them, and a 20,000-task result is decoded
    in the caller's ``wait``. ``values`` must name every field (no defaults are filled in).
    """
    record = object.__new__(cls)
    record.__dict__.update(values)
    return record


@dataclasses.dataclass(frozen=True)
class Record:
    """Base of the result types: frozen dataclasses with ``to_dict()`` (JSON-ready, without ``raw``)."""

    _skip: ClassVar[frozenset[str]] = frozenset({"raw"})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of the public fields: snake_case keys, RFC 3339 times, no ``raw``."""
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in self._skip}


@dataclasses.dataclass(frozen=True)
class Resources(Record):
    """Resource amounts (requested by a task, or allocated on an agent)."""

    cpu_cores: float = 0.0
    memory_mb: int = 0
    disk_mb: int = 0
    network_bandwidth_mbps: int = 0
    gpu_count: int = 0
    custom_resources: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_proto(cls, m: pb.ResourceRequirements) -> Resources:
        return cls(
            m.cpu_cores,
            m.memory_mb,
            m.disk_mb,
            m.network_bandwidth_mbps,
            m.gpu_count,
            dict(m.custom_resources),
        )
