"""Hypothesis strategies for fuzzing the controller's edge: hostile values for every kind of proto field.

Shared by ``test_fuzz.py``. Hostile means: NaN, infinities, huge and negative numbers, JSON nested
thousands deep or holding NaN, control characters, padded and over-long names, unicode, empty
values and duplicates; valid values are there too, so that requests get past validation and reach
the state loop and the store.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import strategies as st

from corral.controller.spec import Limits
from corral.v1 import agent_pb2, orchestrator_pb2
from corral.v1 import types_pb2 as pb

__all__ = ["agent_messages", "json_bytes", "names", "requests_for", "submit_requests", "texts"]

T = TypeVar("T")


HOSTILE_TEXT = [
    "",
    " a",
    "a ",
    "a\n",
    "\ta",
    "a\x00b",
    "\x1b[31m",
    "a\u0085",
    "é",
    "名前",
    "a/b",
    "-a",
    "x" * 129,
    "x" * 5000,
]
names = st.one_of(
    st.sampled_from(["a", "b", "c", "shell", "ext"]),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,12}", fullmatch=True),
    st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=12),
)
texts = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=30))
floats = st.one_of(
    st.sampled_from([0.0, -0.0, -1.0, 0.5, 1e300, -1e300, math.nan, math.inf, -math.inf, 5e-324]),
    st.floats(allow_nan=True, allow_infinity=True),
)
int32 = st.one_of(st.sampled_from([0, -1, 1, 50, 101, 2**31 - 1, -(2**31)]), st.integers(-(2**31), 2**31 - 1))
int64 = st.one_of(st.sampled_from([0, -1, 1, 2**40, 2**63 - 1, -(2**63)]), st.integers(-(2**63), 2**63 - 1))
labels = st.dictionaries(names, texts, max_size=4)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)


def _nested(levels: int, opening: bytes = b"[", closing: bytes = b"]") -> bytes:
    return b'{"shell":"x","n":' + opening * levels + closing * levels + b"}"


# A value no JSON field may hold, inside an otherwise valid shell payload (so that it is this
# value, and nothing else, that must be refused).
hostile_values = st.one_of(
    st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400", b"[NaN]", b'{"a":Infinity}', b"nan"]),
    st.integers(Limits.maxjson_depth - 1, Limits.maxjson_depth + 2).map(lambda n: b"[" * n + b"]" * n),
    st.integers(30, 20_000).map(lambda n: b"[" * n + b"]" * n),
)
json_bytes = st.one_of(
    hostile_values.map(lambda value: b'{"shell":"x","n":' + value + b"}"),
    hostile_values.map(lambda value: b'{"command":["x"],"n":' + value + b"}"),
    st.builds(
        lambda shell, extra: json.dumps({"shell": shell, **extra}).encode(),
        st.text(min_size=1, max_size=12),
        st.dictionaries(st.sampled_from(["env", "cwd", "x", "args"]), json_values, max_size=2),
    ),
    st.builds(lambda command: json.dumps({"command": command}).encode(), st.lists(st.text(max_size=8), max_size=3)),
    st.builds(lambda function: json.dumps({"function": function}).encode(), texts),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.integers(1, 20_000).map(_nested),
    st.integers(1, 2_000).map(lambda n: _nested(n, b'{"k":', b"}")),
    st.sampled_from(
        [
            b"",
            b"{",
            b"NaN",
            b'{"shell":"x","n":NaN}',
            b'{"shell":"x","n":[Infinity]}',
            b'{"shell":"x","n":-Infinity}',
            b'{"shell":"x","n":1e999}',
            b'{"shell":"\\ud800"}',
            b'{"command":["a\\u0000"]}',
            b'{"shell":"x","env":{"A\\u0000":"b"}}',
            b"\xff\xfe",
            b'{"shell":"x"}' * 3,
            b'{"shell":"' + b"y" * 70_000 + b'"}',
        ]
    ),
    st.binary(max_size=40),
)


def _message(kind: type[T], **fields: Any) -> T:
    """A message with the fields that are not None (None: leave an optional field unset)."""
    return kind(**{k: v for k, v in fields.items() if v is not None})


resources = st.builds(
    lambda cpu, mem, disk, net, gpu, custom: pb.ResourceRequirements(
        cpu_cores=cpu, memory_mb=mem, disk_mb=disk, network_bandwidth_mbps=net, gpu_count=gpu, custom_resources=custom
    ),
    floats,
    int64,
    int64,
    int64,
    int32,
    st.dictionaries(names, floats, max_size=3),
)


# Valid values, so that many requests pass validation and reach the state loop and the store;
# each field is then swapped for a hostile value at a rate drawn per request (0: a valid request,
# 1: everything hostile), which reaches every check alone and in combination.
plain_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12)
valid_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,12}", fullmatch=True)
valid_labels = st.dictionaries(valid_names, plain_text, max_size=3)
valid_payloads = st.one_of(
    st.builds(
        lambda shell, extra: json.dumps({"shell": shell, **extra}).encode(),
        plain_text.filter(lambda t: t.strip() != ""),
        st.dictionaries(st.sampled_from(["x", "note"]), json_values, max_size=2),
    ),
    st.lists(plain_text, min_size=1, max_size=3).map(lambda argv: json.dumps({"command": argv}).encode()),
)
valid_resources = st.builds(
    lambda cpu, mem, gpu, custom: pb.ResourceRequirements(
        cpu_cores=cpu, memory_mb=mem, gpu_count=gpu, custom_resources=custom
    ),
    st.floats(0, 8),
    st.integers(0, 4096),
    st.integers(0, 2),
    st.dictionaries(valid_names, st.floats(0, 10), max_size=2),
)


class _Hostility:
    """Which fields of one request get a hostile value: none, exactly one, a share, or all.

    Mostly-valid requests matter most: a hostile value must be refused (or stored safely) when
    everything around it is fine, which uniform mutation of every field would almost never test.
    """

    # JSON fields and amounts weigh more: they hold the most ways to be wrong.
    TASK_FIELDS = [
        "name",
        "type",
        "agent_type",
        "payload",
        "payload",
        "payload",
        "resources",
        "resources",
        "priority",
        "timeout",
        "timeout",
        "retries",
        "dependencies",
        "constraints",
        "estimated",
        "backoff",
    ]
    FIELDS = ("name", "count", "metadata", "metadata", "labels", "priority", "spec", "key", "wait", "wait_timeout")

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.mode = draw(st.sampled_from(["valid", "one", "one", "some", "all"]))
        self.target = draw(st.sampled_from([*self.FIELDS[0], *self.TASK_FIELDS, *self.TASK_FIELDS]))
        self.target_task = draw(st.integers(0, 3))

    def pick(self, field: str, valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any], task: int = -1) -> Any:
        if self.mode == "one":
            chosen = field == self.target and (task < 0 or task == self.target_task)
        elif self.mode == "some":
            chosen = self.draw(st.integers(0, 9)) == 0
        else:
            chosen = self.mode == "all"
        return self.draw(hostile if chosen else valid)


def task_spec(h: _Hostility, index: int, name: str, earlier: list[str]) -> pb.TaskSpec:
    def pick(field: str, valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> Any:
        return h.pick(field, valid, hostile, index)

    return _message(
        pb.TaskSpec,
        name=pick("name", st.just(name), names),
        type=pick("type", st.sampled_from([0, 1, 2, 3, 4]), int32),
        agent_type=pick("agent_type", st.just("shell"), st.sampled_from(["python", "ext", ""]) | names),
        payload_json=pick("payload", valid_payloads, json_bytes),
        resources=pick("resources", st.none() | valid_resources, resources),
        priority=pick("priority", st.none() | st.integers(0, 100), int32),
        timeout_s=pick("timeout", st.none() | st.floats(0.1, 1000), floats),
        retries=pick("retries", st.none() | st.integers(0, 5), int32),
        dependencies=pick(
            "dependencies",
            st.lists(st.sampled_from(earlier), max_size=2, unique=True) if earlier else st.just([]),
            st.lists(names, max_size=3),
        ),
        constraints=pick("constraints", valid_labels, labels),
        estimated_duration_s=pick("estimated", st.floats(0, 100), floats),
        retry_backoff_s=pick("backoff", st.none() | st.floats(0, 60), floats),
    )


@st.composite
def submit_requests(draw: st.DrawFn) -> orchestrator_pb2.SubmitWorkflowRequest:
    h = _Hostility(draw)
    pool = ["a", "b", "c", "d", "a", "b"]  # past four tasks, names repeat: duplicates
    count = h.pick("count", st.integers(1, 4), st.integers(0, 6))
    # Each task depends only on earlier ones: a DAG unless made hostile.
    tasks = [task_spec(h, i, pool[i], pool[:i]) for i in range(count)]
    spec = _message(
        pb.WorkflowSpec,
        name=h.pick("name", valid_names, names),
        tasks=tasks,
        metadata_json=h.pick(
            "metadata",
            st.none() | json_values.map(lambda v: json.dumps({"m": v}).encode()),
            hostile_values.map(lambda value: b'{"m":' + value + b"}") | json_bytes,
        ),
        labels=h.pick("labels", valid_labels, labels),
        priority=h.pick("priority", st.none() | st.integers(0, 100), int32),
    )
    return _message(
        orchestrator_pb2.SubmitWorkflowRequest,
        spec=h.pick("spec", st.just(spec), st.none() | st.just(spec)),
        idempotency_key=h.pick("key", st.sampled_from(["", "k1", "k2"]), texts),
        start=draw(st.booleans()),
        wait=h.pick("wait", st.just(False), st.booleans()),
        wait_timeout_s=h.pick("wait_timeout", st.floats(0, 5), floats),
    )


# Inventory amounts are fuzzed with NaN, infinities, negatives and amounts far over the limits
# (a gpu_count of millions was a memory bomb before the gateway checked it); the gpus list itself
# stays short so that the fuzz's own messages stay small.
inventories = st.builds(
    lambda cpu, mem, disk, net, gpu, custom, slots: pb.Inventory(
        cpu_cores=cpu,
        memory_mb=mem,
        disk_mb=disk,
        network_bandwidth_mbps=net,
        gpu_count=gpu,
        gpus=[pb.GpuInfo(index=i) for i in range(max(0, min(gpu, 4)))],
        custom_resources=custom,
        slots=slots,
    ),
    floats,
    int64,
    int64,
    int64,
    st.one_of(st.integers(-10, 300), st.integers(-(2**31), 2**31 - 1)),
    st.dictionaries(names, floats, max_size=3),
    st.one_of(st.integers(-10, 10_000), st.integers(-(2**31), 2**31 - 1)),
)
attempt_ids = st.one_of(st.sampled_from(["", "nope", "<known>", "a" * 300]), texts)
hello = st.builds(
    lambda agent_id, name, host, types, lab, inv, running, version, draining: agent_pb2.AgentMessage(
        hello=agent_pb2.Hello(
            agent_id=agent_id,
            name=name,
            hostname=host,
            agent_types=types,
            labels=lab,
            inventory=inv,
            running_attempt_ids=running,
            version=version,
            draining=draining,
        )
    ),
    st.sampled_from(["", "fuzz-agent"]) | names,
    st.sampled_from(["fuzz-agent", "other"]) | names,
    texts,
    st.lists(st.sampled_from(["shell", "ext"]) | names, max_size=3),
    labels,
    inventories,
    st.lists(attempt_ids, max_size=3),
    texts,
    st.booleans(),
)
heartbeat = st.builds(
    lambda inventory, draining, cpu, running: agent_pb2.AgentMessage(
        heartbeat=_message(
            agent_pb2.Heartbeat,
            usage=pb.Usage(cpu_percent=cpu, running_attempts=running),
            inventory=inventory,
            draining=draining,
        )
    ),
    st.none() | inventories,
    st.booleans(),
    floats,
    int32,
)


@st.composite
def task_events(draw: st.DrawFn) -> agent_pb2.TaskEvent:
    attempt_id = draw(attempt_ids)
    kind = draw(st.sampled_from(["started", "finished", "output", "checkpoint", "accepted", "released", None]))
    event = agent_pb2.TaskEvent(attempt_id=attempt_id)
    if draw(st.booleans()):
        event.at.seconds = draw(st.integers(-(2**40), 2**40))
    if kind == "started":
        event.started.pid = draw(int32)
    elif kind == "finished":
        event.finished.CopyFrom(
            agent_pb2.Finished(
                outcome=draw(st.integers(-1, 7)),
                exit_code=draw(int32),
                result_json=draw(json_bytes),
                error=draw(texts),
                retryable=draw(st.booleans()),
            )
        )
    elif kind == "output":
        event.output.CopyFrom(
            agent_pb2.Output(stdout=draw(st.binary(max_size=64)), stderr=b"\x00\xff", truncated=draw(st.booleans()))
        )
    elif kind == "checkpoint":
        event.checkpoint.data_json = draw(json_bytes)
    elif kind == "accepted":
        event.accepted.SetInParent()
    elif kind == "released":
        event.released.SetInParent()
    return event


events = st.lists(task_events(), max_size=4).map(
    lambda items: agent_pb2.AgentMessage(events=agent_pb2.TaskEvents(events=items))
)
agent_messages = st.one_of(hello, heartbeat, events, st.just(agent_pb2.AgentMessage()))


_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_DOUBLE: floats,
    FieldDescriptor.TYPE_FLOAT: floats.map(lambda f: f if not math.isfinite(f) or abs(f) < 3e38 else math.inf),
    FieldDescriptor.TYPE_INT32: int32,
    FieldDescriptor.TYPE_INT64: int64,
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_BYTES: json_bytes,
    FieldDescriptor.TYPE_ENUM: st.integers(-1, 10),
}


def _scalar(draw: st.DrawFn, field: FieldDescriptor, ids: list[str]) -> Any:
    if field.type == FieldDescriptor.TYPE_STRING:
        if field.name.endswith("_id") or field.name == "workflow_id":
            known = st.sampled_from(ids)
            return draw(known | known.map(lambda i: i[: max(1, len(i) // 2)]) | names)
        return draw(texts)
    return draw(_SCALARS[field.type])


@st.composite
def requests_for(draw: st.DrawFn, descriptor: Any, ids: list[str], depth: int = 0) -> Any:
    """A request message with random values in a random subset of its fields (nested ones too)."""
    message = message_factory.GetMessageClass(descriptor)()
    if descriptor.full_name == "corral.v1.WorkflowSpec":
        return draw(submit_requests()).spec
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            for _ in range(draw(st.integers(0, 3))):
                k = _scalar(draw, key, ids) if key.type != FieldDescriptor.TYPE_STRING else draw(names)
                if value.message_type is not None:
                    continue
                getattr(message, field.name)[k] = _scalar(draw, value, ids)
        elif field.message_type is not None:
            if depth >= 2:
                continue
            items = draw(st.integers(1, 3)) if field.is_repeated else 1
            for _ in range(items):
                item = draw(requests_for(field.message_type, ids, depth + 1))
                target = getattr(message, field.name)
                if field.is_repeated:
                    target.add().CopyFrom(item)
                else:
                    target.CopyFrom(item)
        elif field.is_repeated:
            getattr(message, field.name).extend(_scalar(draw, field, ids) for _ in range(draw(st.integers(0, 3))))
        else:
            setattr(message, field.name, _scalar(draw, field, ids))
    return message
