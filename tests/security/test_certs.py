"""The certificate functions behind ``corral certs``: SANs, grants, file modes, refusals.

The grant extension is read back the way the controller reads it: from the auth context of a real
TLS handshake with a gRPC server, through ``identity.peer_certificate``.
"""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from corral.controller.certs import (
    CertError,
    agent_grant,
    client_grant,
    init_dir,
    issue_identity,
    parse_host,
    read_grant,
)
from corral.controller.cli.main import app
from corral.controller.rpc.identity import Grant, decode_grant, peer_certificate
from tests.procs import corral


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_writes_a_ca_and_a_controller_certificate_with_every_host(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    ca, controller = init_dir(pki, ["ctl.example.com", "10.1.2.3", "[fd00::7]"])

    assert _mode(pki) == 0o700
    assert _mode(ca.key) == 0o600 and _mode(controller.key) == 0o600
    assert _mode(ca.cert) == 0o644 and _mode(controller.cert) == 0o644
    authority = _load(ca.cert)
    assert authority.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server = _load(controller.cert)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"ctl.example.com", "localhost"}
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("10.1.2.3", "fd00::7", "127.0.0.1", "::1")
    }
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # Signed by the CA: the signature verifies with the CA's public key.
    server.verify_directly_issued_by(authority)


def test_files_are_never_overwritten_without_force(tmp_path: Path) -> None:
    ca, _ = init_dir(tmp_path)
    before = ca.cert.read_bytes()
    with pytest.raises(CertError, match=r"refusing to overwrite .*--force"):
        init_dir(tmp_path)
    assert ca.cert.read_bytes() == before

    issued = issue_identity(tmp_path, "a1", agent_grant())
    first = issued.cert.read_bytes()
    with pytest.raises(CertError, match="refusing to overwrite"):
        issue_identity(tmp_path, "a1", agent_grant())
    assert issued.cert.read_bytes() == first

    issue_identity(tmp_path, "a1", agent_grant(), force=True)
    assert issued.cert.read_bytes() != first
    assert _mode(issued.key) == 0o600
    init_dir(tmp_path, force=True)
    assert ca.cert.read_bytes() != before


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda d: issue_identity(d, "bad name", agent_grant()), "not a valid name"),
        (lambda d: issue_identity(d, " a1", agent_grant()), "not a valid name"),
        (lambda d: issue_identity(d, "ca", agent_grant()), "taken by the CA"),
        (lambda d: issue_identity(d, "controller-key", client_grant()), "taken by the CA"),
        (lambda d: client_grant("agent"), "--role 'agent' is not one of"),
        (lambda d: client_grant("root"), "--role 'root' is not one of"),
        (lambda d: agent_grant({"zone": "a\nb"}), "printable"),
        (lambda d: agent_grant(namespaces=["team a"]), "namespace"),
        (lambda d: parse_host("bad host"), "neither an IP address nor a DNS name"),
        (lambda d: issue_identity(d / "nowhere", "a1", agent_grant()), "no CA in"),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(tmp_path: Path, call: Any, message: str) -> None:
    init_dir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(CertError, match=message):
        call(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


class _Recorder(health.aio.HealthServicer):
    """Health Check that remembers what the controller would learn about its caller."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: list[tuple[str, Grant | None] | None] = []

    async def Check(self, request: Any, context: Any) -> Any:
        self.peers.append(peer_certificate(context.auth_context()))
        return await super().Check(request, context)


async def _handshake_peer(pki: Path, name: str) -> tuple[str, Grant | None] | None:
    """Call a real mutual-TLS gRPC server with NAME's certificate; return the peer it saw."""
    recorder = _Recorder()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(recorder, server)
    credentials = grpc.ssl_server_credentials(
        [((pki / "controller-key.pem").read_bytes(), (pki / "controller.pem").read_bytes())],
        root_certificates=(pki / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        client = grpc.ssl_channel_credentials(
            (pki / "ca.pem").read_bytes(), (pki / f"{name}-key.pem").read_bytes(), (pki / f"{name}.pem").read_bytes()
        )
        async with grpc.aio.secure_channel(f"localhost:{port}", client) as channel:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    finally:
        await server.stop(None)
    assert len(recorder.peers) == 1
    return recorder.peers[0]


async def test_grants_round_trip_through_a_real_tls_handshake(tmp_path: Path) -> None:
    init_dir(tmp_path)
    agent = agent_grant({"zone": "a", "gpu": "a100"}, ["shell"], ["team-a"])
    client = client_grant("submitter", ["team-a", "team-b"])
    issue_identity(tmp_path, "gpu-1", agent)
    issue_identity(tmp_path, "alice", client)

    assert await _handshake_peer(tmp_path, "gpu-1") == ("gpu-1", agent)
    assert await _handshake_peer(tmp_path, "alice") == ("alice", client)

    issued = _load(tmp_path / "alice.pem")
    raw = read_grant(issued)
    assert raw is not None and decode_grant(raw) == client
    usage = issued.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert agent.role == "agent" and client.role == "submitter"


def test_the_command_line_defaults_match_the_module() -> None:
    from corral.controller import certs
    from corral.controller.cli import certs as cli

    assert (cli.CA_DAYS, cli.LEAF_DAYS, cli.CLIENT_ROLES) == (certs.CA_DAYS, certs.LEAF_DAYS, certs.CLIENT_ROLES)


def test_the_certs_commands(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    made = corral("certs", "init", str(pki), "--host", "ctl.internal")
    assert made.returncode == 0, made.stderr
    assert made.stdout.split() == [
        str(pki / n) for n in ("ca.pem", "ca-key.pem", "controller.pem", "controller-key.pem")
    ]

    agent = corral("certs", "issue", str(pki), "--agent", "a1", "--label", "zone=b", "--types", "shell,python")
    assert agent.returncode == 0, agent.stderr
    raw = read_grant(_load(pki / "a1.pem"))
    assert raw is not None
    assert decode_grant(raw) == Grant("agent", (), {"zone": "b"}, ("shell", "python"))

    # The rest in-process (the same typer app the console script runs): eight more interpreters
    # would only add start-up time.
    runner = CliRunner()
    viewer = runner.invoke(app, ["certs", "issue", str(pki), "--client", "bob"])
    assert viewer.exit_code == 0, viewer.stderr
    raw = read_grant(_load(pki / "bob.pem"))
    assert raw is not None and decode_grant(raw).role == "viewer"

    again = runner.invoke(app, ["certs", "issue", str(pki), "--client", "bob", "--role", "admin"])
    assert again.exit_code == 2
    assert "refusing to overwrite" in again.stderr and "--force" in again.stderr
    assert decode_grant(read_grant(_load(pki / "bob.pem")) or b"").role == "viewer"

    for args, message in [
        (["--agent", "a2", "--client", "c"], "exactly one of"),
        (["--agent", "a2", "--role", "admin"], "--role is for --client"),
        (["--agent", "a2", "--label", "novalue"], "KEY=VALUE"),
        (["--client", "c", "--role", "agent"], "not one of"),
    ]:
        refused = runner.invoke(app, ["certs", "issue", str(pki), *args])
        assert refused.exit_code == 2 and message in refused.stderr, (args, refused.stderr)
    assert not (pki / "a2.pem").exists() and not (pki / "c.pem").exists()
