"""No command stops the state loop: an unexpected error rejects its command whole and the loop goes on.

Real runtime, real SQLite file, real gRPC server (the ``controller`` fixture). Faults are injected
as commands, the way every request reaches the machine, so the recovery path runs exactly as it
would for a bug hit by a real request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import stat
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from corral.controller.core import events as ev
from corral.controller.core.machine import Machine
from corral.controller.core.model import Inventory, Resources, WorkflowState
from corral.controller.daemon import private_dir
from corral.controller.rpc.admission import admit
from corral.controller.runtime import CommandFailed
from corral.controller.store.sqlite import SqliteStore
from corral.v1 import agent_pb2, orchestrator_pb2, scheduler_pb2, types_pb2
from tests.rpc.conftest import Controller, shell_task, workflow_spec

OR = orchestrator_pb2


def _submission(controller: Controller, name: str) -> ev.SubmitWorkflow:
    spec = workflow_spec(name, [shell_task("a"), shell_task("b", "a")])
    admitted = admit(spec, True, controller.runtime.machine.new_id)
    return ev.SubmitWorkflow(admitted.workflow, admitted.tasks, start=True)


def _stored_names(controller: Controller) -> list[str]:
    store = SqliteStore(controller.db)
    try:
        return sorted(w.name for w in store.load().workflows)
    finally:
        store.close()


def _reloaded(controller: Controller) -> Machine:
    """The stored state loaded into a fresh machine, its invariants checked."""
    store = SqliteStore(controller.db)
    try:
        snapshot = store.load()
    finally:
        store.close()
    machine = Machine(new_id=lambda: "x")
    machine.restore(snapshot, 0.0)
    machine.validate()
    return machine


async def _serving(controller: Controller) -> None:
    health = health_pb2_grpc.HealthStub(controller.channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    # ... and the loop answers: a submission goes all the way to the store.
    response = await controller.orchestrator.SubmitWorkflow(
        OR.SubmitWorkflowRequest(spec=workflow_spec("after", [shell_task("x")]))
    )
    assert response.workflow_id.startswith("wf-")
    assert controller.runtime.failure is None


async def test_a_command_that_raises_half_way_leaves_nothing(controller: Controller) -> None:
    rt = controller.runtime
    good = _submission(controller, "good")
    bad = _submission(controller, "bad")

    def half_then_crash(machine: Machine, now: float) -> None:
        machine.submit(bad, now)  # mutates the machine: a workflow, its tasks, the ready queue
        raise RuntimeError("a bug after a partial change")

    # Posted back to back, so the three commands share one tick; the good one runs first and must
    # be applied again on the rebuilt machine, the one after the failure must run at all.
    first = rt.post(lambda m, now: m.submit(good, now))
    failing = rt.post(half_then_crash)
    later = rt.post(lambda m, now: sorted(w.name for w in m.workflows.values()))
    good_id, deduplicated = await first
    assert not deduplicated
    with pytest.raises(CommandFailed):
        await failing
    assert await later == ["good"]

    assert rt.rebuilds == 1
    assert bad.workflow.id not in rt.machine.workflows
    assert all(t.id not in rt.machine.tasks for t in bad.tasks)
    rt.machine.validate()
    assert _stored_names(controller) == ["good"]
    stored = _reloaded(controller)
    assert stored.workflows[good_id].state is WorkflowState.RUNNING
    # Visible through the API as it is stored, and the bad one is not.
    status = await controller.orchestrator.GetWorkflowStatus(OR.GetWorkflowStatusRequest(workflow_id=good_id))
    assert status.status.name == "good"
    error = None
    try:
        await controller.orchestrator.GetWorkflowStatus(OR.GetWorkflowStatusRequest(workflow_id=bad.workflow.id))
    except grpc.aio.AioRpcError as exc:
        error = exc
    assert error is not None and error.code() is grpc.StatusCode.NOT_FOUND
    await _serving(controller)


async def test_data_the_store_cannot_encode_is_rejected_alone(controller: Controller) -> None:
    rt = controller.runtime
    good = _submission(controller, "good")
    hostile = ev.AgentHello("nan-agent", "nan-agent", inventory=Inventory(Resources(cpu_cores=math.nan)))

    before = rt.post(lambda m, now: m.submit(good, now))
    hello = rt.post(lambda m, now: m.hello(hostile, now))  # NaN is not JSON: the commit fails
    after = rt.post(lambda m, now: len(m.workflows))
    await before
    with pytest.raises(CommandFailed):
        await hello
    assert await after == 1
    assert "nan-agent" not in rt.machine.agents
    rt.machine.validate()
    assert _stored_names(controller) == ["good"]
    assert "nan-agent" not in _reloaded(controller).agents
    await _serving(controller)


async def test_a_hostile_hello_over_the_wire_leaves_the_controller_up(controller: Controller) -> None:
    call = controller.gateway.Connect()
    inventory = types_pb2.Inventory(cpu_cores=math.inf, custom_resources={"x": math.nan}, slots=1)
    await call.write(
        agent_pb2.AgentMessage(hello=agent_pb2.Hello(name="evil", agent_types=["shell"], inventory=inventory))
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    # INVALID_ARGUMENT once the gateway checks inventories; never a stopped controller.
    assert info.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL)
    assert "evil" not in {a.name for a in _reloaded(controller).agents.values()}
    await _serving(controller)


async def test_each_kind_of_error_is_logged_once(controller: Controller, caplog: pytest.LogCaptureFixture) -> None:
    rt = controller.runtime

    def crash(machine: Machine, now: float) -> None:
        raise KeyError("always the same bug")

    with caplog.at_level(logging.WARNING, logger="corral.controller"):
        for _ in range(5):
            with pytest.raises(CommandFailed):
                await rt.call(crash)
    with_traceback = [r for r in caplog.records if r.exc_info is not None]
    assert len(with_traceback) == 1, [r.getMessage() for r in caplog.records]
    assert "KeyError" in with_traceback[0].getMessage()
    assert len(caplog.records) <= 3  # the first, then at 2 and 4 repeats: never one per event
    await _serving(controller)


async def test_watchers_and_waiters_survive_a_rebuild(controller: Controller) -> None:
    rt = controller.runtime
    spec = workflow_spec("ext", [shell_task("only", agent_type="ext", payload={"job": 1})])
    submitted = await controller.orchestrator.SubmitWorkflow(OR.SubmitWorkflowRequest(spec=spec, start=True))
    watch = controller.orchestrator.WatchWorkflow(OR.WatchWorkflowRequest(workflow_id=submitted.workflow_id))
    first = await watch.read()
    assert first.message == "current state"
    waiting = asyncio.ensure_future(
        controller.orchestrator.ExecuteWorkflow(
            OR.ExecuteWorkflowRequest(workflow_id=submitted.workflow_id, wait=True, wait_timeout_s=60)
        )
    )

    def crash(machine: Machine, now: float) -> Any:
        raise RuntimeError("bug")

    async with asyncio.timeout(30):  # the wait is registered (in the loop) before the fault
        while submitted.workflow_id not in rt.waiters:
            await asyncio.sleep(0.01)
    with pytest.raises(CommandFailed):
        await rt.call(crash)
    assert rt.rebuilds == 1

    pulled = await controller.scheduler.GetNextTask(
        scheduler_pb2.GetNextTaskRequest(worker_id="w1", agent_types=["ext"], wait_s=10)
    )
    assert pulled.found
    await controller.scheduler.CompleteTask(
        scheduler_pb2.CompleteTaskRequest(attempt_id=pulled.assignment.attempt_id, worker_id="w1", result_json=b"7")
    )
    done = await asyncio.wait_for(waiting, 30)
    assert done.result.results_json["only"] == b"7"
    states = []
    while (event := await asyncio.wait_for(watch.read(), 30)) is not grpc.aio.EOF:
        states.append(event.workflow_state)
    assert states[-1] == 5  # WORKFLOW_STATE_COMPLETED: the watcher saw the end after the rebuild


def test_database_file_and_directory_are_private(tmp_path: Path) -> None:
    state = tmp_path / "deep" / "state"
    private_dir(state)
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    db = state / "corral.db"
    old = os.umask(0)  # even a permissive umask must not open the files up
    try:
        store = SqliteStore(db)
        from corral.controller.store.base import ChangeBatch

        store.commit(ChangeBatch(meta={"k": "v"}))
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            assert path.exists(), path
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, (path, oct(os.stat(path).st_mode))
        store.close()
    finally:
        os.umask(old)
    # An existing file left readable by an older version is tightened on open.
    os.chmod(db, 0o644)
    SqliteStore(db).close()
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
