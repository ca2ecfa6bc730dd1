"""TLS and mutual TLS with real certificates, a real controller, real agents and the real CLI.

The controller serves server TLS on its main port and mutual TLS (client certificate required) on a
second port: gRPC Python cannot make client certificates optional on one port (see
``corral.controller.rpc.tls``). Agents with certificates, and clients with certificates, use the
mutual-TLS port.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from corral.controller.certs import (
    agent_grant,
    cert_pem,
    client_grant,
    init_dir,
    issue_identity,
    key_pem,
    load_ca,
    make_server_cert,
)
from corral.controller.sdk import SyncClient
from corral.controller.sdk.errors import UnavailableError
from corral.v1 import agent_pb2, agent_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc, types_pb2
from tests.procs import corral, require_server, start_agent, start_controller, stop

pytestmark = pytest.mark.e2e

WAIT_S = 30.0  # bounded waits on real events; each is far above what the event takes (>= 3x)


@dataclass(frozen=True)
class Pki:
    """A CA with a controller certificate, agents a1 and a2, client alice (admin), and a foreign CA."""

    good: Path
    foreign: Path

    def files(self, name: str, *, foreign: bool = False) -> tuple[Path, Path]:
        base = self.foreign if foreign else self.good
        return base / f"{name}.pem", base / f"{name}-key.pem"

    @property
    def ca(self) -> Path:
        return self.good / "ca.pem"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    good = tmp_path_factory.mktemp("pki")
    foreign = tmp_path_factory.mktemp("foreign-pki")
    init_dir(good)
    init_dir(foreign)
    for directory in (good, foreign):
        issue_identity(directory, "a1", agent_grant(agent_types=["shell", "python"]))
        issue_identity(directory, "alice", client_grant("admin"))
    issue_identity(good, "a2", agent_grant(agent_types=["shell", "python"]))
    return Pki(good, foreign)


@dataclass
class TlsController:
    proc: subprocess.Popen[bytes]
    address: str  # server TLS
    mtls_address: str  # client certificate required
    directory: Path

    def log(self) -> str:
        return (self.directory / "controller.log").read_text(errors="replace")


def _start(directory: Path, cert: Path, key: Path, ca: Path, *extra: str) -> TlsController:
    require_server()
    mtls_file = directory / "mtls.addr"
    flags = ["--tls-cert", str(cert), "--tls-key", str(key), "--client-ca", str(ca)]
    flags += ["--mtls-listen", "127.0.0.1:0", "--mtls-address-file", str(mtls_file), *extra]
    proc, address = start_controller(directory, extra=flags)
    # The daemon writes the mutual-TLS address before the main one: it is there now.
    return TlsController(proc, address, mtls_file.read_text().strip(), directory)


@pytest.fixture
def controller(tmp_path: Path, pki: Pki) -> Iterator[TlsController]:
    started = _start(tmp_path, pki.good / "controller.pem", pki.good / "controller-key.pem", pki.ca)
    try:
        yield started
    finally:
        stop(started.proc)


def _admin(pki: Pki, ctl: TlsController) -> SyncClient:
    cert, key = pki.files("alice")
    return SyncClient(ctl.mtls_address, ca=pki.ca, cert=cert, key=key, token="")


def _agent_flags(pki: Pki, name: str, *, foreign: bool = False, ca: Path | None = None) -> list[str]:
    cert, key = pki.files(name, foreign=foreign)
    return ["--ca", str(ca or pki.ca), "--cert", str(cert), "--key", str(key)]


def _wait(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def _connected(pki: Pki, ctl: TlsController) -> set[str]:
    with _admin(pki, ctl) as client:
        return {a.name for a in client.list_agents() if a.state == "connected"}


def _log_has(path: Path, text: str) -> Callable[[], bool]:
    return lambda: path.exists() and text in path.read_text(errors="replace")


def test_mtls_agent_and_cli_run_a_workflow(tmp_path: Path, pki: Pki, controller: TlsController) -> None:
    agent = start_agent(tmp_path, controller.mtls_address, "a1", extra=_agent_flags(pki, "a1"))
    try:
        _wait(lambda: "a1" in _connected(pki, controller), "agent a1 to connect over mutual TLS")
        workflow = tmp_path / "wf.yaml"
        workflow.write_text(
            "name: over-tls\n"
            "tasks:\n"
            "  - name: hello\n"
            "    agent_type: shell\n"
            '    payload: {shell: \'echo "{\\"tls\\": true}"\'}\n'
            "    timeout: 30\n"
        )
        cert, key = pki.files("alice")
        credentials = ["--ca", str(pki.ca), "--cert", str(cert), "--key", str(key)]
        run = corral(*credentials, "run", str(workflow), "-a", controller.mtls_address, "-o", "json")
        assert run.returncode == 0, run.stdout + run.stderr
        listed = corral(*credentials, "list", "-a", controller.mtls_address)
        assert listed.returncode == 0 and "over-tls" in listed.stdout, listed.stderr
        workflow_id = listed.stdout.split("wf-", 1)[1].split()[0]
        status = corral(*credentials, "status", f"wf-{workflow_id}", "-a", controller.mtls_address, "-o", "json")
        assert status.returncode == 0, status.stderr
        assert '"state": "completed"' in status.stdout and '"tls": true' in status.stdout
        # The same credentials from the environment (CORRAL_CA/CERT/KEY), as the README shows.
        env = {"CORRAL_CA": str(pki.ca), "CORRAL_CERT": str(cert), "CORRAL_KEY": str(key)}
        from_env = corral("agents", "-a", controller.mtls_address, env=env)
        assert from_env.returncode == 0 and "a1" in from_env.stdout, from_env.stderr
    finally:
        stop(agent)


def test_plaintext_and_foreign_certificates_are_refused(tmp_path: Path, pki: Pki, controller: TlsController) -> None:
    cert, key = pki.files("alice")
    foreign_cert, foreign_key = pki.files("alice", foreign=True)
    refused = [
        SyncClient(controller.address, ca="", cert="", key="", token="", connect_timeout=5),  # plaintext
        SyncClient(controller.mtls_address, ca="", cert="", key="", token="", connect_timeout=5),
        SyncClient(controller.address, ca=pki.foreign / "ca.pem", cert="", key="", token="", connect_timeout=5),
        SyncClient(controller.mtls_address, ca=pki.ca, cert="", key="", token="", connect_timeout=5),  # no cert
        SyncClient(controller.mtls_address, ca=pki.ca, cert=foreign_cert, key=foreign_key, token="", connect_timeout=5),
    ]
    for client in refused:
        with client, pytest.raises(UnavailableError):
            client.list_workflows()
    # The CLI says what is wrong in one line.
    cli = corral(
        "--ca",
        str(pki.ca),
        "--cert",
        str(foreign_cert),
        "--key",
        str(foreign_key),
        "list",
        "-a",
        controller.mtls_address,
    )
    assert cli.returncode == 1 and "TLS handshake" in cli.stderr, cli.stderr
    plain = corral("list", "-a", controller.address)
    assert plain.returncode == 1 and "cannot reach the controller" in plain.stderr
    # The right CA and certificate work on the same ports (the refusals above are about credentials).
    with SyncClient(controller.mtls_address, ca=pki.ca, cert=cert, key=key, token="") as client:
        assert client.list_workflows().workflows == ()

    # Agents: plaintext on the TLS port, and a certificate of another CA on the mutual-TLS port.
    plain_agent = start_agent(tmp_path, controller.address, "a1")
    foreign_agent = start_agent(
        tmp_path, controller.mtls_address, "a2", extra=[*_agent_flags(pki, "a1", foreign=True), "--name", "a1"]
    )
    try:
        for name in ("a1", "a2"):
            log = tmp_path / f"agent-{name}.log"
            _wait(_log_has(log, "controller stream failed"), f"agent {name} to report its failed connection")
        assert foreign_agent.poll() is None and plain_agent.poll() is None  # they retry, they do not exit
        assert _connected(pki, controller) == set()
    finally:
        stop(plain_agent)
        stop(foreign_agent)


async def _hello_as(pki: Pki, address: str, cert_name: str, hello_name: str) -> grpc.StatusCode | None:
    """Open AgentGateway.Connect with CERT_NAME's certificate and say Hello as HELLO_NAME.

    Returns the status code the stream ended with, or None when the controller welcomed it.
    """
    cert, key = pki.files(cert_name)
    credentials = grpc.ssl_channel_credentials(pki.ca.read_bytes(), key.read_bytes(), cert.read_bytes())
    async with grpc.aio.secure_channel(address, credentials) as channel:
        call = agent_pb2_grpc.AgentGatewayStub(channel).Connect()
        hello = agent_pb2.Hello(
            agent_id=hello_name,
            name=hello_name,
            hostname="forger",
            agent_types=["shell"],
            inventory=types_pb2.Inventory(cpu_cores=1, memory_mb=512, disk_mb=512, slots=1),
            version="0.0.0",
        )
        try:
            await call.write(agent_pb2.AgentMessage(hello=hello))
            message = await asyncio.wait_for(call.read(), WAIT_S)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        finally:
            call.cancel()
        if isinstance(message, agent_pb2.ControllerMessage) and message.WhichOneof("kind") == "welcome":
            return None
        return grpc.StatusCode.UNKNOWN


def test_an_agent_certificate_names_exactly_one_agent(pki: Pki, controller: TlsController) -> None:
    """Passes once the auth interceptor and the gateway's identity binding are merged (issue 7)."""
    code = asyncio.run(_hello_as(pki, controller.mtls_address, "a1", "a2"))
    assert code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT), (
        f"a certificate for a1 said Hello as a2 and got {code.name if code else 'a Welcome'}"
    )
    assert "a2" not in _connected(pki, controller)


def test_refuses_plaintext_off_loopback_unless_insecure(tmp_path: Path) -> None:
    require_server()
    command = [sys.executable, "-m", "corral.controller", "--listen", "0.0.0.0:0", "--memory"]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2
    assert "refusing to listen on 0.0.0.0:0 without TLS" in refused.stderr
    assert "--insecure" in refused.stderr and "--tls-cert" in refused.stderr

    wide_dir = tmp_path
    address_file = wide_dir / "addr"
    log = (wide_dir / "controller.log").open("wb")
    wide = subprocess.Popen(
        [*command, "--insecure", "--address-file", str(address_file)], stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    try:
        _wait(address_file.exists, "the --insecure controller to serve")
        port = int(address_file.read_text().rsplit(":", 1)[1])
        with SyncClient(f"127.0.0.1:{port}", ca="", cert="", key="", token="") as client:
            assert client.list_workflows().workflows == ()
        text = (wide_dir / "controller.log").read_text()
        assert "warning" in text.lower() and "--insecure: serving PLAINTEXT on 0.0.0.0:0" in text
    finally:
        stop(wide)


def _served_serial(address: str, ca: Path) -> int:
    """The serial number of the certificate the server presents to a new TLS connection."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_sighup_reloads_the_certificate(tmp_path: Path, pki: Pki) -> None:
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "controller.pem", live / "controller-key.pem"
    shutil.copy(pki.good / "controller.pem", cert)
    shutil.copy(pki.good / "controller-key.pem", key)
    ctl = _start(tmp_path, cert, key, pki.ca)
    try:
        first = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
        assert _served_serial(ctl.address, pki.ca) == first
        assert _served_serial(ctl.mtls_address, pki.ca) == first

        authority, authority_key = load_ca(pki.good)
        renewed, renewed_key = make_server_cert(authority, authority_key, ["renewed.example"])
        key.write_bytes(key_pem(renewed_key))
        cert.write_bytes(cert_pem(renewed))
        ctl.proc.send_signal(signal.SIGHUP)
        _wait(lambda: "SIGHUP: TLS files reloaded" in ctl.log(), "the controller to log the reload")
        assert _served_serial(ctl.address, pki.ca) == renewed.serial_number
        assert _served_serial(ctl.mtls_address, pki.ca) == renewed.serial_number
        with _admin(pki, ctl) as client:  # gRPC clients connect with the new certificate too
            assert client.list_workflows().workflows == ()

        # A broken replacement is refused and the renewed certificate stays in use.
        key.write_bytes(b"not a key")
        ctl.proc.send_signal(signal.SIGHUP)
        _wait(lambda: "TLS files not reloaded" in ctl.log(), "the controller to refuse the broken files")
        assert _served_serial(ctl.address, pki.ca) == renewed.serial_number
        assert ctl.proc.poll() is None
    finally:
        stop(ctl.proc)


def test_bad_tls_flags_exit_2_with_one_line(tmp_path: Path, pki: Pki) -> None:
    require_server()
    base = [sys.executable, "-m", "corral.controller", "--listen", "127.0.0.1:0", "--memory"]
    cases = [
        (["--tls-cert", str(pki.good / "controller.pem")], "--tls-cert and --tls-key go together"),
        (
            ["--tls-cert", str(pki.good / "controller.pem"), "--tls-key", str(pki.good / "a1-key.pem")],
            "the key does not belong to the certificate",
        ),
        (["--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(pki.good / "a1-key.pem")], "cannot read"),
        (["--client-ca", str(pki.ca)], "need --tls-cert"),
    ]
    for flags, message in cases:
        result = subprocess.run([*base, *flags], capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2 and message in result.stderr, (flags, result.stderr)


def test_plaintext_health_port_serves_health_only(tmp_path: Path, pki: Pki) -> None:
    ctl = _start(
        tmp_path, pki.good / "controller.pem", pki.good / "controller-key.pem", pki.ca, "--health-listen", "127.0.0.1:0"
    )
    try:
        line = next(x for x in ctl.log().splitlines() if "grpc health (plaintext, health only) on" in x)
        address = line.rsplit(" on ", 1)[1].split()[0]  # the text format appends " [logger]"
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="corral.v1.Orchestrator"), timeout=10
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            # Nothing but health: the API is not reachable without TLS on this port.
            with pytest.raises(grpc.RpcError) as info:
                orchestrator_pb2_grpc.OrchestratorStub(channel).ListWorkflows(
                    orchestrator_pb2.ListWorkflowsRequest(), timeout=10
                )
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        stop(ctl.proc)
