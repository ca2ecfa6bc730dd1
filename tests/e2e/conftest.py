"""Fixtures of the end-to-end tier: a real controller and real agents as separate processes on loopback.

Everything talks through the raw generated gRPC stubs (``corral.v1.*_pb2_grpc``) over a sync
channel, exactly as an external client would. Each process writes its output to a log file under
the test's tmp folder; the logs are printed when a test fails.

Every process started here, and everything those processes start (task processes, python workers,
orphans left behind by a ``kill -9``), carries the environment marker ``CORRAL_E2E_RUN=<id>``. The
teardown stops the daemons, then kills whatever still carries the marker and asserts nothing is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psutil
import pytest

from corral.controller.address_file import AddressTimeout, ControllerExited, wait_for_address
from corral.controller.rpc.wire_spec import spec_to_proto
from corral.controller.spec import parse_workflow
from corral.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
    types_pb2,
)

__all__ = [
    "TASKS_DIR",
    "Agent",
    "Api",
    "Cluster",
    "Controller",
    "TaskState",
    "WorkflowState",
    "eventually",
    "pids_alive",
]

T = TypeVar("T")

#: The folder on the agents' --python-path: python tasks are ``e2e_tasks:NAME``.
TASKS_DIR = Path(__file__).parent / "tasks"
MARK = "CORRAL_E2E_RUN"
START_TIMEOUT_S = 30.0
RPC_TIMEOUT_S = 10.0


class TaskState:
    """Short names for the wire enum values."""

    PENDING = types_pb2.TASK_STATE_PENDING
    READY = types_pb2.TASK_STATE_READY
    ASSIGNED = types_pb2.TASK_STATE_ASSIGNED
    RUNNING = types_pb2.TASK_STATE_RUNNING
    COMPLETED = types_pb2.TASK_STATE_COMPLETED
    FAILED = types_pb2.TASK_STATE_FAILED
    CANCELLED = types_pb2.TASK_STATE_CANCELLED
    SKIPPED = types_pb2.TASK_STATE_SKIPPED
    STARTED = frozenset({ASSIGNED, RUNNING, COMPLETED, FAILED})


class WorkflowState:
    """Short names for the wire enum values."""

    RUNNING = types_pb2.WORKFLOW_STATE_RUNNING
    PAUSED = types_pb2.WORKFLOW_STATE_PAUSED
    CANCELLING = types_pb2.WORKFLOW_STATE_CANCELLING
    COMPLETED = types_pb2.WORKFLOW_STATE_COMPLETED
    FAILED = types_pb2.WORKFLOW_STATE_FAILED
    CANCELLED = types_pb2.WORKFLOW_STATE_CANCELLED
    TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})


def eventually(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds.

    A controller that is briefly unreachable (restarting) counts as "not yet", not as a failure.
    """
    deadline = time.monotonic() + timeout
    last_error: grpc.RpcError | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error.code().name})" if last_error is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{detail}")
        time.sleep(interval)


def pids_alive(pids: Sequence[int]) -> list[int]:
    """The pids in ``pids`` that belong to a live (not zombie) process."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def read_pids(path: Path) -> list[int]:
    """The pids a task wrote to ``path``, one per line (missing file: none)."""
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().split() if line.strip()]


class Api:
    """The controller's services through the raw stubs, plus a few helpers tests share."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.insecure_channel(address)
        self.orchestrator = orchestrator_pb2_grpc.OrchestratorStub(self.channel)
        self.scheduler = scheduler_pb2_grpc.SchedulerStub(self.channel)
        self.cluster = agent_pb2_grpc.ClusterStub(self.channel)
        self.gateway = agent_pb2_grpc.AgentGatewayStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def submit(self, spec: Mapping[str, Any], *, start: bool = True) -> str:
        """Validate ``spec`` (the workflow file format) and submit it; returns the workflow id."""
        message = spec_to_proto(parse_workflow(spec))
        request = orchestrator_pb2.SubmitWorkflowRequest(spec=message, start=start)
        return self.orchestrator.SubmitWorkflow(request, timeout=RPC_TIMEOUT_S).workflow_id

    def status(self, workflow_id: str, *, tasks: bool = True) -> types_pb2.WorkflowStatus:
        request = orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id, include_tasks=tasks)
        return self.orchestrator.GetWorkflowStatus(request, timeout=RPC_TIMEOUT_S).status

    def tasks(self, workflow_id: str) -> dict[str, types_pb2.TaskStatus]:
        """Task name -> its status."""
        return {t.name: t for t in self.status(workflow_id).tasks}

    def explain(self, task_id: str) -> scheduler_pb2.ExplainTaskResponse:
        return self.scheduler.ExplainTask(scheduler_pb2.ExplainTaskRequest(task_id=task_id), timeout=RPC_TIMEOUT_S)

    def pause(self, workflow_id: str) -> types_pb2.WorkflowStatus:
        request = orchestrator_pb2.PauseWorkflowRequest(workflow_id=workflow_id)
        return self.orchestrator.PauseWorkflow(request, timeout=RPC_TIMEOUT_S).status

    def resume(self, workflow_id: str) -> types_pb2.WorkflowStatus:
        request = orchestrator_pb2.ResumeWorkflowRequest(workflow_id=workflow_id)
        return self.orchestrator.ResumeWorkflow(request, timeout=RPC_TIMEOUT_S).status

    def cancel(self, workflow_id: str, *, force: bool = False) -> types_pb2.WorkflowStatus:
        request = orchestrator_pb2.CancelWorkflowRequest(workflow_id=workflow_id, force=force, reason="e2e test")
        return self.orchestrator.CancelWorkflow(request, timeout=RPC_TIMEOUT_S).status

    def agents(self) -> list[types_pb2.AgentInfo]:
        return list(self.cluster.ListAgents(agent_pb2.ListAgentsRequest(), timeout=RPC_TIMEOUT_S).agents)

    def connected_agents(self) -> set[str]:
        return {a.name for a in self.agents() if a.state == types_pb2.AGENT_STATE_CONNECTED}

    def wait_agents(self, names: Sequence[str], timeout: float = START_TIMEOUT_S) -> None:
        """Block until every agent in ``names`` is connected."""
        eventually(lambda: set(names) <= self.connected_agents(), timeout, f"agents {sorted(names)} to connect")

    def wait_done(self, workflow_id: str, timeout: float) -> types_pb2.WorkflowStatus:
        """Block until the workflow is terminal; returns its final status with tasks."""

        def done() -> types_pb2.WorkflowStatus | None:
            status = self.status(workflow_id)
            return status if status.state in WorkflowState.TERMINAL else None

        return eventually(done, timeout, f"workflow {workflow_id} to finish", interval=0.2)


class _Process:
    """One daemon process with its log file; knows how to SIGKILL and SIGTERM itself."""

    def __init__(self, label: str, argv: list[str], env: Mapping[str, str], log: Path) -> None:
        self.label = label
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=dict(env))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        """``kill -9``: no cleanup of any kind."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def sigterm(self, grace: float = 10.0) -> int:
        """SIGTERM, wait up to ``grace``, SIGKILL if it did not exit; returns the exit status."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        return self.popen.returncode


class Controller:
    """``python -m corral.controller`` on a SQLite file; restartable on the same database and port."""

    def __init__(self, cluster: Cluster, flags: Sequence[str]) -> None:
        self.cluster = cluster
        self.flags = list(flags)
        self.db = cluster.directory / "controller.db"
        self.address_file = cluster.directory / "controller.addr"
        self.address = ""
        self.process: _Process | None = None
        self.starts = 0
        self._api: Api | None = None

    @property
    def api(self) -> Api:
        if self._api is None:
            self._api = Api(self.address)
        return self._api

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, flags: Sequence[str] | None = None) -> str:
        """Start (or start again) and wait until it serves; returns host:port.

        A restart listens on the port of the first start, so agents that are still running find
        it again at the address they were given.
        """
        assert self.process is None or not self.process.alive(), "the controller is already running"
        if flags is not None:
            self.flags = list(flags)
        listen = self.address or "127.0.0.1:0"
        self.address_file.unlink(missing_ok=True)
        self.starts += 1
        argv = [
            sys.executable,
            "-m",
            "corral.controller",
            "--listen",
            listen,
            "--db",
            str(self.db),
            "--address-file",
            str(self.address_file),
            *self.flags,
        ]
        log = self.cluster.directory / f"controller-{self.starts}.log"
        self.process = process = _Process(f"controller#{self.starts}", argv, self.cluster.env, log)
        self.cluster.processes.append(process)
        try:
            address = wait_for_address(self.address_file, exited=process.popen.poll, timeout=START_TIMEOUT_S)
        except (ControllerExited, AddressTimeout) as exc:
            raise RuntimeError(f"{exc}:\n{log.read_text()}") from None
        assert not self.address or address == self.address, f"restarted on {address}, not {self.address}"
        self.address = address
        return address

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill9()
        self.close()  # a fresh channel after the restart: no reconnect backoff to sit out

    def sigterm(self) -> int:
        assert self.process is not None
        code = self.process.sigterm()
        self.close()
        return code

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None


class Agent:
    """``python -m corral.agent`` with its own work dir."""

    def __init__(self, cluster: Cluster, name: str, slots: int, flags: Sequence[str]) -> None:
        self.cluster = cluster
        self.name = name
        self.work_dir = cluster.directory / f"work-{name}"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.starts = 0
        argv = [
            sys.executable,
            "-m",
            "corral.agent",
            "--controller",
            cluster.controller.address,
            "--name",
            name,
            "--slots",
            str(slots),
            "--work-dir",
            str(self.work_dir),
            "--kill-grace",
            "1",
            "--python-path",
            str(TASKS_DIR),
            *flags,
        ]
        self.argv = argv
        self.process = self._spawn()

    def _spawn(self) -> _Process:
        self.starts += 1
        log = self.cluster.directory / f"agent-{self.name}-{self.starts}.log"
        process = _Process(f"agent {self.name}#{self.starts}", self.argv, self.cluster.env, log)
        self.cluster.processes.append(process)
        return process

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill9(self) -> None:
        self.process.kill9()

    def sigterm(self) -> int:
        return self.process.sigterm()

    def restart(self) -> None:
        assert not self.process.alive(), "the agent is still running"
        self.process = self._spawn()


class Cluster:
    """The processes of one test: a controller, its agents, and the teardown that removes them all."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.run_id = uuid.uuid4().hex
        env = dict(os.environ)
        env.pop("CORRAL_ADDRESS", None)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TASKS_DIR), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env[MARK] = self.run_id
        self.env = env
        self.processes: list[_Process] = []
        self._controller: Controller | None = None
        self.agents: dict[str, Agent] = {}

    @property
    def controller(self) -> Controller:
        assert self._controller is not None, "start the controller first"
        return self._controller

    @property
    def api(self) -> Api:
        return self.controller.api

    def start_controller(self, *flags: str) -> Controller:
        assert self._controller is None
        self._controller = Controller(self, flags)
        self._controller.start()
        return self._controller

    def start_agent(self, name: str, *, slots: int = 2, flags: Sequence[str] = ()) -> Agent:
        agent = Agent(self, name, slots, flags)
        self.agents[name] = agent
        return agent

    def start(
        self, agents: Mapping[str, int], controller_flags: Sequence[str] = (), agent_flags: Sequence[str] = ()
    ) -> Api:
        """A controller and agents (name -> slots), all connected; returns the API."""
        self.start_controller(*controller_flags)
        for name, slots in agents.items():
            self.start_agent(name, slots=slots, flags=agent_flags)
        self.api.wait_agents(list(agents))
        return self.api

    # --- teardown -------------------------------------------------------------------------------

    def marked(self) -> list[psutil.Process]:
        """Every live process carrying this test's environment marker."""
        found = []
        me = os.getpid()
        for proc in psutil.process_iter():
            try:
                if proc.pid == me or proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                if proc.environ().get(MARK) == self.run_id:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def shutdown(self) -> list[str]:
        """Stop agents (SIGTERM), then the controller, then kill every straggler; returns what was left."""
        for process in reversed(self.processes):
            if process.label.startswith("agent") and process.alive():
                process.sigterm(grace=5)
        for process in self.processes:
            if process.alive():
                process.sigterm(grace=5)
        if self._controller is not None:
            self._controller.close()
        leftovers = [f"{p.pid} {p.name()}" for p in self.marked()]
        for proc in self.marked():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(self.marked(), timeout=5)
        return leftovers

    def logs(self) -> str:
        parts = []
        for path in sorted(self.directory.glob("*.log")):
            parts.append(f"----- {path.name} -----\n{path.read_text(errors='replace')[-20_000:]}")
        return "\n".join(parts)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report: pytest.TestReport = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """An empty cluster in ``tmp_path``; everything it started is gone after the test."""
    cluster = Cluster(tmp_path)
    try:
        yield cluster
    finally:
        leftovers = cluster.shutdown()
        failed = any(
            getattr(getattr(request.node, f"report_{when}", None), "failed", False) for when in ("setup", "call")
        )
        if failed:
            print(cluster.logs())
        assert not cluster.marked(), "processes survived the teardown"
        # Daemons must clean up after themselves on SIGTERM; orphans of a kill -9 are expected.
        daemons_left = [p for p in cluster.processes if p.alive()]
        assert not daemons_left, f"daemons still running: {[p.label for p in daemons_left]}"
        if leftovers:
            print(f"killed {len(leftovers)} leftover process(es): {json.dumps(leftovers)}")
