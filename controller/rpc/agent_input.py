"""What an agent sends, checked at the edge before any of it reaches the state machine.

An agent's stream is as hostile as any client: a Hello whose inventory holds NaN used to stop the
state loop, a ``gpu_count`` of 5,000,000 took gigabytes. Every field of Hello, Heartbeat and
TaskEvents is checked here for type range, sign, finiteness, size and control characters; a
violation raises :class:`~corral.controller.errors.InvalidArgument` with the field's path, the
gateway closes the stream with it, and nothing is stored.

A Finished report is the exception: the agent keeps re-sending an unacknowledged report, so a
result that is not valid JSON fails *that attempt* with the violation as its error (see
:func:`finished_result_problem`) instead of closing the stream forever.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from corral.controller.core.checkpoints import MAX_CHECKPOINT_BYTES
from corral.controller.errors import FieldViolation, InvalidArgument
from corral.controller.rpc.wire_spec import decode_json_field
from corral.controller.spec import NAME_PATTERN, Limits
from corral.v1 import agent_pb2 as pb
from corral.v1 import types_pb2

__all__ = [
    "MAX_ID_LENGTH",
    "check_events",
    "check_heartbeat",
    "check_hello",
    "checkpoint_problem",
    "finished_result_problem",
]

MAX_ID_LENGTH = 128
_MAX_SPAWN_BYTES = 4 << 20  # spawn_input.MAX_SPAWN_BYTES (that module imports the submission's)
_MAX_HOSTNAME = 255
_MAX_VERSION = 64
_MAX_GPU_TEXT = 256
_MAX_VIOLATIONS = 20  # enough to fix a message; a hostile one must not make a huge error
_NAME = re.compile(NAME_PATTERN)
_MAX_SECONDS = 253402300800  # 10000-01-01T00:00:00Z
#: Bounds of a Finished report's measured usage: the largest memory an agent may declare, and that
#: many cores busy for a year (a task has no longer timeout than a week; keep attempts may run on).
MAX_PEAK_RSS_BYTES = Limits.max_memory_mb << 20
MAX_CPU_S = Limits.max_cpu_cores * 366 * 24 * 3600.0


class _Problems:
    """Violations found so far; stops collecting (not checking) past a small number."""

    def __init__(self) -> None:
        self.found: list[FieldViolation] = []

    def add(self, path: str, description: str) -> None:
        if len(self.found) < _MAX_VIOLATIONS:
            self.found.append(FieldViolation(path, description))

    def raise_any(self) -> None:
        if self.found:
            raise InvalidArgument(self.found)


def _text(problems: _Problems, path: str, value: str, max_length: int, *, required: bool = False) -> None:
    if not value:
        if required:
            problems.add(path, "required")
        return
    if len(value) > max_length:
        problems.add(path, f"{len(value)} characters, at most {max_length} allowed")
    elif not value.isprintable():
        problems.add(path, "contains a control or non-printable character (NUL, newline, ...)")


def _name(problems: _Problems, path: str, value: str) -> None:
    if not value:
        problems.add(path, "required")
    elif len(value) > MAX_ID_LENGTH:
        problems.add(path, f"{len(value)} characters, at most {MAX_ID_LENGTH} allowed")
    elif not _NAME.match(value):
        problems.add(
            path, f"must match {NAME_PATTERN} (letters, digits, '_', '.', '-'; no spaces or control characters)"
        )


def _amount(problems: _Problems, path: str, value: float, maximum: float, limit_name: str) -> None:
    if not math.isfinite(value):
        problems.add(path, f"must be a finite number, got {value}")
    elif value < 0:
        problems.add(path, f"must be >= 0, got {value:g}")
    elif value > maximum:
        problems.add(path, f"{value:g} is over the {limit_name}={maximum:g} limit")


def _labels(problems: _Problems, path: str, labels: Mapping[str, str]) -> None:
    if len(labels) > Limits.max_labels:
        problems.add(path, f"{len(labels)} labels, over the max_labels={Limits.max_labels} limit")
        return
    for key, value in labels.items():
        _name(problems, f"{path}[{key[:MAX_ID_LENGTH]!r}]", key)
        _text(problems, f"{path}[{key[:MAX_ID_LENGTH]!r}]", value, Limits.max_label_length)


def _ids(problems: _Problems, path: str, ids: Iterable[str], count: int, limit: int, limit_name: str) -> None:
    if count > limit:
        problems.add(path, f"{count} ids, over the {limit_name}={limit} limit")
        return
    for i, value in enumerate(ids):
        _text(problems, f"{path}[{i}]", value, MAX_ID_LENGTH, required=True)


def _inventory(problems: _Problems, path: str, inventory: types_pb2.Inventory) -> None:
    """Every amount of an agent's inventory: finite, not negative, within the named limits."""
    _amount(problems, f"{path}.cpu_cores", inventory.cpu_cores, Limits.max_cpu_cores, "max_cpu_cores")
    _amount(problems, f"{path}.memory_mb", inventory.memory_mb, Limits.max_memory_mb, "max_memory_mb")
    _amount(problems, f"{path}.disk_mb", inventory.disk_mb, Limits.max_disk_mb, "max_disk_mb")
    _amount(
        problems,
        f"{path}.network_bandwidth_mbps",
        inventory.network_bandwidth_mbps,
        Limits.max_network_mbps,
        "max_network_mbps",
    )
    _amount(problems, f"{path}.gpu_count", inventory.gpu_count, Limits.max_gpu_count, "max_gpu_count")
    _amount(problems, f"{path}.slots", inventory.slots, Limits.max_slots, "max_slots")
    gpus = inventory.gpus
    if len(gpus) > Limits.max_gpu_count:
        problems.add(f"{path}.gpus", f"{len(gpus)} GPUs, over the max_gpu_count={Limits.max_gpu_count} limit")
    else:
        seen: set[int] = set()
        for i, gpu in enumerate(gpus):
            if not 0 <= gpu.index < Limits.max_gpu_count:
                problems.add(f"{path}.gpus[{i}].index", f"must be between 0 and {Limits.max_gpu_count - 1}")
            elif gpu.index in seen:
                problems.add(f"{path}.gpus[{i}].index", f"GPU index {gpu.index} listed twice")
            seen.add(gpu.index)
            _amount(problems, f"{path}.gpus[{i}].memory_mb", gpu.memory_mb, Limits.max_memory_mb, "max_memory_mb")
            _text(problems, f"{path}.gpus[{i}].name", gpu.name, _MAX_GPU_TEXT)
            _text(problems, f"{path}.gpus[{i}].uuid", gpu.uuid, _MAX_GPU_TEXT)
    custom = inventory.custom_resources
    if len(custom) > Limits.max_labels:
        problems.add(
            f"{path}.custom_resources", f"{len(custom)} resources, over the max_labels={Limits.max_labels} limit"
        )
    else:
        for key, value in custom.items():
            where = f"{path}.custom_resources[{key[:MAX_ID_LENGTH]!r}]"
            _name(problems, where, key)
            _amount(problems, where, value, Limits.max_custom_resource, "max_custom_resource")


def _usage(problems: _Problems, path: str, usage: types_pb2.Usage) -> None:
    _amount(problems, f"{path}.cpu_percent", usage.cpu_percent, 100.0 * Limits.max_cpu_cores, "100*max_cpu_cores")
    _amount(problems, f"{path}.memory_used_mb", usage.memory_used_mb, Limits.max_memory_mb, "max_memory_mb")
    _amount(problems, f"{path}.load_1m", usage.load_1m, 1e9, "load_1m")
    _amount(
        problems, f"{path}.running_attempts", usage.running_attempts, Limits.max_agent_attempts, "max_agent_attempts"
    )
    _amount(problems, f"{path}.disk_free_mb", usage.disk_free_mb, Limits.max_disk_mb, "max_disk_mb")


def check_hello(message: pb.AgentMessage) -> pb.Hello:
    """The first message of a stream, fully checked; raises InvalidArgument naming every bad field."""
    if message.WhichOneof("kind") != "hello":
        raise InvalidArgument.field("hello", "the first message on the stream must be a Hello")
    hello = message.hello
    problems = _Problems()
    if not hello.agent_id and not hello.name:
        problems.add("hello.agent_id", "required (or hello.name)")
    if hello.agent_id:
        _name(problems, "hello.agent_id", hello.agent_id)
    if hello.name:
        _name(problems, "hello.name", hello.name)
    _text(problems, "hello.hostname", hello.hostname, _MAX_HOSTNAME)
    _text(problems, "hello.version", hello.version, _MAX_VERSION)
    _text(problems, "hello.incarnation", hello.incarnation, MAX_ID_LENGTH)
    if len(hello.agent_types) > Limits.max_agent_types:
        problems.add(
            "hello.agent_types",
            f"{len(hello.agent_types)} types, over the max_agent_types={Limits.max_agent_types} limit",
        )
    else:
        for i, agent_type in enumerate(hello.agent_types):
            _name(problems, f"hello.agent_types[{i}]", agent_type)
    _labels(problems, "hello.labels", hello.labels)
    _inventory(problems, "hello.inventory", hello.inventory)
    _ids(
        problems,
        "hello.running_attempt_ids",
        hello.running_attempt_ids,
        len(hello.running_attempt_ids),
        Limits.max_agent_attempts,
        "max_agent_attempts",
    )
    _ids(
        problems,
        "hello.finished_attempt_ids",
        hello.finished_attempt_ids,
        len(hello.finished_attempt_ids),
        Limits.max_agent_attempts,
        "max_agent_attempts",
    )
    problems.raise_any()
    return hello


def check_heartbeat(beat: pb.Heartbeat) -> None:
    """A heartbeat's usage and (changed) inventory; raises InvalidArgument."""
    problems = _Problems()
    if beat.HasField("usage"):
        _usage(problems, "heartbeat.usage", beat.usage)
    if beat.HasField("inventory"):
        _inventory(problems, "heartbeat.inventory", beat.inventory)
    problems.raise_any()


def check_events(batch: pb.TaskEvents) -> None:
    """The structure of a batch of task events: count, ids, output sizes, error lengths, usage.

    Result JSON is not checked here (see :func:`finished_result_problem`).
    """
    problems = _Problems()
    events = batch.events
    if len(events) > Limits.max_task_events:
        raise InvalidArgument.field(
            "events.events", f"{len(events)} events, over the max_task_events={Limits.max_task_events} limit"
        )
    for i, event in enumerate(events):
        # The common case costs a few attribute reads; paths are built only for a violation.
        attempt_id = event.attempt_id
        if not attempt_id or len(attempt_id) > MAX_ID_LENGTH or not attempt_id.isprintable():
            _text(problems, f"events.events[{i}].attempt_id", attempt_id, MAX_ID_LENGTH, required=True)
        kind = event.WhichOneof("kind")
        if kind == "output":
            size = len(event.output.stdout) + len(event.output.stderr)
            if size > Limits.max_output_chunk_bytes:
                problems.add(
                    f"events.events[{i}].output",
                    f"{size} bytes, over the max_output_chunk_bytes={Limits.max_output_chunk_bytes} limit",
                )
        elif kind == "finished":
            finished = event.finished
            if len(finished.error) > Limits.max_error_length:
                problems.add(
                    f"events.events[{i}].finished.error",
                    f"{len(finished.error)} characters, over the max_error_length={Limits.max_error_length} limit",
                )
            rss, cpu = finished.peak_rss_bytes, finished.cpu_s
            if not 0 <= rss <= MAX_PEAK_RSS_BYTES:
                problems.add(
                    f"events.events[{i}].finished.peak_rss_bytes",
                    f"must be between 0 and {MAX_PEAK_RSS_BYTES} (max_memory_mb={Limits.max_memory_mb} MiB), got {rss}",
                )
            if not 0.0 <= cpu <= MAX_CPU_S:  # False for NaN too
                _amount(problems, f"events.events[{i}].finished.cpu_s", cpu, MAX_CPU_S, "max_cpu_cores*366d")
        elif kind == "spawn" and len(event.spawn.tasks_json) > _MAX_SPAWN_BYTES:
            problems.add(f"events.events[{i}].spawn.tasks_json", f"over the {_MAX_SPAWN_BYTES}-byte spawn limit")
        elif kind == "checkpoint" and len(event.checkpoint.data_json) > MAX_CHECKPOINT_BYTES:
            problems.add(
                f"events.events[{i}].checkpoint.data_json",
                f"{len(event.checkpoint.data_json)} bytes, over the {MAX_CHECKPOINT_BYTES}-byte checkpoint limit",
            )
        if kind != "accepted" and not 0 <= event.at.seconds < _MAX_SECONDS:
            problems.add(f"events.events[{i}].at", "timestamp out of range (years 1970 to 9999)")
    problems.raise_any()


def finished_result_problem(result: bytes | None, path: str) -> str | None:
    """Why a Finished report's result cannot be stored (size, JSON validity, depth, NaN), or None."""
    if result is None:
        return None
    try:
        decode_json_field(result, path, Limits.max_result_bytes, "max_result_bytes")
    except InvalidArgument as exc:
        return f"the agent reported an invalid result: {exc.message}"
    return None


def checkpoint_problem(data: bytes, index: int) -> str | None:
    """Why a checkpoint cannot be kept (empty, not JSON, too deep, NaN); None when it is fine."""
    if not data:
        return f"events.events[{index}].checkpoint.data_json: empty (a checkpoint is a JSON value)"
    try:
        decode_json_field(
            data, f"events.events[{index}].checkpoint.data_json", MAX_CHECKPOINT_BYTES, "max_checkpoint_bytes"
        )
    except InvalidArgument as exc:
        return exc.message
    return None
