"""The SDK's records built without their ``__init__`` (``records.build``) are ordinary records."""

from __future__ import annotations

import dataclasses

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from corral.controller.sdk.records import build
from corral.controller.sdk.types import Resources, TaskStatus
from corral.v1 import types_pb2 as pb


def _status() -> pb.TaskStatus:
    return pb.TaskStatus(
        task_id="t-1",
        name="train",
        workflow_id="w-1",
        state=pb.TASK_STATE_COMPLETED,
        attempts=2,
        result_json=b'{"loss": 0.5}',
        dependencies=["prep"],
        started_at=Timestamp(seconds=1_700_000_000),
        finished_at=Timestamp(seconds=1_700_000_002, nanos=500_000_000),
        slack_s=1.5,
        cache_source_workflow_id="w-0",
        cache_source_task_id="t-0",
        cache_source_attempt_id="a-0",
    )


def test_a_task_status_from_its_proto_equals_one_built_by_its_constructor() -> None:
    status = TaskStatus.from_proto(_status())
    fields = {f.name for f in dataclasses.fields(TaskStatus)}
    assert set(vars(status)) == fields  # every field set, none extra
    assert status == TaskStatus(**{name: getattr(status, name) for name in fields})
    assert (status.result, status.dependencies, status.duration_s) == ({"loss": 0.5}, ("prep",), 2.5)
    assert (status.slack_s, status.cache_source, status.deadline) == (1.5, "w-0/t-0/a-0", None)
    assert hash(status.name) and status.to_dict()["state"] == "completed"


def test_a_built_record_stays_frozen() -> None:
    resources = build(
        Resources, cpu_cores=1.0, memory_mb=2, disk_mb=0, network_bandwidth_mbps=0, gpu_count=0, custom_resources={}
    )
    assert resources == Resources(cpu_cores=1.0, memory_mb=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        resources.cpu_cores = 2.0  # type: ignore[misc]
