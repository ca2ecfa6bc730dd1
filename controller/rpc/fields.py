"""Checks of single request fields at the rpc edge: ids, free text, seconds and amounts.

Each check raises :class:`~corral.controller.errors.InvalidArgument` naming the request field, so
every handler refuses bad input the same way before anything reaches the state loop. Workflow and
task specs are checked by the :mod:`~corral.controller.spec` models instead (see admission).
"""

from __future__ import annotations

import math

from corral.controller.core.model import Resources
from corral.controller.errors import InvalidArgument, clip
from corral.controller.spec import LIMITS, control_character
from corral.v1 import types_pb2

__all__ = [
    "MAX_ID",
    "MAX_KEY",
    "MAX_TEXT",
    "check_labels",
    "check_names",
    "check_resources",
    "identifier",
    "optional_id",
    "seconds",
    "text",
]

MAX_ID = 256  # any id, name or prefix a caller types (ours are far shorter)
MAX_KEY = 256  # idempotency keys
MAX_TEXT = 64 * 1024  # error messages from workers
MAX_TYPES = 64  # agent types a worker names


def identifier(value: str, field: str, what: str = "id") -> str:
    """A required id, name or id prefix: non-empty, at most MAX_ID characters, no control characters,
    no surrounding whitespace."""
    if not value:
        raise InvalidArgument.field(field, f"a {what} is required")
    return optional_id(value, field, what)


def optional_id(value: str, field: str, what: str = "id") -> str:
    """Like :func:`identifier` but empty is allowed (an unset optional field)."""
    if len(value) > MAX_ID:
        raise InvalidArgument.field(field, f"{len(value)} characters, over the {MAX_ID} a {what} may have")
    problem = control_character(value)
    if problem:
        raise InvalidArgument.field(field, problem)
    if value != value.strip():
        raise InvalidArgument.field(field, f"{what} {clip(value)!r} has surrounding whitespace")
    return value


def text(value: str, field: str, max_length: int, *, multiline: bool = False) -> str:
    """Free text (a reason, an error message): bounded, no NUL or other control characters
    (newlines and tabs are allowed when ``multiline``)."""
    if len(value) > max_length:
        raise InvalidArgument.field(field, f"{len(value)} characters, longer than {max_length}")
    problem = control_character(value, multiline=multiline)
    if problem:
        raise InvalidArgument.field(field, problem)
    return value


def seconds(value: float, field: str, maximum: float) -> float:
    """A duration in seconds: finite, >= 0 and <= ``maximum`` (0 usually means 'the default')."""
    if not math.isfinite(value) or not 0 <= value <= maximum:
        raise InvalidArgument.field(field, f"must be a finite number of seconds between 0 and {maximum:g}, got {value}")
    return value


def check_names(values: list[str] | tuple[str, ...], field: str, what: str, max_count: int = MAX_TYPES) -> None:
    """A list of short names (agent types): bounded count, each a valid id."""
    if len(values) > max_count:
        raise InvalidArgument.field(field, f"{len(values)} entries, over the {max_count} allowed")
    for i, value in enumerate(values):
        identifier(value, f"{field}[{i}]", what)


def check_labels(labels: dict[str, str], field: str) -> None:
    """Label or constraint key/value pairs: bounded count and lengths, no control characters."""
    if len(labels) > LIMITS.max_labels:
        raise InvalidArgument.field(field, f"{len(labels)} labels, over max_labels={LIMITS.max_labels}")
    for key, value in labels.items():
        path = f"{field}[{clip(key)!r}]"
        identifier(key, path, "label key")
        if len(key) > LIMITS.max_name_length:
            raise InvalidArgument.field(path, f"key longer than max_name_length={LIMITS.max_name_length}")
        text(value, path, LIMITS.max_label_length)


def _amount(value: float, field: str, maximum: float) -> None:
    if not math.isfinite(value) or not 0 <= value <= maximum:
        raise InvalidArgument.field(field, f"must be a finite number between 0 and {maximum:g}, got {value}")


def check_resources(message: types_pb2.ResourceRequirements, field: str) -> Resources:
    """Amounts of a ResourceRequirements (a pull's capacity): finite, >= 0 and within the named limits."""
    _amount(message.cpu_cores, f"{field}.cpu_cores", LIMITS.max_cpu_cores)
    _amount(message.memory_mb, f"{field}.memory_mb", LIMITS.max_memory_mb)
    _amount(message.disk_mb, f"{field}.disk_mb", LIMITS.max_disk_mb)
    _amount(message.network_bandwidth_mbps, f"{field}.network_bandwidth_mbps", 1_000_000_000)
    _amount(message.gpu_count, f"{field}.gpu_count", LIMITS.max_gpu_count)
    custom = dict(message.custom_resources)
    if len(custom) > LIMITS.max_labels:
        raise InvalidArgument.field(f"{field}.custom_resources", f"over max_labels={LIMITS.max_labels} entries")
    for name, amount in custom.items():
        path = f"{field}.custom_resources[{clip(name)!r}]"
        identifier(name, path, "resource name")
        _amount(amount, path, LIMITS.max_custom_resource)
    return Resources(
        cpu_cores=message.cpu_cores,
        memory_mb=message.memory_mb,
        disk_mb=message.disk_mb,
        network_bandwidth_mbps=message.network_bandwidth_mbps,
        gpu_count=message.gpu_count,
        custom=custom,
    )
