"""Client certificates through the auth interceptor: the grant extension, no extension, the deny-list.

The controller's TLS listener belongs to another part of the work; here a real gRPC server with
mutual TLS (real certificates from a throwaway CA) carries the same interceptors and services.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from corral.controller.access_boot import bootstrap_admin_token
from corral.controller.rpc.admin import AdminService
from corral.controller.rpc.auth import AuthInterceptor
from corral.controller.rpc.errors import ErrorInterceptor
from corral.controller.rpc.identity import GRANT_OID, Grant, encode_grant
from corral.controller.rpc.orchestrator import OrchestratorService
from corral.controller.runtime import Runtime
from corral.controller.store.sqlite import SqliteStore
from corral.v1 import admin_pb2, admin_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc

Key = ec.EllipticCurvePrivateKey


def _pem(cert: x509.Certificate, key: Key) -> tuple[bytes, bytes]:
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def _issue(
    name: str, ca: tuple[x509.Certificate, Key] | None, grant: Grant | None = None
) -> tuple[x509.Certificate, Key]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca[0].subject if ca else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )
    if ca is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    if grant is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(GRANT_OID), encode_grant(grant)), critical=False
        )
    return builder.sign(ca[1] if ca else key, hashes.SHA256()), key


@dataclass
class TlsController:
    runtime: Runtime
    port: int
    ca_pem: bytes
    ca: tuple[x509.Certificate, Key]
    admin_token: str

    def channel(self, cert: tuple[x509.Certificate, Key]) -> grpc.aio.Channel:
        cert_pem, key_pem = _pem(*cert)
        credentials = grpc.ssl_channel_credentials(self.ca_pem, key_pem, cert_pem)
        return grpc.aio.secure_channel(
            f"localhost:{self.port}", credentials, options=[("grpc.ssl_target_name_override", "localhost")]
        )


@pytest.fixture
async def tls_controller(tmp_path: Path) -> AsyncIterator[TlsController]:
    ca = _issue("test CA", None)
    server_cert = _issue("localhost", ca)
    runtime = Runtime(SqliteStore(tmp_path / "c.db"))
    await runtime.start()
    await bootstrap_admin_token(runtime, tmp_path / "admin.token")
    server = grpc.aio.server(interceptors=[ErrorInterceptor(), AuthInterceptor(runtime, enabled=True)])
    orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(OrchestratorService(runtime), server)
    admin_pb2_grpc.add_AdminServicer_to_server(AdminService(runtime, auth_enabled=True, box=None), server)
    ca_pem = _pem(*ca)[0]
    cert_pem, key_pem = _pem(*server_cert)
    credentials = grpc.ssl_server_credentials([(key_pem, cert_pem)], ca_pem, require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield TlsController(runtime, port, ca_pem, ca, (tmp_path / "admin.token").read_text().strip())
    finally:
        await server.stop(0)
        await runtime.stop()


async def test_a_certificate_grant_is_the_callers_role_until_its_name_is_revoked(tls_controller: TlsController) -> None:
    viewer = _issue("dash-1", tls_controller.ca, Grant("viewer", ("default",)))
    async with tls_controller.channel(viewer) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        orchestrator = orchestrator_pb2_grpc.OrchestratorStub(channel)
        who = await admin.WhoAmI(admin_pb2.WhoAmIRequest())
        assert (who.principal, who.role, list(who.namespaces)) == ("cert:dash-1", "viewer", ["default"])
        await orchestrator.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest())
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await orchestrator.CancelWorkflow(orchestrator_pb2.CancelWorkflowRequest(workflow_id="x"))
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # Revoked by name, by an admin (here one by certificate): refused on every call from then on.
    other = _issue("ops-1", tls_controller.ca, Grant("admin"))
    async with tls_controller.channel(other) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        await admin.RevokeCertificate(admin_pb2.RevokeCertificateRequest(name="dash-1", reason="test"))
    async with tls_controller.channel(viewer) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as revoked:
            await orchestrator_pb2_grpc.OrchestratorStub(channel).ListWorkflows(orchestrator_pb2.ListWorkflowsRequest())
        assert revoked.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "certificate 'dash-1' is revoked" in (revoked.value.details() or "")


async def test_a_certificate_without_our_extension_has_no_role(tls_controller: TlsController) -> None:
    plain = _issue("brought-by-operator", tls_controller.ca)
    async with tls_controller.channel(plain) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await orchestrator_pb2_grpc.OrchestratorStub(channel).ListWorkflows(orchestrator_pb2.ListWorkflowsRequest())
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "cert:brought-by-operator has no role" in (denied.value.details() or "")
