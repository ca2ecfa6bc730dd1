"""Issue 12: a rolling upgrade keeps N-1 peers working and refuses older ones (real processes).

The same code run as other releases (tests/versioned.py sets the protocol number before the daemon
starts): a protocol-12 controller and agent run a task; the controller is replaced by a protocol-13
one on the same store and port (the upgrade of the controllers); the 12 agent, now N-1, re-attaches,
and its running attempt completes once; a protocol-11 agent (N-2) is refused with a message naming
both versions; the agent is then upgraded (drained, started as 13) and runs the next workflow.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from corral.controller.address_file import wait_for_address
from corral.controller.sdk import SyncClient, Workflow
from corral.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tests.procs import _child_env, start_agent, stop

pytestmark = pytest.mark.e2e

VERSIONED = str(Path(__file__).resolve().parents[1] / "versioned.py")
REPO = str(Path(__file__).resolve().parents[2])


def _spawn(directory: Path, log_name: str, version: int, module: str, *args: str) -> subprocess.Popen[bytes]:
    with (directory / log_name).open("ab") as log:
        return subprocess.Popen(
            [sys.executable, VERSIONED, str(version), module, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_child_env(),
        )


def _controller(directory: Path, version: int, port: int) -> subprocess.Popen[bytes]:
    address_file = directory / "addr"
    address_file.unlink(missing_ok=True)
    args = ["--listen", f"127.0.0.1:{port}", "--db", str(directory / "c.db"), "--address-file", str(address_file)]
    proc = _spawn(directory, "controller.log", version, "corral.controller", *args)
    wait_for_address(address_file, exited=proc.poll)
    return proc


def _agent(directory: Path, version: int, address: str, name: str) -> subprocess.Popen[bytes]:
    work = directory / f"work-{name}"
    work.mkdir(parents=True, exist_ok=True)
    args = ["--controller", address, "--name", name, "--slots", "1", "--work-dir", str(work), "--python-path", REPO]
    return _spawn(directory, f"agent-{name}.log", version, "corral.agent", *args)


def _until(condition: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _connected(address: str, name: str) -> bool:
    with SyncClient(address) as client:
        return any(a.name == name and a.state == "connected" for a in client.list_agents())


def test_a_rolling_upgrade_keeps_n_minus_1_and_refuses_older(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"127.0.0.1:{port}"
    marker = tmp_path / "runs"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(controller := _controller(tmp_path, 12, port))
        procs.append(agent12 := start_agent(tmp_path, address, "a12", slots=1))  # this release: 12
        _until(lambda: _connected(address, "a12"), "the agent")
        wf = Workflow("upgraded")
        wf.shell("slow", shell=f"echo run >> {marker}; sleep 3; echo '{{\"ok\": 1}}'")
        with SyncClient(address) as client:
            workflow_id = client.submit(wf).workflow_id
            _until(lambda: client.status(workflow_id).tasks[0].state == "running", "the task to run")

        # 1. The controllers: stop the 12 one, start a 13 one on the same store and port.
        stop(controller)
        procs.append(_controller(tmp_path, 13, port))
        with SyncClient(address) as client:  # this SDK speaks 12: N-1 for the new controller
            result = client.wait(workflow_id, timeout=60)
            assert result.state == "completed" and result.results == {"slow": {"ok": 1}}
            assert _connected(address, "a12")  # re-attached as an N-1 agent
        assert marker.read_text().splitlines() == ["run"]  # re-adopted, not re-run

        # 2. An agent two protocols behind is refused, with both versions named.
        procs.append(agent11 := _agent(tmp_path, 11, address, "a11"))
        log11 = tmp_path / "agent-a11.log"
        _until(lambda: "FAILED_PRECONDITION" in log11.read_text(errors="replace"), "the refusal of the 11 agent")
        assert "agent speaks protocol 11, but this controller speaks protocol 13 and accepts 12" in log11.read_text()
        with SyncClient(address) as client:
            assert all(a.name != "a11" for a in client.list_agents())
        stop(agent11)
        # ... and so is a client two protocols behind.
        with grpc.insecure_channel(address) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(), metadata=(("corral-protocol", "11"),))
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        # 3. The agents: drain the 12 one, start it as 13; work goes on.
        stop(agent12)
        procs.append(_agent(tmp_path, 13, address, "a13"))
        _until(lambda: _connected(address, "a13"), "the upgraded agent")
        after = Workflow("after-upgrade")
        after.shell("quick", shell="echo '{\"ok\": 2}'")
        with SyncClient(address) as client:
            assert client.execute(after, timeout=60).results == {"quick": {"ok": 2}}
    finally:
        for proc in reversed(procs):
            stop(proc)
