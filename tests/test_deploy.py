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


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        obj for obj in _k8s_objects() if obj.get("kind") == kind and (name is None or obj["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
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

    daemonset = _one("DaemonSet", "corral-agent")
    pod = daemonset["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[0] == "agent"
    target = args[args.index("--controller") + 1]
    assert target.split(".")[0] == front["metadata"]["name"]
    assert target.endswith(":7070")
    assert {p["port"] for p in front["spec"]["ports"]} == {7070, 7071, 7073}
    assert pod["terminationGracePeriodSeconds"] >= 40, "too short for the agent to drain"


def test_compose_has_a_health_checked_controller_and_a_scalable_agent() -> None:
    (compose,) = _documents(DEPLOY / "compose.yaml")
    services = compose["services"]
    controller = services["controller"]
    agents = {name: service for name, service in services.items() if name.startswith("agent-")}
    assert len(agents) >= 2
    for name, agent in agents.items():
        # Stable names: the same agent after a recreate, its joined credential on its own volume.
        assert agent["hostname"] == name
        assert agent["command"][agent["command"].index("--name") + 1] == name
        work = agent["command"][agent["command"].index("--work-dir") + 1]
        (volume,) = [v for v in agent["volumes"] if not v.startswith("./")]
        assert volume.split(":")[0] in compose["volumes"] and work.startswith(volume.split(":")[1])
        assert agent["environment"]["CORRAL_HEALTHCHECK"] == "none", "agents serve no health port"
    assert len({a["command"][a["command"].index("--name") + 1] for a in agents.values()}) == len(agents)
    agent = agents["agent-1"]
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
    ca_only = [v for v in agent["volumes"] if v.startswith("./")]
    assert ca_only == ["./tls/ca.pem:/etc/corral/tls/ca.pem:ro"], "agents must not see the controller's key"
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
    # A pinned base: a patch release and a Debian release, never a floating tag.
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}$", text, re.M)
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

    agent_pod = _one("DaemonSet", "corral-agent")["spec"]["template"]["spec"]
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
    grpc_ports = {p["containerPort"] for p in container["ports"] if p["name"] in ("grpc", "grpc-mtls", "http")}

    controller = policies["corral-controller"]
    assert controller["podSelector"]["matchLabels"].items() <= controller_pod["metadata"]["labels"].items()
    assert controller["policyTypes"] == ["Ingress"]
    (rule,) = controller["ingress"]
    assert "from" not in rule, "agents and clients may come from anywhere"
    assert {p["port"] for p in rule["ports"]} == grpc_ports == {7070, 7071, 7073}

    agent = policies["corral-agent"]
    (selector,) = agent["podSelector"]["matchExpressions"]
    for name in ("corral-agent", "corral-agent-gpu"):
        agent_pod = _one("DaemonSet", name)["spec"]["template"]
        assert selector["key"] == "app.kubernetes.io/name" and selector["operator"] == "In"
        assert agent_pod["metadata"]["labels"][selector["key"]] in selector["values"]
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
n=$(cat "$STATE/count" 2>/dev/null || echo 0); n=$((n + 1))
echo "$@" > "$STATE/args"
read up _ < /proc/uptime; echo "$up" >> "$STATE/starts"
# The count goes last: the test reads the other files as soon as it sees it.
echo $n > "$STATE/count.tmp"
mv "$STATE/count.tmp" "$STATE/count"
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
    agent = _one("DaemonSet", "corral-agent")["spec"]["template"]["spec"]["containers"][0]
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


# --- issue 11: image hygiene, HTTP port, GPUs, metrics, the agent image -------------------------------


def test_dockerignore_keeps_the_venv_and_secrets_out_but_not_what_the_image_copies() -> None:
    import fnmatch

    root = DEPLOY.parent
    patterns = [
        line.strip()
        for line in (root / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(
            fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(prefix, pattern.removeprefix("**/"))
            for pattern in patterns
            for prefix in prefixes
        )

    for path in (".venv/bin/python", ".git/HEAD", "corral.db", "deploy/tls/ca.pem", "controller/__pycache__/x.pyc"):
        assert ignored(path), f"{path} would be sent to the builder"
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", (DEPLOY / "Dockerfile").read_text(encoding="utf-8"), re.M)
    sources = [source for line in copied for source in line.split()]
    assert {"pyproject.toml", "README.md", "protos", "controller", "agent", "examples"} <= set(sources)
    for source in sources:
        assert not ignored(source), f"{source} is copied by the Dockerfile but .dockerignore drops it"


def test_dockerfile_health_check_probes_the_port_the_default_command_serves() -> None:
    from corral.controller.daemon import parse_args

    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    (check,) = re.findall(r"^HEALTHCHECK (.+?)CMD (\[[^\n]+\])$", text.replace("\\\n", " "), re.M | re.S)
    assert "--interval=" in check[0] and "--timeout=" in check[0]
    assert check[1] == '["python", "-m", "corral.controller.healthprobe"]'
    (default,) = re.findall(r"^ENV CORRAL_HEALTHCHECK=(\S+)$", text, re.M)
    (cmd,) = re.findall(r"^CMD (\[.+?\])$", text.replace("\\\n", " "), re.M | re.S)
    args = parse_args(yaml.safe_load(cmd)[1:])
    assert args.health_listen is not None
    assert default == f"grpc://127.0.0.1:{args.health_listen.rsplit(':', 1)[1]}"
    assert args.http == "0.0.0.0:7073" and "7073" in re.findall(r"^EXPOSE (.+)$", text, re.M)[0].split()


def _probe(setting: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CORRAL_HEALTHCHECK": setting}
    command = [sys.executable, "-m", "corral.controller.healthprobe"]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=60)


def test_health_probe_grpc_http_and_none(health_server: tuple[int, health.HealthServicer]) -> None:
    import http.server
    import threading

    from corral.controller.healthprobe import probe

    port, servicer = health_server
    servicer.set("corral.v1.Orchestrator", health_pb2.HealthCheckResponse.SERVING)
    assert _probe(f"grpc://127.0.0.1:{port}").returncode == 0  # as the HEALTHCHECK runs it
    servicer.set("corral.v1.Orchestrator", health_pb2.HealthCheckResponse.NOT_SERVING)
    failed = _probe(f"grpc://127.0.0.1:{port}")
    assert failed.returncode == 1 and "NOT_SERVING" in failed.stderr

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/readyz" else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert probe(f"{base}/readyz") is None
        assert probe(f"{base}/other") == f"GET {base}/other: HTTP 503"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert probe("none") is None
    assert _probe("ftp://x").returncode == 2


def test_http_port_is_served_and_published_in_compose_and_k8s() -> None:
    from corral.controller.daemon import parse_args

    (compose,) = _documents(DEPLOY / "compose.yaml")
    controller = compose["services"]["controller"]
    assert parse_args(controller["command"][1:]).http == "0.0.0.0:7073"
    assert "127.0.0.1:7073:7073" in controller["ports"], "HTTP is plain: loopback only"

    container = _one("StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert parse_args(container["args"][1:]).http == "0.0.0.0:7073"
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["http"] == 7073
    service = next(
        s for s in _k8s_objects() if s.get("kind") == "Service" and s["metadata"]["name"] == "corral-controller"
    )
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}["http"] == "http"


def test_gpu_agents_request_gpus_and_share_the_agent_pod() -> None:
    from corral.agent.cli import build_parser

    cpu = _one("DaemonSet", "corral-agent")["spec"]["template"]["spec"]
    gpu = _one("DaemonSet", "corral-agent-gpu")["spec"]["template"]["spec"]
    assert "agent-gpu.yaml" in _documents(DEPLOY / "k8s" / "kustomization.yaml")[0]["resources"]
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["tolerations"]
    (term,) = cpu["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "nvidia.com/gpu.present", "operator": "NotIn", "values": ["true"]} in term["matchExpressions"]
    cpu_agent, gpu_agent = cpu["containers"][0], gpu["containers"][0]
    assert int(gpu_agent["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert "nvidia.com/gpu" not in cpu_agent["resources"].get("limits", {})
    # The same keeper and flags (no drift between the two), plus the gpu label; a stable name.
    assert gpu_agent["command"] == cpu_agent["command"]
    extra = list(gpu_agent["args"])
    at = extra.index("gpu=nvidia")
    assert extra[at - 1] == "--label" and extra[: at - 1] + extra[at + 1 :] == cpu_agent["args"]
    for agent in (cpu_agent, gpu_agent):
        args = build_parser().parse_args(agent["args"][1:])
        assert args.name == "$(NODE_NAME)", "agents are named after their node: stable across pod restarts"
    assert gpu["terminationGracePeriodSeconds"] == cpu["terminationGracePeriodSeconds"]


def test_servicemonitor_scrapes_the_controller_http_port() -> None:
    (monitor,) = _documents(DEPLOY / "k8s" / "monitoring" / "servicemonitor.yaml")
    assert monitor["kind"] == "ServiceMonitor"
    service = next(
        s for s in _k8s_objects() if s.get("kind") == "Service" and s["metadata"]["name"] == "corral-controller"
    )
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_agent_image_recipe_builds_on_corral_and_its_example_project_works(tmp_path: Path) -> None:
    from corral.agent.cli import build_parser

    text = (DEPLOY / "agent-image" / "Dockerfile").read_text(encoding="utf-8")
    assert re.findall(r"^ARG CORRAL_IMAGE=(\S+)$", text, re.M) == ["corral:latest"]
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.M)
    assert stages == [("${CORRAL_IMAGE}", "build"), ("${CORRAL_IMAGE}", "")], "multi-stage, both FROM corral"
    final = text[text.rindex("\nFROM ") :]
    assert "--no-index" in final and "from=build" in final, "the final stage installs only the built wheels"
    assert re.findall(r"^USER (\S+)$", final, re.M)[-1] == "corral"
    (cmd,) = re.findall(r"^CMD (\[.+?\])$", final.replace("\\\n", " "), re.M | re.S)
    args = build_parser().parse_args(yaml.safe_load(cmd)[1:])
    assert "mytasks" in args.python_allow
    # The example project is a real pip-installable project whose task function runs.
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), "."],
        cwd=DEPLOY / "agent-image" / "example",
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("mytasks-*.whl")
    code = "import mytasks, json; print(json.dumps(mytasks.word_count(text='a b c')))"
    ran = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(wheel)}, capture_output=True, text=True
    )
    assert ran.returncode == 0 and ran.stdout.strip() == '{"words": 3}', ran.stderr
