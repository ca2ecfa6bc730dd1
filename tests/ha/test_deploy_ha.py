"""The HA deployment files: three replicas ready only on the leader, and compose with PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def test_the_statefulset_runs_three_controllers_ready_only_on_the_leader() -> None:
    objects = documents(DEPLOY / "k8s" / "ha" / "controller-ha.yaml")
    (sts,) = [o for o in objects if o["kind"] == "StatefulSet"]
    assert sts["spec"]["replicas"] == 3
    assert "volumeClaimTemplates" not in sts["spec"], "the state is in PostgreSQL"
    container = sts["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--store") + 1] == "$(CORRAL_STORE)"
    assert "$(POD_NAME)" in args[args.index("--advertise") + 1]
    health_port = int(args[args.index("--health-listen") + 1].rsplit(":", 1)[1])
    # Ready = SERVING, which only the leader is; alive = the port answers (a standby is healthy).
    assert container["readinessProbe"]["grpc"] == {"port": health_port, "service": "corral.v1.Orchestrator"}
    assert "grpc" not in container["livenessProbe"]
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["CORRAL_STORE"]["valueFrom"], "the database URL holds a password"
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    assert services["corral-controller"]["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    assert services["corral-controller-headless"]["spec"]["publishNotReadyAddresses"] is True
    (kustomization,) = documents(DEPLOY / "k8s" / "ha" / "kustomization.yaml")
    assert kustomization["resources"] == ["controller-ha.yaml"]


def test_compose_runs_three_controllers_on_postgres_and_agents_that_follow() -> None:
    (compose,) = documents(DEPLOY / "compose-ha.yaml")
    services = compose["services"]
    controllers = {name: s for name, s in services.items() if name.startswith("controller-")}
    assert len(controllers) == 3
    addresses = []
    for name, service in controllers.items():
        command = service["command"]
        assert command[command.index("--store") + 1].startswith("postgresql://")
        assert command[command.index("--advertise") + 1] == f"{name}:7070"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        addresses.append(f"{name}:7070")
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    agents = [s for name, s in services.items() if name.startswith("agent-")]
    assert len(agents) == 2
    for agent in agents:
        assert agent["command"][agent["command"].index("--controller") + 1] == ",".join(addresses)
