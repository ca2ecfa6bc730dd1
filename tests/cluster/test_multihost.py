"""A controller and two agents on three "machines" (network namespaces) joined by a bridge.

The controller serves TLS on its namespace address (the refusal of plaintext off loopback holds
here too); each agent reaches its mutual-TLS port over the veth/bridge path with a certificate
that grants it a ``host=...`` label. The tests check placement by constraint across hosts, results
flowing between hosts, and that a partitioned agent's running task moves to the other agent once
its lease expires, without spending a retry.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from corral.controller.address_file import AddressTimeout, ControllerExited, wait_for_address
from corral.controller.certs import agent_grant, client_grant, init_dir, issue_identity
from corral.controller.rpc.wire_spec import spec_to_proto
from corral.controller.spec import parse_workflow
from corral.v1 import agent_pb2, agent_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc, types_pb2
from tests.cluster.netns import Host, NetnsCluster, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
RPC_TIMEOUT_S = 30.0
# Short leases so that a partition is noticed within seconds (the defaults are 2 s / 15 s / 30 s).
FAST_LEASES = ["--lease", "3", "--heartbeat-interval", "0.5", "--adopt-grace", "2"]
# A shell task whose result is its inputs: the last stdout line, when JSON, is the result.
ECHO_INPUTS = "printf '%s\\n' \"$CORRAL_INPUTS\""


@dataclass
class Deployment:
    """The running cluster: namespaces, the controller address and typed-enough stubs."""

    net: NetnsCluster
    address: str
    orchestrator: Any
    cluster: Any
    agent_ids: dict[str, str]  # host label -> agent id
    hosts: dict[str, Host]  # host label -> namespace

    def status(self, workflow_id: str) -> types_pb2.WorkflowStatus:
        request = orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id, include_tasks=True)
        response = self.orchestrator.GetWorkflowStatus(request, timeout=RPC_TIMEOUT_S)
        status: types_pb2.WorkflowStatus = response.status
        return status

    def task(self, workflow_id: str, name: str) -> types_pb2.TaskStatus:
        return next(t for t in self.status(workflow_id).tasks if t.name == name)

    def submit(self, workflow: dict[str, Any]) -> str:
        request = orchestrator_pb2.SubmitWorkflowRequest(spec=spec_to_proto(parse_workflow(workflow)), start=True)
        return str(self.orchestrator.SubmitWorkflow(request, timeout=RPC_TIMEOUT_S).workflow_id)

    def wait(self, workflow_id: str, deadline_s: float = 150.0) -> types_pb2.WorkflowResult:
        request = orchestrator_pb2.ExecuteWorkflowRequest(workflow_id=workflow_id, wait=True, wait_timeout_s=deadline_s)
        response = self.orchestrator.ExecuteWorkflow(request, timeout=deadline_s + RPC_TIMEOUT_S)
        assert response.HasField("result"), f"workflow {workflow_id} did not finish within {deadline_s:g}s"
        result: types_pb2.WorkflowResult = response.result
        return result

    def connected(self) -> dict[str, str]:
        """Host label -> agent id of the agents currently connected."""
        response = self.cluster.ListAgents(agent_pb2.ListAgentsRequest(), timeout=RPC_TIMEOUT_S)
        return {
            agent.labels.get("host", ""): agent.agent_id
            for agent in response.agents
            if agent.state == types_pb2.AGENT_STATE_CONNECTED
        }


def _log_tails(tmp_path: Path) -> str:
    parts = []
    for log in sorted((tmp_path / "logs").glob("*.log")):
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        parts.append(f"--- {log.name}\n" + "\n".join(lines))
    return "\n".join(parts)


@pytest.fixture
def deployment(netns3: NetnsCluster, tmp_path: Path) -> Iterator[Deployment]:
    """Controller in ns0, agents labelled host=h1 in ns1 and host=h2 in ns2, all connected."""
    ns0, ns1, ns2 = netns3.hosts
    # A real cluster off loopback: the controller serves TLS, agents and this test present
    # certificates on the mutual-TLS port, and the agents' labels come from their certificates.
    pki = tmp_path / "pki"
    init_dir(pki, [ns0.ip])
    issue_identity(pki, "tester", client_grant("admin"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    address_file = tmp_path / "controller.addr"
    controller = netns3.spawn(
        ns0,
        [
            sys.executable,
            "-m",
            "corral.controller",
            "--listen",
            f"{ns0.ip}:0",
            "--db",
            str(tmp_path / "corral.db"),
            "--address-file",
            str(address_file),
            "--tls-cert",
            str(pki / "controller.pem"),
            "--tls-key",
            str(pki / "controller-key.pem"),
            "--client-ca",
            str(pki / "ca.pem"),
            "--mtls-listen",
            f"{ns0.ip}:0",
            "--mtls-address-file",
            str(tmp_path / "controller.mtls.addr"),
            *FAST_LEASES,
        ],
        tmp_path / "logs" / "controller.log",
        env=env,
        cwd=REPO,
    )
    try:
        try:
            wait_for_address(address_file, exited=controller.poll, timeout=60)
            address = wait_for_address(tmp_path / "controller.mtls.addr", exited=controller.poll, timeout=5)
        except (ControllerExited, AddressTimeout) as exc:
            raise AssertionError(f"{exc}:\n{_log_tails(tmp_path)}") from None
        hosts = {"h1": ns1, "h2": ns2}
        for label, host in hosts.items():
            issue_identity(pki, f"agent-{label}", agent_grant({"host": label}, ["shell", "python"]))
            netns3.spawn(
                host,
                [
                    sys.executable,
                    "-m",
                    "corral.agent",
                    "--controller",
                    address,
                    "--name",
                    f"agent-{label}",
                    "--slots",
                    "2",
                    "--types",
                    "shell,python",
                    "--ca",
                    str(pki / "ca.pem"),
                    "--cert",
                    str(pki / f"agent-{label}.pem"),
                    "--key",
                    str(pki / f"agent-{label}-key.pem"),
                    "--work-dir",
                    str(tmp_path / f"work-{label}"),
                    "--python-path",
                    str(REPO),
                    "--python-allow",
                    "tests.cluster",
                ],
                tmp_path / "logs" / f"agent-{label}.log",
                env=env,
                cwd=REPO,
            )
        # The test process sits in the root namespace and reaches ns0 over the bridge.
        credentials = grpc.ssl_channel_credentials(
            (pki / "ca.pem").read_bytes(), (pki / "tester-key.pem").read_bytes(), (pki / "tester.pem").read_bytes()
        )
        with grpc.secure_channel(address, credentials, options=[("grpc.enable_http_proxy", 0)]) as channel:
            deployment = Deployment(
                net=netns3,
                address=address,
                orchestrator=orchestrator_pb2_grpc.OrchestratorStub(channel),
                cluster=agent_pb2_grpc.ClusterStub(channel),
                agent_ids={},
                hosts=hosts,
            )
            wait_until(lambda: {"h1", "h2"} <= deployment.connected().keys(), 60, "both agents to connect")
            deployment.agent_ids = deployment.connected()
            yield deployment
    finally:
        # Agents first, so that they drain against a live controller; the netns teardown kills leftovers.
        codes = [netns3.stop(proc) for proc in netns3.processes[1:]]
        codes.append(netns3.stop(controller))
        # Shown by pytest only when the test failed.
        print(f"exit codes (agents..., controller): {codes}\n{_log_tails(tmp_path)}", file=sys.stderr)


def _shell(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "agent_type": "shell", "payload": {"shell": script}, "timeout": 120, **extra}


def _json(result: types_pb2.WorkflowResult, name: str) -> Any:
    return json.loads(result.results_json[name])


def test_pinned_tasks_run_on_their_host_and_results_cross_hosts(deployment: Deployment) -> None:
    workflow = {
        "name": "multihost",
        "tasks": [
            _shell("seed-h1", """echo '{"value": 20, "made_on": "h1"}'""", constraints={"host": "h1"}),
            _shell(
                "relay-h2",
                'printf \'{"relayed_on": "h2", "got": %s}\\n\' "$CORRAL_INPUTS"',
                constraints={"host": "h2"},
                dependencies=["seed-h1"],
            ),
            _shell("free-shell", """echo '{"free": "shell"}'"""),
            {
                "name": "free-python",
                "agent_type": "python",
                "payload": {"function": "tests.cluster.tasks:constant", "args": [{"free": "python"}]},
                "timeout": 120,
            },
            {
                "name": "join",
                "agent_type": "python",
                "payload": {"function": "tests.cluster.tasks:gather"},
                "dependencies": ["relay-h2", "free-shell", "free-python"],
                "timeout": 120,
            },
            _shell("back-h1", ECHO_INPUTS, constraints={"host": "h1"}, dependencies=["join"]),
        ],
    }
    result = deployment.wait(deployment.submit(workflow))
    assert result.state == types_pb2.WORKFLOW_STATE_COMPLETED, result.error

    ran_on = {task.name: task.agent_id for task in result.tasks}
    assert ran_on["seed-h1"] == deployment.agent_ids["h1"]
    assert ran_on["relay-h2"] == deployment.agent_ids["h2"]
    assert ran_on["back-h1"] == deployment.agent_ids["h1"]
    assert ran_on["free-shell"] in deployment.agent_ids.values()
    assert ran_on["free-python"] in deployment.agent_ids.values()

    seed = {"value": 20, "made_on": "h1"}
    relay = {"relayed_on": "h2", "got": {"seed-h1": seed}}
    joined = {"relay-h2": relay, "free-shell": {"free": "shell"}, "free-python": {"free": "python"}}
    assert _json(result, "relay-h2") == relay, "h1's result did not reach the task on h2"
    assert _json(result, "join") == joined
    assert _json(result, "back-h1") == {"join": joined}, "the joined result did not come back to h1"


@pytest.mark.chaos  # about a minute: make chaos (the partition scenarios of tests/chaos cover it too)
def test_partitioned_agent_loses_its_task_to_the_other_host(deployment: Deployment) -> None:
    workflow = {
        "name": "partition",
        "tasks": [
            # No retries: the move to the other agent must not spend one (a lost attempt is free).
            _shell("long", """sleep 10; echo '{"long": "done"}'""", retries=0),
            _shell("after", ECHO_INPUTS, dependencies=["long"], retries=0),
        ],
    }
    workflow_id = deployment.submit(workflow)
    wait_until(
        lambda: deployment.task(workflow_id, "long").state == types_pb2.TASK_STATE_RUNNING,
        60,
        "the long task to start",
    )
    first_agent = deployment.task(workflow_id, "long").agent_id
    victim = next(label for label, agent in deployment.agent_ids.items() if agent == first_agent)
    survivor = "h2" if victim == "h1" else "h1"
    controller_ip = deployment.net.hosts[0].ip

    deployment.net.partition(deployment.hosts[victim], controller_ip)
    try:
        # Longer than the 3 s lease: hold the partition until the task has moved.
        wait_until(
            lambda: deployment.task(workflow_id, "long").agent_id == deployment.agent_ids[survivor],
            90,
            f"the task to move from the partitioned {victim} to {survivor}",
        )
    finally:
        deployment.net.heal(deployment.hosts[victim])

    result = deployment.wait(workflow_id)
    assert result.state == types_pb2.WORKFLOW_STATE_COMPLETED, result.error
    long = next(task for task in result.tasks if task.name == "long")
    assert long.agent_id == deployment.agent_ids[survivor]
    assert long.attempts >= 2
    assert long.retries_used == 0
    assert _json(result, "after") == {"long": {"long": "done"}}
    # Healed, the victim comes back and can take work again.
    wait_until(lambda: victim in deployment.connected(), 90, f"{victim} to reconnect after the heal")
