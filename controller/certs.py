"""Certificates for a corral cluster: a CA, the controller's server certificate, per-identity certificates.

``corral certs init DIR`` and ``corral certs issue DIR`` are thin shells over these functions. Keys
are EC P-256 (every TLS stack gRPC uses speaks it, and keys are small and fast to make). An agent or
client certificate carries its common name (the identity) and its grant (role, namespaces; for
agents also labels and agent types) in the extension of :data:`~corral.controller.rpc.identity.GRANT_OID`.

Files are written atomically and never replace an existing file unless ``force`` is given; private
keys are mode 0600 from the moment they exist.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from corral.controller.rpc.identity import GRANT_OID, ROLES, Grant, encode_grant
from corral.controller.spec import NAME_PATTERN, Limits

__all__ = [
    "CA_CERT",
    "CA_DAYS",
    "CA_KEY",
    "CLIENT_ROLES",
    "CONTROLLER_CERT",
    "CONTROLLER_KEY",
    "DEFAULT_HOSTS",
    "LEAF_DAYS",
    "CertError",
    "Issued",
    "agent_grant",
    "cert_pem",
    "client_grant",
    "common_name",
    "init_dir",
    "issue_identity",
    "key_pem",
    "load_ca",
    "make_ca",
    "make_identity_cert",
    "make_server_cert",
    "parse_host",
    "read_grant",
    "verify_key_pair",
    "write_file",
]

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
CONTROLLER_CERT = "controller.pem"
CONTROLLER_KEY = "controller-key.pem"
#: always in the controller certificate, so local tools and port-forwards verify it
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
CA_DAYS = 3650
LEAF_DAYS = 365
#: roles a client certificate may carry (``agent`` is for ``--agent`` certificates only)
CLIENT_ROLES = tuple(r for r in ROLES if r != "agent")

_NAME_RE = re.compile(NAME_PATTERN)
# RFC 1123 host names (labels of letters, digits and inner hyphens), optionally one leading "*." wildcard.
_DNS_RE = re.compile(
    r"^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
# Backdate a little: a peer whose clock is a minute behind must not see a certificate "not yet valid".
_BACKDATE = datetime.timedelta(minutes=5)

PrivateKey = ec.EllipticCurvePrivateKey


class CertError(ValueError):
    """Bad input for a certificate operation (a file that exists, a bad name, a missing CA)."""


@dataclass(frozen=True, slots=True)
class Issued:
    """The files one command wrote."""

    cert: Path
    key: Path


# -- pure builders ---------------------------------------------------------------------------


def new_key() -> PrivateKey:
    """A fresh EC P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM (what gRPC reads)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    """``cert`` as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def parse_host(text: str) -> x509.GeneralName:
    """A subject alternative name: an IP address (v4 or v6) or a DNS name; CertError otherwise."""
    host = text.strip("[]")  # "[::1]" as written in a host:port
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if len(host) > 253 or not _DNS_RE.match(host):
        raise CertError(f"--host {text!r} is neither an IP address nor a DNS name")
    return x509.DNSName(host.lower())


def _check_name(name: str, what: str) -> None:
    if not name or len(name) > Limits.max_name_length or not _NAME_RE.match(name):
        raise CertError(
            f"{what} {name!r} is not a valid name (letters, digits, '_', '.', '-'; "
            f"starting with a letter or digit; at most {Limits.max_name_length} characters)"
        )


def agent_grant(
    labels: Mapping[str, str] | None = None, agent_types: Sequence[str] = (), namespaces: Sequence[str] = ()
) -> Grant:
    """The grant of an agent certificate; CertError on a bad label, type or namespace."""
    for key, value in (labels or {}).items():
        _check_name(key, "label key")
        if len(value) > Limits.max_label_length or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise CertError(f"label {key}: value must be at most {Limits.max_label_length} printable characters")
    for agent_type in agent_types:
        _check_name(agent_type, "agent type")
    for namespace in namespaces:
        _check_name(namespace, "namespace")
    return Grant("agent", tuple(dict.fromkeys(namespaces)), dict(labels or {}), tuple(dict.fromkeys(agent_types)))


def client_grant(role: str = "viewer", namespaces: Sequence[str] = ()) -> Grant:
    """The grant of a client certificate; CertError on an unknown role or a bad namespace."""
    if role not in CLIENT_ROLES:
        raise CertError(f"--role {role!r} is not one of {', '.join(CLIENT_ROLES)}")
    for namespace in namespaces:
        _check_name(namespace, "namespace")
    return Grant(role, tuple(dict.fromkeys(namespaces)))


def _builder(
    subject: x509.Name, issuer: x509.Name, key: PrivateKey, days: int, now: datetime.datetime
) -> x509.CertificateBuilder:
    if days < 1:
        raise CertError("--days must be at least 1")
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(name: str = "corral CA", *, days: int = CA_DAYS) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        _builder(subject, subject, key, days, _now())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    return builder.sign(key, hashes.SHA256()), key


def _leaf(
    ca: x509.Certificate,
    common_name: str,
    usage: x509.ObjectIdentifier,
    days: int,
) -> tuple[x509.CertificateBuilder, PrivateKey]:
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        _builder(subject, ca.subject, key, days, _now())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )
    return builder, key


def make_server_cert(
    ca: x509.Certificate, ca_key: PrivateKey, hosts: Iterable[str] = (), *, days: int = LEAF_DAYS
) -> tuple[x509.Certificate, PrivateKey]:
    """The controller's certificate: serverAuth, SANs ``hosts`` plus localhost, 127.0.0.1 and ::1."""
    hosts = tuple(hosts)
    names: list[x509.GeneralName] = []
    for host in (*hosts, *DEFAULT_HOSTS):
        name = parse_host(host)
        if name not in names:
            names.append(name)
    first = hosts[0] if hosts else "corral-controller"
    builder, key = _leaf(ca, str(first).strip("[]"), ExtendedKeyUsageOID.SERVER_AUTH, days)
    builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_identity_cert(
    ca: x509.Certificate, ca_key: PrivateKey, name: str, grant: Grant, *, days: int = LEAF_DAYS
) -> tuple[x509.Certificate, PrivateKey]:
    """An agent or client certificate: clientAuth, CN=``name``, ``grant`` in the grant extension."""
    _check_name(name, "--agent" if grant.role == "agent" else "--client")
    builder, key = _leaf(ca, name, ExtendedKeyUsageOID.CLIENT_AUTH, days)
    extension = x509.UnrecognizedExtension(x509.ObjectIdentifier(GRANT_OID), encode_grant(grant))
    builder = builder.add_extension(extension, critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


# -- reading ---------------------------------------------------------------------------------


def common_name(cert: x509.Certificate) -> str:
    """The certificate's subject common name ('' when it has none)."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def read_grant(cert: x509.Certificate) -> bytes | None:
    """The raw value of the grant extension, or None."""
    try:
        value = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(GRANT_OID)).value
    except x509.ExtensionNotFound:
        return None
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def verify_key_pair(cert_data: bytes, key_data: bytes, *, what: str = "certificate") -> x509.Certificate:
    """Parse a PEM certificate and its PEM private key and check they belong together.

    Raises CertError with one line naming what is wrong, so a bad file given to the controller (or
    swapped in before a SIGHUP) is reported instead of breaking every later handshake.
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_data)
    except ValueError as exc:
        raise CertError(f"{what} is not a PEM certificate: {exc}") from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as exc:
        raise CertError(f"the key of the {what} is not an unencrypted PEM private key: {exc}") from None
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    expected = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if public != expected:
        raise CertError(f"the key does not belong to the {what}")
    return cert


def load_ca(directory: Path) -> tuple[x509.Certificate, PrivateKey]:
    """The CA made by :func:`init_dir` in ``directory``; CertError when it is missing or broken."""
    try:
        cert_data = (directory / CA_CERT).read_bytes()
        key_data = (directory / CA_KEY).read_bytes()
    except FileNotFoundError as exc:
        raise CertError(
            f"no CA in {directory} ({exc.filename} is missing): run `corral certs init {directory}` first"
        ) from None
    except OSError as exc:
        raise CertError(f"cannot read the CA in {directory}: {exc}") from None
    cert = verify_key_pair(cert_data, key_data, what=f"CA {directory / CA_CERT}")
    key = serialization.load_pem_private_key(key_data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{directory / CA_KEY} is not an EC key (corral certs makes EC P-256 keys)")
    return cert, key


# -- files -----------------------------------------------------------------------------------


def _refuse_existing(paths: Iterable[Path], force: bool) -> None:
    if force:
        return
    existing = [str(p) for p in paths if p.exists() or p.is_symlink()]
    if existing:
        raise CertError(f"refusing to overwrite {', '.join(existing)} (give --force to replace)")


def write_file(path: Path, data: bytes, *, mode: int, force: bool = False) -> None:
    """Write ``data`` to ``path`` atomically with ``mode``; CertError if it exists and not ``force``.

    The file is created under a temporary name with its final mode (a key is never readable by
    others, not even for a moment) and renamed into place.
    """
    _refuse_existing([path], force)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_pair(cert_path: Path, cert: x509.Certificate, key_path: Path, key: PrivateKey, force: bool) -> Issued:
    # The key first: a certificate without its key is useless, a key without its certificate harmless.
    write_file(key_path, key_pem(key), mode=0o600, force=force)
    write_file(cert_path, cert_pem(cert), mode=0o644, force=force)
    return Issued(cert_path, key_path)


def init_dir(
    directory: Path, hosts: Sequence[str] = (), *, force: bool = False, days: int = LEAF_DAYS
) -> tuple[Issued, Issued]:
    """Make a CA and the controller's certificate in ``directory`` (created 0700 if missing).

    Returns (CA files, controller files). Nothing is written if any target exists (without ``force``)
    or a host is invalid.
    """
    for host in hosts:
        parse_host(host)
    targets = [directory / n for n in (CA_CERT, CA_KEY, CONTROLLER_CERT, CONTROLLER_KEY)]
    _refuse_existing(targets, force)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca, ca_key = make_ca()
    server, server_key = make_server_cert(ca, ca_key, hosts, days=days)
    ca_files = _write_pair(directory / CA_CERT, ca, directory / CA_KEY, ca_key, force)
    controller_files = _write_pair(directory / CONTROLLER_CERT, server, directory / CONTROLLER_KEY, server_key, force)
    return ca_files, controller_files


def issue_identity(directory: Path, name: str, grant: Grant, *, force: bool = False, days: int = LEAF_DAYS) -> Issued:
    """Sign ``NAME.pem`` / ``NAME-key.pem`` in ``directory`` with the CA there."""
    _check_name(name, "--agent" if grant.role == "agent" else "--client")
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    if {cert_path.name, key_path.name} & {CA_CERT, CA_KEY, CONTROLLER_CERT, CONTROLLER_KEY}:
        raise CertError(f"the name {name!r} is taken by the CA or the controller certificate")
    _refuse_existing([cert_path, key_path], force)
    ca, ca_key = load_ca(directory)
    cert, key = make_identity_cert(ca, ca_key, name, grant, days=days)
    return _write_pair(cert_path, cert, key_path, key, force)
