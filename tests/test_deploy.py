"""The deployment files in deploy/ parse and state what the docs promise.

Kubernetes manifests and compose.yaml are checked structurally (no cluster or Docker engine is
needed); the compose health probe is run against a real gRPC health server; the systemd units are
parsed and, when ``systemd-analyze`` exists, verified by systemd itself.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
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
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        # The kubelet's gRPC probes cannot speak TLS: they use the plaintext health-only port.
        assert container[probe]["grpc"]["port"] == ports["health"] == 7072, f"{probe} is not on the health port"


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
    assert {p["port"] for p in front["spec"]["ports"]} == {7070, 7071}
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
    # TLS: the controller serves the mounted certificates, the agent verifies it with the CA alone.
    command = controller["command"]
    assert any(v.endswith(":/etc/corral/tls:ro") for v in controller["volumes"])
    for flag, name in (
        ("--tls-cert", "controller.pem"),
        ("--tls-key", "controller-key.pem"),
        ("--client-ca", "ca.pem"),
    ):
        assert command[command.index(flag) + 1] == f"/etc/corral/tls/{name}"
    assert agent["command"][agent["command"].index("--ca") + 1] == "/etc/corral/tls/ca.pem"
    assert agent["volumes"] == ["./tls/ca.pem:/etc/corral/tls/ca.pem:ro"], "agents must not see the controller's key"
    assert "CORRAL_JOIN_TOKEN" in agent["environment"]


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
    assert "127.0.0.1:7072" in test[3], "the probe does not use the plaintext health port"
    probe = test[3].replace("127.0.0.1:7072", f"127.0.0.1:{port}")

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
    assert '"--tls-cert", "/etc/corral/tls/controller.pem"' in text, "the default command must serve TLS"
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


def _generated_secrets() -> dict[str, list[str]]:
    (kustomization,) = _documents(DEPLOY / "k8s" / "kustomization.yaml")
    assert "networkpolicy.yaml" in kustomization["resources"]
    return {g["name"]: [Path(f).name for f in g["files"]] for g in kustomization["secretGenerator"]}


def _secret_mount(pod: dict[str, Any], container: dict[str, Any], secret: str) -> str:
    volume = next(v["name"] for v in pod["volumes"] if v.get("secret", {}).get("secretName") == secret)
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume)
    assert mount.get("readOnly") is True
    return str(mount["mountPath"])


def test_k8s_tls_secrets_are_mounted_and_the_flags_point_into_them() -> None:
    from corral.agent.cli import build_parser
    from corral.controller.daemon import parse_args

    secrets = _generated_secrets()
    assert sorted(secrets["corral-controller-tls"]) == ["ca.pem", "controller-key.pem", "controller.pem"]
    assert secrets["corral-ca"] == ["ca.pem"], "agents get the CA, never the controller's key"
    gitignore = (DEPLOY / "k8s" / "tls" / ".gitignore").read_text(encoding="utf-8")
    assert "*" in gitignore.split(), "generated keys must stay out of git"

    pod = _one("StatefulSet")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    directory = _secret_mount(pod, container, "corral-controller-tls")
    args = parse_args(container["args"][1:])  # the daemon accepts every flag
    assert str(args.tls_cert) == f"{directory}/controller.pem"
    assert str(args.tls_key) == f"{directory}/controller-key.pem"
    assert str(args.client_ca) == f"{directory}/ca.pem"
    assert args.mtls_listen == "0.0.0.0:7071" and args.health_listen == "0.0.0.0:7072"
    assert not args.insecure

    agent_pod = _one("DaemonSet")["spec"]["template"]["spec"]
    agent = agent_pod["containers"][0]
    ca_dir = _secret_mount(agent_pod, agent, "corral-ca")
    agent_args = build_parser().parse_args(agent["args"][1:])
    assert str(agent_args.ca) == f"{ca_dir}/ca.pem"
    join = next(e for e in agent["env"] if e["name"] == "CORRAL_JOIN_TOKEN")
    assert join["valueFrom"]["secretKeyRef"] == {"name": "corral-agent-join", "key": "token"}


def test_k8s_network_policies_admit_only_the_grpc_ports() -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in _k8s_objects() if p.get("kind") == "NetworkPolicy"}
    controller_pod = _one("StatefulSet")["spec"]["template"]
    container = controller_pod["spec"]["containers"][0]
    grpc_ports = {p["containerPort"] for p in container["ports"] if p["name"] in ("grpc", "grpc-mtls")}

    controller = policies["corral-controller"]
    assert controller["podSelector"]["matchLabels"].items() <= controller_pod["metadata"]["labels"].items()
    assert controller["policyTypes"] == ["Ingress"]
    (rule,) = controller["ingress"]
    assert "from" not in rule, "agents and clients may come from anywhere"
    assert {p["port"] for p in rule["ports"]} == grpc_ports == {7070, 7071}

    agent_pod = _one("DaemonSet")["spec"]["template"]
    agent = policies["corral-agent"]
    assert agent["podSelector"]["matchLabels"].items() <= agent_pod["metadata"]["labels"].items()
    assert agent["policyTypes"] == ["Ingress"] and agent["ingress"] == [], "agents serve nothing"


def test_systemd_units_carry_the_tls_paths() -> None:
    from corral.controller.daemon import parse_args

    controller = _unit(UNITS / "corral-controller.service")["Service"]
    defaults = dict(value.split("=", 1) for value in controller["Environment"])
    command = controller["ExecStart"][-1].split()[2:]  # after ".../corral controller"
    expanded = [
        re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], word)
        for word in command
        if word != "$CORRAL_CONTROLLER_ARGS"
    ]
    args = parse_args(expanded)
    assert str(args.tls_cert) == "/etc/corral/tls/controller.pem"
    assert str(args.tls_key) == "/etc/corral/tls/controller-key.pem"
    assert str(args.client_ca) == "/etc/corral/tls/ca.pem"
    assert controller["ExecReload"] == ["/bin/kill -HUP $MAINPID"], "reload must be SIGHUP (re-read the TLS files)"

    agent = _unit(UNITS / "corral-agent.service")["Service"]
    env = dict(value.split("=", 1) for value in agent["Environment"])
    assert env["CORRAL_CA"] == "/etc/corral/tls/ca.pem"
    assert env["CORRAL_CERT"] == "/etc/corral/tls/agent.pem" and env["CORRAL_KEY"] == "/etc/corral/tls/agent-key.pem"
    assert env["CORRAL_CONTROLLER"].endswith(":7071"), "certificate holders use the mutual-TLS port"
    for name in ("controller.env", "agent.env"):
        assert "/etc/corral/tls/" in (UNITS / name).read_text(encoding="utf-8")


def test_agent_unit_lets_supervisors_outlive_an_agent_restart() -> None:
    text = (UNITS / "corral-agent.service").read_text(encoding="utf-8")
    service = _unit(UNITS / "corral-agent.service")["Service"]
    # Only the agent is signalled: its attempts' supervisors stay alive across a restart and are
    # re-adopted; mixed or control-group would SIGKILL every running task with it.
    assert service["KillMode"] == ["process"]
    assert service["Restart"] == ["on-failure"]
    assert service.get("Delegate") == ["yes"], "supervisors need the delegated cgroup subtree"
    assert service.get("ProtectControlGroups", ["no"]) != ["yes"], "a read-only cgroupfs defeats Delegate="
    comment = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    assert "supervisor" in comment and "re-adopts" in comment, "KillMode=process must say why"
    controller = _unit(UNITS / "corral-controller.service")["Service"]
    assert controller.get("KillMode", ["control-group"]) != ["process"], "the controller leaves nothing behind"


_FAKE_CORRAL = """#!/bin/sh
n=$(cat "$STATE/count" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$STATE/count.tmp"
mv "$STATE/count.tmp" "$STATE/count"
echo "$@" > "$STATE/args"
read up _ < /proc/uptime; echo "$up" >> "$STATE/starts"
if [ "$n" -eq 1 ]; then
  # A supervisor: detached from the agent, it must survive the agent's crash and restart.
  setsid sleep 120 </dev/null >/dev/null 2>&1 &
  echo $! > "$STATE/supervisor"
  read up _ < /proc/uptime; echo "$up" > "$STATE/crashed"
  exit 3
fi
trap 'echo drained > "$STATE/drained"; exit 0' TERM
while :; do sleep 0.1; done
"""


def _wait_for(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_k8s_agent_keeper_restarts_the_agent_in_place_and_forwards_sigterm(tmp_path: Path) -> None:
    agent = _one("DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    shell, flag, script, name = agent["command"]
    assert (shell, flag, name) == ("/bin/sh", "-c", "corral-keeper")
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    fake = bin_dir / "corral"
    fake.write_text(_FAKE_CORRAL, encoding="utf-8")
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STATE": str(state)}
    keeper = subprocess.Popen([shell, flag, script, name, *agent["args"]], env=env, start_new_session=True)
    supervisor = 0
    try:
        count = state / "count"
        _wait_for(lambda: count.exists() and count.read_text().strip() == "2", "the keeper to restart the agent")
        # Both times from the fake agent itself (CLOCK_BOOTTIME, 10 ms steps): load cannot skew them.
        restarted = float((state / "starts").read_text().split()[1])
        assert restarted - float((state / "crashed").read_text()) >= 1.9, "restarted without the 2 s pause"
        assert (state / "args").read_text().split() == agent["args"], "the agent lost its flags"
        supervisor = int((state / "supervisor").read_text())
        os.kill(supervisor, 0)  # still alive: the restart left it alone
        keeper.send_signal(signal.SIGTERM)
        assert keeper.wait(timeout=20) == 0
        assert (state / "drained").exists(), "SIGTERM did not reach the agent"
        assert count.read_text().strip() == "2", "the keeper restarted a draining agent"
    finally:
        if keeper.poll() is None:
            os.killpg(keeper.pid, signal.SIGKILL)
            keeper.wait(timeout=10)
        if supervisor:
            os.kill(supervisor, signal.SIGKILL)
