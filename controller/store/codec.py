"""Row <-> dataclass conversion shared by the SQLite and memory stores.

A row is a plain tuple in the column order of :data:`COLUMNS`, holding only values SQLite stores
natively: ``str``, ``int``, ``float``, ``bytes`` and ``None``. Enums become their string values,
booleans integers, tuples and mappings JSON text, and JSON ``bytes`` stay BLOBs. Decoding restores
the exact types of the model, so ``decode_task(encode_task(t)) == t``.

Encoding is on the commit hot path (tens of thousands of rows per tick), so the encoders are
hand-written tuple builders with fast paths for the common empty values rather than generic
reflection over ``dataclasses.fields``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

from corral.controller.core.dynamic import decode_dynamic, encode_dynamic
from corral.controller.core.model import (
    Agent,
    AgentState,
    Attempt,
    AttemptState,
    Inventory,
    LabelExpr,
    Resources,
    Task,
    TaskState,
    TaskType,
    Workflow,
    WorkflowState,
)
from corral.controller.core.task_rare import RARE_DEFAULTS, TaskRare
from corral.controller.store.cache_codec import decode_task_cache, encode_task_cache
from corral.controller.store.columns import COLUMNS
from corral.controller.store.rules_codec import decode_rules, encode_rules

__all__ = [
    "COLUMNS",
    "PLAIN_TASK_COLUMNS",
    "PLAIN_TASK_DEFAULTS",
    "PROGRESS_COLUMNS",
    "Row",
    "decode_agent",
    "decode_attempt",
    "decode_inventory",
    "decode_resources",
    "decode_task",
    "decode_workflow",
    "encode_agent",
    "encode_attempt",
    "encode_inventory",
    "encode_plain_task",
    "encode_resources",
    "encode_task",
    "encode_task_progress",
    "encode_workflow",
]

Row = tuple[Any, ...]

_EMPTY_OBJECT: Final = "{}"
_EMPTY_ARRAY: Final = "[]"

# Enum lookups through a plain dict: ``TaskState(value)`` goes through EnumMeta.__call__, which
# costs several times more and shows up when loading tens of thousands of rows at boot.
_TASK_TYPES: Final = {m.value: m for m in TaskType}
_TASK_STATES: Final = {m.value: m for m in TaskState}
_WORKFLOW_STATES: Final = {m.value: m for m in WorkflowState}
_ATTEMPT_STATES: Final = {m.value: m for m in AttemptState}
_AGENT_STATES: Final = {m.value: m for m in AgentState}


# allow_nan=False: NaN and infinities are not JSON and would not compare equal after a round trip;
# refusing them makes the whole commit fail instead of storing a value that lies. One encoder is
# built once: ``json.dumps`` with keyword arguments constructs a new encoder on every call.
_dumps: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode

# Characters that a JSON string cannot hold verbatim. Ids and names almost never contain them, so
# string arrays are usually joined by hand, several times faster than the generic encoder.
_JSON_UNSAFE: Final = re.compile(r'["\\\x00-\x1f\ud800-\udfff]')

# Requirements repeat across the tasks of a workflow; their JSON is cached by value. The key holds
# the field types too, so that 2 and 2.0 (equal, same hash) keep distinct encodings.
_RESOURCES_CACHE: dict[tuple[Any, ...], str] = {}
_RESOURCES_CACHE_MAX: Final = 4096


def _enum_value(value: str, kind: type[Any], members: Mapping[str, Any]) -> str:
    # StrEnum members are str; a plain string is accepted only if it names a member, so that a
    # typo cannot reach the database and break the next boot.
    if value not in members:
        raise ValueError(f"{value!r} is not a valid {kind.__name__}")
    return str.__str__(value)


def _blob(value: bytes) -> bytes:
    # Exact bytes pass through untouched (the hot path); other buffers are copied so a stored row
    # never aliases a caller's mutable object. Anything else (notably ``str`` or ``int``, which
    # ``bytes()`` would happily convert) is a bug in the caller.
    if type(value) is bytes:
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"expected bytes holding JSON, got {type(value).__name__}")


_intern = sys.intern


def _encode_mapping(value: Mapping[str, Any]) -> str:
    return _dumps(dict(value)) if value else _EMPTY_OBJECT


def _decode_str_mapping(text: str) -> dict[str, Any]:
    if text == _EMPTY_OBJECT:
        return {}
    decoded: dict[str, Any] = json.loads(text)
    return decoded


def _encode_exprs(exprs: Sequence[LabelExpr]) -> str:
    # [[key, op, [values...]], ...]: compact, and the empty case (almost every task) is a constant.
    if not exprs:
        return "[]"
    return _dumps([[e.key, e.op, list(e.values)] for e in exprs])


def _decode_exprs(text: str) -> tuple[LabelExpr, ...]:
    if text == "[]":
        return ()
    return tuple(LabelExpr(key, op, tuple(values)) for key, op, values in json.loads(text))


def _encode_strs(value: Sequence[str]) -> str:
    if not value:
        return _EMPTY_ARRAY
    # Checked without the separators (a '"' in them would always send this to the JSON encoder).
    if _JSON_UNSAFE.search("".join(value)) is None:  # TypeError for anything but strings
        return '["' + '","'.join(value) + '"]'
    return _dumps(list(value))


def _decode_str_tuple(text: str) -> tuple[str, ...]:
    return () if text == _EMPTY_ARRAY else tuple(json.loads(text))


def _decode_int_tuple(text: str) -> tuple[int, ...]:
    return () if text == _EMPTY_ARRAY else tuple(json.loads(text))


def _resources_dict(r: Resources) -> dict[str, Any]:
    # Sparse: only non-zero fields are written, so the common requirement stays a few bytes.
    d: dict[str, Any] = {}
    if r.cpu_cores:
        d["cpu_cores"] = r.cpu_cores
    if r.memory_mb:
        d["memory_mb"] = r.memory_mb
    if r.disk_mb:
        d["disk_mb"] = r.disk_mb
    if r.network_bandwidth_mbps:
        d["network_bandwidth_mbps"] = r.network_bandwidth_mbps
    if r.gpu_count:
        d["gpu_count"] = r.gpu_count
    if r.custom:
        d["custom"] = dict(r.custom)
    return d


def _resources_from(d: Mapping[str, Any]) -> Resources:
    return Resources(
        d.get("cpu_cores", 0.0),
        d.get("memory_mb", 0),
        d.get("disk_mb", 0),
        d.get("network_bandwidth_mbps", 0),
        d.get("gpu_count", 0),
        dict(d.get("custom", {})),
    )


def encode_resources(r: Resources) -> str:
    """JSON text of a :class:`Resources` (``{}`` when all zero)."""
    if r.custom:
        return _dumps(_resources_dict(r))
    cpu, mem, disk, net, gpu = r.cpu_cores, r.memory_mb, r.disk_mb, r.network_bandwidth_mbps, r.gpu_count
    key = (cpu, mem, disk, net, gpu, type(cpu), type(mem), type(disk), type(net), type(gpu))
    text = _RESOURCES_CACHE.get(key)
    if text is None:
        d = _resources_dict(r)
        text = _dumps(d) if d else _EMPTY_OBJECT
        if len(_RESOURCES_CACHE) >= _RESOURCES_CACHE_MAX:
            _RESOURCES_CACHE.clear()
        _RESOURCES_CACHE[key] = text
    return text


def decode_resources(text: str) -> Resources:
    """Inverse of :func:`encode_resources`.

    Requirements without custom resources are shared between the rows that spell them alike (a
    restored 200k-task workflow holds one object, not 200k): Resources is frozen, and its
    ``custom`` mapping is never mutated.
    """
    found = _DECODED_RESOURCES.get(text)
    if found is not None:
        return found
    resources = Resources() if text == _EMPTY_OBJECT else _resources_from(json.loads(text))
    if not resources.custom:
        if len(_DECODED_RESOURCES) >= _RESOURCES_CACHE_MAX:
            _DECODED_RESOURCES.clear()
        _DECODED_RESOURCES[text] = resources
    return resources


_DECODED_RESOURCES: dict[str, Resources] = {}
# Task constraints and affinity are read-only mappings, nearly always empty: one shared empty one.
_NO_MAPPING: Mapping[str, Any] = MappingProxyType({})


def _decode_task_mapping(text: str) -> Mapping[str, Any]:
    return _NO_MAPPING if text == _EMPTY_OBJECT else _decode_str_mapping(text)


def encode_inventory(inv: Inventory) -> str:
    """JSON text of an :class:`Inventory`."""
    return _dumps({"capacity": _resources_dict(inv.capacity), "slots": inv.slots, "gpu_ids": list(inv.gpu_ids)})


def decode_inventory(text: str) -> Inventory:
    """Inverse of :func:`encode_inventory`."""
    d = json.loads(text)
    return Inventory(_resources_from(d["capacity"]), d["slots"], tuple(d["gpu_ids"]))


def encode_workflow(w: Workflow) -> Row:
    """Row of the ``workflows`` table."""
    return (
        w.id,
        w.name,
        _encode_strs(w.task_ids),
        _enum_value(w.state, WorkflowState, _WORKFLOW_STATES),
        _blob(w.metadata),
        _encode_mapping(w.labels),
        w.idempotency_key,
        int(w.standalone),
        w.created_at,
        w.started_at,
        w.finished_at,
        w.error,
        w.namespace,
        w.max_agent_losses,
        w.deadline,
        w.deadline_policy,
        w.deadline_verdict,
        w.max_parallel,
        w.on_failure,
        w.run,
        w.compensation,
        _blob(w.params),
        int(w.no_cache),
        w.scheduled_at,
    )


def decode_workflow(row: Sequence[Any]) -> Workflow:
    """Inverse of :func:`encode_workflow`."""
    return Workflow(
        row[0],
        row[1],
        [] if row[2] == _EMPTY_ARRAY else json.loads(row[2]),
        _WORKFLOW_STATES[row[3]],
        row[4],
        _decode_str_mapping(row[5]),
        row[6],
        bool(row[7]),
        row[8],
        row[9],
        row[10],
        row[11],
        row[12],
        row[13],
        deadline=row[14],
        deadline_policy=row[15],
        deadline_verdict=row[16],
        max_parallel=row[17],
        on_failure=row[18],
        run=row[19],
        compensation=row[20],
        params=row[21],
        no_cache=bool(row[22]),
        scheduled_at=row[23],
    )


def encode_task(t: Task) -> Row:
    """Row of the ``tasks`` table: :func:`encode_plain_task`'s columns with the rare ones between."""
    plain = encode_plain_task(t)
    r = t._rare
    if r is None:  # most tasks: the rare columns' encoded defaults, built once
        return plain[:13] + _RARE_HEAD + plain[13:24] + _RARE_MIDDLE + plain[24:] + _RARE_TAIL
    return (*plain[:13], _encode_mapping(r.constraints), *plain[13:24], r.not_before, *plain[24:], *_rare_tail(r))


def encode_plain_task(t: Task) -> Row:
    """The task's :data:`PLAIN_TASK_COLUMNS`: its row without the columns of its rare fields.

    For a task without rare fields (``t._rare is None``) those columns hold
    :data:`PLAIN_TASK_DEFAULTS`, so a store may write this narrower row with the defaults as
    constants (SQLite binds 27 parameters instead of 50 for each task of a submission).
    """
    result = t.result
    return (
        t.id,
        t.workflow_id,
        t.name,
        t.index,
        t.agent_type,
        _blob(t.payload),
        _enum_value(t.type, TaskType, _TASK_TYPES),
        encode_resources(t.resources),
        t.priority,
        t.timeout_s,
        t.max_retries,
        t.retry_backoff_s,
        _encode_strs(t.dependencies),
        t.estimated_duration_s,
        _enum_value(t.state, TaskState, _TASK_STATES),
        t.retries_used,
        t.attempts,
        t.current_attempt_id,
        t.agent_id,
        None if result is None else _blob(result),
        t.error,
        t.exit_code,
        t.created_at,
        t.ready_at,
        t.started_at,
        t.finished_at,
        t.namespace,
    )


def _rare_tail(r: TaskRare) -> Row:
    """The row's last 21 columns, all of them rare fields (``on_disconnect`` .. ``cache_source``)."""
    return (
        r.on_disconnect,
        r.max_disconnect_s,
        r.max_agent_losses,
        r.agent_losses,
        r.reruns_after_fence,
        r.failure_reason,
        # Inline empty cases: almost no task has these, and this row is encoded on every change.
        _encode_exprs(r.constraint_exprs) if r.constraint_exprs else "[]",
        r.spread,
        _encode_mapping(r.affinity) if r.affinity else _EMPTY_OBJECT,
        r.deadline,
        int(r.preemptible),
        r.max_preemptions,
        r.preemptions,
        r.last_preemption,
        r.gang,
        encode_dynamic(r.dynamic) if r.dynamic is not None else "",
        r.compensate,
        r.compensates,
        None if r.rules is None and not r.fallback_used else encode_rules(r.rules, r.fallback_used),
        "" if r.cache is None else encode_task_cache(r.cache),
        r.cache_source,
    )


_RARE_HEAD: Final = (_encode_mapping(RARE_DEFAULTS.constraints),)  # column 13, constraints
_RARE_MIDDLE: Final = (RARE_DEFAULTS.not_before,)  # column 25, not_before
_RARE_TAIL: Final = _rare_tail(RARE_DEFAULTS)  # columns 29..49
#: The columns :func:`encode_plain_task` leaves out, and what they hold for a task without rare
#: fields (in table order).
PLAIN_TASK_DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType(
    dict(
        zip(
            (COLUMNS["tasks"][13], COLUMNS["tasks"][25], *COLUMNS["tasks"][29:]),
            (*_RARE_HEAD, *_RARE_MIDDLE, *_RARE_TAIL),
            strict=True,
        )
    )
)
#: The columns of :func:`encode_plain_task`, in its order (the table's, the rare ones left out).
PLAIN_TASK_COLUMNS: Final = tuple(c for c in COLUMNS["tasks"] if c not in PLAIN_TASK_DEFAULTS)


#: The columns a task's progress changes (state, attempt, agent, times, outcome): what a moved
#: task's row is updated with (``ChangeBatch.moved_tasks``), in :func:`encode_task_progress` order.
PROGRESS_COLUMNS: Final = (
    "state",
    "retries_used",
    "attempts",
    "current_attempt_id",
    "agent_id",
    "result",
    "error",
    "exit_code",
    "ready_at",
    "not_before",
    "started_at",
    "finished_at",
)


def encode_task_progress(t: Task) -> Row:
    """A task's :data:`PROGRESS_COLUMNS`, then its id (the parameters of a narrow UPDATE).

    Encoded as :func:`encode_task` encodes those columns (a unit test holds the two to the same
    values), but without the rest of the row: two of these are written per task, and building the
    whole 50-column row to keep 12 cost three times as much.
    """
    result = t.result
    rare = t._rare
    return (
        _enum_value(t.state, TaskState, _TASK_STATES),
        t.retries_used,
        t.attempts,
        t.current_attempt_id,
        t.agent_id,
        None if result is None else _blob(result),
        t.error,
        t.exit_code,
        t.ready_at,
        None if rare is None else rare.not_before,
        t.started_at,
        t.finished_at,
        t.id,
    )


def decode_task(row: Sequence[Any]) -> Task:
    """Inverse of :func:`encode_task`."""
    # Values repeated on every row of a workflow are interned: one string each in memory.
    return Task(
        row[0],
        _intern(row[1]),
        row[2],
        row[3],
        _intern(row[4]),
        row[5],
        _TASK_TYPES[row[6]],
        decode_resources(row[7]),
        row[8],
        row[9],
        row[10],
        row[11],
        _decode_str_tuple(row[12]),
        _decode_task_mapping(row[13]),
        row[14],
        _intern(row[28]),
        _TASK_STATES[row[15]],
        row[16],
        row[17],
        row[18],
        row[19],
        row[20],
        row[21],
        row[22],
        row[23],
        row[24],
        row[25],
        row[26],
        row[27],
        on_disconnect=_intern(row[29]),
        max_disconnect_s=row[30],
        max_agent_losses=row[31],
        agent_losses=row[32],
        reruns_after_fence=row[33],
        failure_reason=row[34],
        constraint_exprs=_decode_exprs(row[35]),
        spread=row[36],
        affinity=_decode_task_mapping(row[37]),
        deadline=row[38],
        preemptible=bool(row[39]),
        max_preemptions=row[40],
        preemptions=row[41],
        last_preemption=row[42],
        gang=row[43],
        dynamic=decode_dynamic(row[44]) if row[44] else None,
        compensate=row[45],
        compensates=row[46],
        **({} if row[47] is None else decode_rules(row[47])),
        cache=decode_task_cache(row[48]) if row[48] else None,
        cache_source=row[49],
    )


def encode_attempt(a: Attempt) -> Row:
    """Row of the ``attempts`` table."""
    return (
        a.id,
        a.task_id,
        a.workflow_id,
        a.agent_id,
        a.number,
        _enum_value(a.state, AttemptState, _ATTEMPT_STATES),
        encode_resources(a.resources),
        _dumps(list(a.gpu_ids)) if a.gpu_ids else _EMPTY_ARRAY,
        int(a.pulled),
        a.assigned_at,
        a.started_at,
        a.finished_at,
        a.deadline,
        a.exit_code,
        a.error,
        a.peak_rss_bytes,
        a.cpu_s,
        a.run,
    )


def decode_attempt(row: Sequence[Any]) -> Attempt:
    """Inverse of :func:`encode_attempt`."""
    return Attempt(
        row[0],
        row[1],
        _intern(row[2]),
        _intern(row[3]),
        row[4],
        _ATTEMPT_STATES[row[5]],
        decode_resources(row[6]),
        _decode_int_tuple(row[7]),
        bool(row[8]),
        row[9],
        row[10],
        row[11],
        row[12],
        row[13],
        row[14],
        peak_rss_bytes=row[15],
        cpu_s=row[16],
        run=row[17],
    )


def encode_agent(a: Agent) -> Row:
    """Row of the ``agents`` table."""
    return (
        a.id,
        a.name,
        a.hostname,
        _encode_strs(a.agent_types),
        _encode_mapping(a.labels),
        encode_inventory(a.inventory),
        _enum_value(a.state, AgentState, _AGENT_STATES),
        a.session_epoch,
        a.connected_at,
        a.last_seen,
        a.version,
        a.incarnation,
        a.cordoned_until,
        a.cordon_reason,
        a.cordoned_by,
    )


def decode_agent(row: Sequence[Any]) -> Agent:
    """Inverse of :func:`encode_agent`."""
    return Agent(
        row[0],
        row[1],
        row[2],
        _decode_str_tuple(row[3]),
        _decode_str_mapping(row[4]),
        decode_inventory(row[5]),
        _AGENT_STATES[row[6]],
        row[7],
        row[8],
        row[9],
        row[10],
        incarnation=row[11],
        cordoned_until=row[12],
        cordon_reason=row[13],
        cordoned_by=row[14],
    )
