"""Hostile agents against a real controller process: every bad Hello, Heartbeat or event batch is
refused with INVALID_ARGUMENT naming the field, its stream is closed, nothing is stored, and the
controller stays SERVING with bounded memory; a flood of new agent names stays within the cap."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import grpc.aio
import psutil
import pytest

from corral.controller.daemon import parse_args
from corral.controller.store.sqlite import SqliteStore
from corral.v1 import agent_pb2, orchestrator_pb2, orchestrator_pb2_grpc, types_pb2
from tests.procs import start_controller, stop

from .agent_streams import RawAgent, agent_names, hello, serving, shell_workflow, wait_workflow

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[tuple[psutil.Process, str, Path]]:
    proc, address = start_controller(tmp_path, extra=["--synchronous", "NORMAL"])
    try:
        yield psutil.Process(proc.pid), address, tmp_path / "c.db"
    finally:
        stop(proc)
        assert proc.returncode == 0, (tmp_path / "controller.log").read_text(errors="replace")[-4000:]


@pytest.fixture
async def channel(controller: tuple[psutil.Process, str, Path]) -> AsyncIterator[grpc.aio.Channel]:
    options = [("grpc.max_send_message_length", 64 * MiB), ("grpc.max_receive_message_length", 64 * MiB)]
    async with grpc.aio.insecure_channel(controller[1], options=options) as chan:
        yield chan


def _with(name: str, change: Callable[[agent_pb2.Hello], None], **inventory: float) -> agent_pb2.Hello:
    message = hello(name, **inventory)
    change(message)
    return message


def _nothing(message: agent_pb2.Hello) -> None:
    pass


def _labels(count: int) -> Callable[[agent_pb2.Hello], None]:
    def change(message: agent_pb2.Hello) -> None:
        for i in range(count):
            message.labels[f"k{i}"] = "v"

    return change


# (case, Hello, the field path the error must name)
HOSTILE_HELLOS: list[tuple[str, agent_pb2.Hello, str]] = [
    ("cpu NaN", hello("h-cpu-nan", cpu_cores=math.nan), "hello.inventory.cpu_cores"),
    ("cpu inf", hello("h-cpu-inf", cpu_cores=math.inf), "hello.inventory.cpu_cores"),
    ("cpu negative", hello("h-cpu-neg", cpu_cores=-1.0), "hello.inventory.cpu_cores"),
    (
        "custom NaN",
        _with("h-custom-nan", lambda m: m.inventory.custom_resources.__setitem__("fpga", math.nan)),
        "hello.inventory.custom_resources['fpga']",
    ),
    (
        "custom -inf",
        _with("h-custom-inf", lambda m: m.inventory.custom_resources.__setitem__("fpga", -math.inf)),
        "hello.inventory.custom_resources['fpga']",
    ),
    ("disk -1", hello("h-disk", disk_mb=-1), "hello.inventory.disk_mb"),
    ("gpu -5", hello("h-gpu-neg", gpu_count=-5), "hello.inventory.gpu_count"),
    ("gpu 5,000,000", hello("h-gpu-huge", gpu_count=5_000_000), "hello.inventory.gpu_count"),
    ("memory over the limit", hello("h-mem", memory_mb=1 << 50), "hello.inventory.memory_mb"),
    ("slots 1,000,000", hello("h-slots", slots=1_000_000), "hello.inventory.slots"),
    (
        "100,000 gpus listed",
        _with("h-gpus", lambda m: m.inventory.gpus.extend(types_pb2.GpuInfo(index=i) for i in range(100_000))),
        "hello.inventory.gpus",
    ),
    ("NUL in name", hello("bad\x00name"), "hello.agent_id"),
    ("newline in name", hello("bad\nname"), "hello.agent_id"),
    ("space around name", hello(" padded "), "hello.agent_id"),
    ("NUL in a label", _with("h-label-nul", lambda m: m.labels.__setitem__("zone", "eu\x00")), "hello.labels['zone']"),
    (
        "control char in a label key",
        _with("h-label-key", lambda m: m.labels.__setitem__("zo\x07ne", "eu")),
        "hello.labels['zo\\x07ne']",
    ),
    ("10,000 labels", _with("h-labels", _labels(10_000)), "hello.labels"),
    (
        "100,000 running attempt ids",
        _with("h-running", lambda m: m.running_attempt_ids.extend(f"x{i}" for i in range(100_000))),
        "hello.running_attempt_ids",
    ),
    (
        "NUL in an agent type",
        _with("h-type", lambda m: m.agent_types.append("she\x00ll")),
        "hello.agent_types[1]",
    ),
    ("control char in hostname", _with("h-host", lambda m: setattr(m, "hostname", "host\x1b[2J")), "hello.hostname"),
]


async def test_each_hostile_hello_is_refused_and_nothing_is_stored(
    controller: tuple[psutil.Process, str, Path], channel: grpc.aio.Channel
) -> None:
    process, _, db = controller
    assert await serving(channel)
    rss_before = process.memory_info().rss
    for case, message, path in HOSTILE_HELLOS:
        agent = RawAgent(channel)
        outcome = await agent.open(message)
        agent.close()
        assert outcome.code is INVALID, f"{case}: {outcome}"
        assert path in outcome.details, f"{case}: {path!r} not named in {outcome.details!r}"
        assert await serving(channel), f"{case}: the controller stopped serving"
    # A well-formed agent still gets in, and none of the hostile ones is known.
    good = RawAgent(channel)
    assert (await good.open(hello("good"))).welcome is not None
    names = await agent_names(channel)
    assert set(names) == {"good"}, names
    good.close()
    growth = (process.memory_info().rss - rss_before) / MiB
    print(f"controller RSS growth over {len(HOSTILE_HELLOS)} hostile Hellos: {growth:.1f} MiB")
    assert growth < 50
    assert process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    # Nothing of them reached the database either.
    store = SqliteStore(db)
    try:
        assert {a.name for a in store.load().agents} == {"good"}
    finally:
        store.close()


async def test_bad_heartbeats_and_event_batches_close_the_stream(
    controller: tuple[psutil.Process, str, Path], channel: grpc.aio.Channel
) -> None:
    cases: list[tuple[str, agent_pb2.AgentMessage, str]] = [
        (
            "usage NaN",
            agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(usage=types_pb2.Usage(cpu_percent=math.nan))),
            "heartbeat.usage.cpu_percent",
        ),
        (
            "inventory inf",
            agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(inventory=types_pb2.Inventory(cpu_cores=math.inf))),
            "heartbeat.inventory.cpu_cores",
        ),
        (
            "inventory gpu_count 5,000,000",
            agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(inventory=types_pb2.Inventory(gpu_count=5_000_000))),
            "heartbeat.inventory.gpu_count",
        ),
        (
            "1 MB attempt id",
            agent_pb2.AgentMessage(
                events=agent_pb2.TaskEvents(
                    events=[agent_pb2.TaskEvent(attempt_id="x" * MiB, started=agent_pb2.Started(pid=1))]
                )
            ),
            "events.events[0].attempt_id",
        ),
        (
            "20,000 events",
            agent_pb2.AgentMessage(
                events=agent_pb2.TaskEvents(
                    events=[agent_pb2.TaskEvent(attempt_id="a", accepted=agent_pb2.Accepted()) for _ in range(20_000)]
                )
            ),
            "events.events",
        ),
        ("a second Hello", agent_pb2.AgentMessage(hello=hello("beats")), "hello"),
    ]
    for case, message, path in cases:
        agent = RawAgent(channel)
        welcome = (await agent.open(hello("beats", cpu_cores=4.0))).welcome
        assert welcome is not None, case
        await agent.send(message)
        outcome = await agent.ended()
        agent.close()
        assert outcome.code is INVALID, f"{case}: {outcome}"
        assert path in outcome.details, f"{case}: {path!r} not named in {outcome.details!r}"
        assert await serving(channel)
        # The bad inventory was not applied: the agent keeps what its Hello said.
        info = (await agent_names(channel))["beats"]
        assert info.inventory.cpu_cores == 4.0 and info.inventory.gpu_count == 0, case


@pytest.mark.timeout(300)  # about 35 s on 2 shared cores; room for a busy machine
async def test_ten_thousand_new_names_stay_within_the_cap(tmp_path: Path) -> None:
    cap = 200
    proc, address = start_controller(tmp_path, extra=["--max-agents", str(cap), "--synchronous", "NORMAL"])
    try:
        process = psutil.Process(proc.pid)
        async with grpc.aio.insecure_channel(address) as channel:
            assert await serving(channel)
            rss_before = process.memory_info().rss
            outcomes: dict[grpc.StatusCode, int] = {}
            started = time.monotonic()
            names = iter(range(10_000))

            async def worker() -> None:
                for i in names:
                    agent = RawAgent(channel)
                    outcome = await agent.open(hello(f"flood-{i}"))
                    agent.close()
                    outcomes[outcome.code] = outcomes.get(outcome.code, 0) + 1

            await asyncio.gather(*(worker() for _ in range(32)))
            elapsed = time.monotonic() - started
            # Every Hello was answered: welcomed, or refused because the table was full of live sessions.
            assert sum(outcomes.values()) == 10_000
            assert set(outcomes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, outcomes
            assert outcomes.get(grpc.StatusCode.OK, 0) > 9_000, outcomes
            known = await agent_names(channel)
            assert len(known) <= cap
            assert await serving(channel)
            growth = (process.memory_info().rss - rss_before) / MiB
            print(
                f"10,000 Hellos with new names in {elapsed:.1f}s: {outcomes}; "
                f"{len(known)} agents known (cap {cap}); RSS growth {growth:.1f} MiB"
            )
            assert growth < 50
        store = SqliteStore(tmp_path / "c.db")
        try:
            assert len(store.load().agents) <= cap
        finally:
            store.close()
    finally:
        stop(proc)


def test_the_default_bounds() -> None:
    args = parse_args([])
    assert args.max_agents == 10_000 and args.agent_ttl == 3600.0 and args.assignment_lease == 3.0


async def test_a_finished_report_with_an_invalid_result_fails_that_attempt_and_is_acked(
    channel: grpc.aio.Channel,
) -> None:
    agent = RawAgent(channel)
    assert (await agent.open(hello("liar", slots=1))).welcome is not None
    stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
    submitted = await stub.SubmitWorkflow(
        orchestrator_pb2.SubmitWorkflowRequest(spec=shell_workflow("lied-to", {"t": "true"}), start=True)
    )
    async with asyncio.timeout(15):
        while not (message := await agent.call.read()).HasField("assign"):
            pass
    (assignment,) = message.assign.assignments
    bad = agent_pb2.Finished(outcome=types_pb2.ATTEMPT_OUTCOME_SUCCEEDED, result_json=b'{"half": ')
    await agent.send(
        agent_pb2.AgentMessage(
            events=agent_pb2.TaskEvents(events=[agent_pb2.TaskEvent(attempt_id=assignment.attempt_id, finished=bad)])
        )
    )
    # Acknowledged (so the agent stops re-sending it), and that attempt failed with the reason.
    async with asyncio.timeout(15):
        while not (message := await agent.call.read()).HasField("ack"):
            pass
    assert list(message.ack.attempt_ids) == [assignment.attempt_id]
    status = await wait_workflow(channel, submitted.workflow_id, 15)
    (task,) = status.tasks
    assert task.state == types_pb2.TASK_STATE_FAILED
    assert task.error.startswith("the agent reported an invalid result: events.events[0].finished.result_json")
    assert await serving(channel)
    agent.close()
