"""The deployment files in deploy/ parse and state what the docs promise.

Kubernetes manifests and compose.yaml are checked structurally (no cluster or Docker engine is
needed); the compose health probe is run against a real gRPC health server; the systemd units are
parsed and, when ``systemd-analyze`` exists, verified by systemd itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
UNITS = DEPLOY / "systemd"
INSTALLED_CORRAL = "/opt/corral/bin/corral"


def _documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def _k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in sorted((DEPLOY / "k8s").glob("*.yaml")) for doc in _documents(path)]


def _one(kind: str) -> dict[str, Any]:
    found = [obj for obj in _k8s_objects() if obj.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yaml")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    assert _documents(path), f"{path} holds no document"


def test_controller_is_a_single_replica_statefulset_with_a_volume_claim() -> None:
    sts = _one("StatefulSet")
    spec = sts["spec"]
    assert spec["replicas"] == 1, "SQLite has one writer: never more than one controller"
    claims = {claim["metadata"]["name"] for claim in spec["volumeClaimTemplates"]}
    container = spec["template"]["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert claims & mounts.keys(), "the claimed volume is not mounted"
    db_dir = next(mounts[name] for name in claims if name in mounts)
    db = container["args"][container["args"].index("--db") + 1]
    assert db.startswith(db_dir + "/"), f"the database {db} is not on the persistent volume {db_dir}"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == 7070, f"{probe} is not a native gRPC probe on 7070"


def test_services_select_the_controller_and_the_daemonset_points_at_it() -> None:
    sts = _one("StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    services = [obj for obj in _k8s_objects() if obj.get("kind") == "Service"]
    selecting = [s for s in services if s["spec"]["selector"].items() <= pod_labels.items()]
    assert any(s["spec"].get("clusterIP") == "None" for s in selecting), "no headless service"
    assert sts["spec"]["serviceName"] in {s["metadata"]["name"] for s in selecting}
    front = next(s for s in selecting if s["spec"].get("clusterIP") != "None")

    daemonset = _one("DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[0] == "agent"
    target = args[args.index("--controller") + 1]
    assert target.split(".")[0] == front["metadata"]["name"]
    assert target.endswith(":7070")
    assert pod["terminationGracePeriodSeconds"] >= 40, "too short for the agent to drain"


def test_compose_has_a_health_checked_controller_and_a_scalable_agent() -> None:
    (compose,) = _documents(DEPLOY / "compose.yaml")
    services = compose["services"]
    controller, agent = services["controller"], services["agent"]
    assert "grpc_health" in "\n".join(controller["healthcheck"]["test"])
    assert any(volume.endswith(":/var/lib/corral") for volume in controller["volumes"])
    assert controller["volumes"][0].split(":")[0] in compose["volumes"], "the database volume is not named"
    # `--scale agent=N` needs no fixed container name and no published port.
    assert "container_name" not in agent
    assert "ports" not in agent
    assert agent["depends_on"]["controller"]["condition"] == "service_healthy"
    assert "controller:7070" in agent["command"]


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(grace=None).wait()


def test_compose_health_probe_reports_the_orchestrator_service(
    health_server: tuple[int, health.HealthServicer],
) -> None:
    port, servicer = health_server
    (compose,) = _documents(DEPLOY / "compose.yaml")
    test = compose["services"]["controller"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    probe = test[3].replace("127.0.0.1:7070", f"127.0.0.1:{port}")

    def run() -> int:
        return subprocess.run([sys.executable, "-c", probe], capture_output=True, check=False, timeout=60).returncode

    servicer.set("corral.v1.Orchestrator", health_pb2.HealthCheckResponse.SERVING)
    assert run() == 0
    servicer.set("corral.v1.Orchestrator", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert run() == 1


def test_dockerfile_builds_one_image_for_both_roles() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert re.search(r'^ENTRYPOINT \["corral"\]$', text, re.M)
    assert re.search(r'^CMD \["controller"', text, re.M)
    assert re.search(r"^USER corral$", text, re.M)


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Parse a unit file keeping repeated keys (Environment=...), which configparser cannot."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} is outside any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not key=value"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.mark.parametrize(("role", "min_stop_s"), [("controller", 10), ("agent", 60)])
def test_systemd_units_have_the_required_settings(role: str, min_stop_s: int) -> None:
    unit = _unit(UNITS / f"corral-{role}.service")
    service = unit["Service"]

    def one(key: str) -> str:
        assert key in service, f"corral-{role}.service lacks {key}="
        return service[key][-1]

    assert one("ExecStart").startswith(f"{INSTALLED_CORRAL} {role} ")
    assert one("Restart") == "on-failure"
    assert one("KillSignal") == "SIGTERM"
    assert int(one("TimeoutStopSec").removesuffix("s")) >= min_stop_s
    assert one("StateDirectory") == "corral"
    assert one("EnvironmentFile").lstrip("-") == f"/etc/corral/{role}.env"
    assert one("User") == "corral"
    assert one("NoNewPrivileges") == "yes"
    assert one("ProtectSystem") == "strict"
    assert "/var/lib/corral" in one("ReadWritePaths").split()
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert (UNITS / f"{role}.env").exists(), "no example environment file"


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the units were only parsed (apt-get install systemd)")
    # verify insists that ExecStart's binary exists: point it at this environment's corral script.
    corral = Path(sys.executable).with_name("corral")
    executable = str(corral if corral.exists() else sys.executable)
    copies = []
    for unit in sorted(UNITS.glob("*.service")):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text(encoding="utf-8").replace(INSTALLED_CORRAL, executable), encoding="utf-8")
        copies.append(str(copy))
    done = subprocess.run([analyze, "verify", *copies], capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0 and "Failed to " in done.stderr and "bus" in done.stderr.lower():
        pytest.skip(f"systemd-analyze cannot run here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "corral" not in done.stderr, f"systemd-analyze warned:\n{done.stderr}"
