"""The agent edge as pure functions: what a Hello, Heartbeat or event batch may hold, and how a
Hello is bound to its credential."""

from __future__ import annotations

import asyncio
import math

import grpc
import grpc.aio
import pytest

from corral.controller.core.events import AgentHello
from corral.controller.errors import InvalidArgument, PermissionDenied
from corral.controller.rpc import gateway
from corral.controller.rpc.agent_binding import bind_hello
from corral.controller.rpc.agent_input import check_events, check_heartbeat, check_hello
from corral.controller.rpc.identity import DEV_ADMIN, Grant, Principal
from corral.v1 import agent_pb2, orchestrator_pb2, types_pb2

from .conftest import Controller


def _real_hello() -> agent_pb2.AgentMessage:
    """What a real agent on a GPU box says."""
    return agent_pb2.AgentMessage(
        hello=agent_pb2.Hello(
            agent_id="ip-10-0-3-17.eu-west-1.compute.internal",
            name="ip-10-0-3-17.eu-west-1.compute.internal",
            hostname="ip-10-0-3-17",
            agent_types=["shell", "python"],
            labels={"zone": "eu-west-1a", "gpu.model": "A100 40GB"},
            inventory=types_pb2.Inventory(
                cpu_cores=96,
                memory_mb=768_000,
                disk_mb=3_500_000,
                network_bandwidth_mbps=25_000,
                gpu_count=8,
                gpus=[
                    types_pb2.GpuInfo(index=i, name="NVIDIA A100-SXM4-40GB", memory_mb=40960, uuid=f"GPU-{i}")
                    for i in range(8)
                ],
                custom_resources={"license.matlab": 4.0},
                slots=96,
            ),
            running_attempt_ids=["0123456789abcdef0123"],
            version="0.1.0",
        )
    )


def _violations(exc: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in exc.value.violations]


def test_a_real_agents_hello_passes() -> None:
    message = _real_hello()
    assert check_hello(message) is message.hello


def test_every_bad_field_is_named_at_once() -> None:
    message = _real_hello()
    inventory = message.hello.inventory
    inventory.cpu_cores = math.nan
    inventory.gpus[3].index = 0  # listed twice
    inventory.gpus[4].memory_mb = -1
    message.hello.version = "1\n2"
    with pytest.raises(InvalidArgument) as exc:
        check_hello(message)
    assert _violations(exc) == [
        "hello.version",
        "hello.inventory.cpu_cores",
        "hello.inventory.gpus[3].index",
        "hello.inventory.gpus[4].memory_mb",
    ]


def test_the_first_message_must_be_a_hello() -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_hello(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat()))
    assert _violations(exc) == ["hello"]


@pytest.mark.parametrize(
    ("usage", "field"),
    [
        (types_pb2.Usage(cpu_percent=-1), "heartbeat.usage.cpu_percent"),
        (types_pb2.Usage(load_1m=math.inf), "heartbeat.usage.load_1m"),
        (types_pb2.Usage(memory_used_mb=-5), "heartbeat.usage.memory_used_mb"),
        (types_pb2.Usage(running_attempts=-1), "heartbeat.usage.running_attempts"),
        (types_pb2.Usage(disk_free_mb=-1), "heartbeat.usage.disk_free_mb"),
    ],
)
def test_heartbeat_usage_is_checked(usage: types_pb2.Usage, field: str) -> None:
    check_heartbeat(agent_pb2.Heartbeat(usage=types_pb2.Usage(cpu_percent=250.0, load_1m=3.5)))
    with pytest.raises(InvalidArgument) as exc:
        check_heartbeat(agent_pb2.Heartbeat(usage=usage))
    assert _violations(exc) == [field]


def test_event_batches_are_checked() -> None:
    ok = agent_pb2.TaskEvent(attempt_id="a1", started=agent_pb2.Started(pid=3))
    ok.at.GetCurrentTime()
    check_events(agent_pb2.TaskEvents(events=[ok, agent_pb2.TaskEvent(attempt_id="a1", accepted=agent_pb2.Accepted())]))
    big = agent_pb2.TaskEvent(attempt_id="a1", output=agent_pb2.Output(stdout=b"x" * (17 << 20)))
    bad_id = agent_pb2.TaskEvent(attempt_id="a\x00", released=agent_pb2.Released())
    long_error = agent_pb2.TaskEvent(attempt_id="a1", finished=agent_pb2.Finished(error="e" * 70_000))
    future = agent_pb2.TaskEvent(attempt_id="a1", started=agent_pb2.Started())
    future.at.seconds = 10**12
    with pytest.raises(InvalidArgument) as exc:
        check_events(agent_pb2.TaskEvents(events=[big, bad_id, long_error, future]))
    assert _violations(exc) == [
        "events.events[0].output",
        "events.events[1].attempt_id",
        "events.events[2].finished.error",
        "events.events[3].at",
    ]


def _hello(name: str = "a1", **fields: object) -> AgentHello:
    return AgentHello(name, name, agent_types=("shell", "python", "docker"), labels={"gpu": "yes"}, **fields)  # type: ignore[arg-type]


def test_auth_off_trusts_the_hello() -> None:
    hello = _hello()
    assert bind_hello(hello, DEV_ADMIN) is hello


def test_an_agent_credential_decides_name_labels_types_and_namespaces() -> None:
    principal = Principal("agent", "a1", Grant("agent", ("ml",), {"zone": "eu"}, ("python",)))
    bound = bind_hello(_hello(), principal)
    assert (bound.labels, bound.agent_types, bound.namespaces) == ({"zone": "eu"}, ("python",), ("ml",))
    with pytest.raises(PermissionDenied, match="this credential is agent 'a1'; Hello says 'a2'"):
        bind_hello(_hello("a2"), principal)
    # No agent types in the grant: shell and python, of those the agent offers.
    plain = bind_hello(_hello(), Principal("agent", "a1", Grant("agent")))
    assert plain.agent_types == ("shell", "python") and plain.labels == {} and plain.namespaces == ()


def test_other_callers_may_not_be_agents() -> None:
    with pytest.raises(PermissionDenied, match="needs an agent credential"):
        bind_hello(_hello(), Principal("token", "t1", Grant("worker")))


async def test_a_stream_that_never_says_hello_is_ended(controller: Controller, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway, "HELLO_TIMEOUT_S", 0.3)
    call = controller.gateway.Connect()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async with asyncio.timeout(10):
            await call.read()
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "no Hello within 0.3 s" in (info.value.details() or "")


def test_hello_incarnation_and_finished_ids_are_checked() -> None:
    message = _real_hello()
    message.hello.incarnation = "x" * 1000
    message.hello.finished_attempt_ids.extend(["ok", "bad\nid"])
    with pytest.raises(InvalidArgument) as info:
        check_hello(message)
    assert _violations(info) == ["hello.incarnation", "hello.finished_attempt_ids[1]"]


async def _hello_on(controller: Controller, **fields: object) -> tuple[grpc.aio.StreamStreamCall, agent_pb2.Welcome]:
    call = controller.gateway.Connect()
    hello = agent_pb2.Hello(agent_id="a1", name="a1", agent_types=["shell"], **fields)  # type: ignore[arg-type]
    await call.write(agent_pb2.AgentMessage(hello=hello))
    async with asyncio.timeout(10):
        first = await call.read()
    assert first.WhichOneof("kind") == "welcome"
    return call, first.welcome


async def test_a_heartbeat_is_echoed_with_its_seq_after_the_state_loop_applied_it(controller: Controller) -> None:
    call, welcome = await _hello_on(controller, incarnation="inc-1")
    config = controller.runtime.machine.config
    assert (welcome.fence_after_s, welcome.kill_grace_s) == (config.fence_after_s, config.kill_grace_s)
    assert controller.runtime.machine.agents["a1"].incarnation == "inc-1"
    ticks = controller.runtime.ticks
    for seq in (7, 8, 9):
        await call.write(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(seq=seq)))
    async with asyncio.timeout(10):
        while (message := await call.read()).WhichOneof("kind") != "heartbeat_ack":
            pass
    # The session's first heartbeat is echoed at once; the next ones only every echo_every_s
    # (the cadence itself is checked on the machine, with its fake clock).
    assert message.heartbeat_ack.seq == 7
    assert controller.runtime.ticks > ticks  # applied by the loop, not beside it
    call.cancel()


async def test_a_report_batch_is_applied_and_acked_through_the_loop(controller: Controller) -> None:
    call, _ = await _hello_on(controller)
    await controller.orchestrator.SubmitWorkflow(
        orchestrator_pb2.SubmitWorkflowRequest(
            spec=types_pb2.WorkflowSpec(
                name="w", tasks=[types_pb2.TaskSpec(name="t", agent_type="shell", payload_json=b'{"shell":"true"}')]
            ),
            start=True,
        )
    )
    async with asyncio.timeout(10):
        while (message := await call.read()).WhichOneof("kind") != "assign":
            pass
    attempt_id = message.assign.assignments[0].attempt_id
    finished = agent_pb2.TaskEvent(
        attempt_id=attempt_id,
        finished=agent_pb2.Finished(outcome=types_pb2.ATTEMPT_OUTCOME_SUCCEEDED, result_json=b"42"),
    )
    finished.at.GetCurrentTime()
    await call.write(agent_pb2.AgentMessage(events=agent_pb2.TaskEvents(events=[finished])))
    async with asyncio.timeout(10):
        while (message := await call.read()).WhichOneof("kind") != "ack":
            pass
    assert list(message.ack.attempt_ids) == [attempt_id]
    (task,) = controller.runtime.machine.tasks.values()
    assert task.result == b"42"
    events = controller.runtime.store.workflow_events(task.workflow_id, task_id=task.id)
    assert [e.kind for e in events] == ["placed", "completed"]
    call.cancel()
