"""Who is calling: the principal of one RPC, and the grant a credential carries.

The auth interceptor resolves every call to a :class:`Principal` (from a bearer token, an agent
credential or a client certificate) and makes it current for the handler through a context
variable, so servicers read it with :func:`current_principal` instead of parsing metadata.

A certificate made by ``corral certs`` carries its grant (role, namespaces; for agents also labels
and agent types) in one X.509 extension under :data:`GRANT_OID`, as JSON. A certificate without
that extension (brought by the operator) is an agent with no labels when it is presented on the
agent gateway, and a caller with no role anywhere else.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ANONYMOUS",
    "DEV_ADMIN",
    "GRANT_OID",
    "ROLES",
    "Grant",
    "Principal",
    "acting_as",
    "current_principal",
    "decode_grant",
    "encode_grant",
    "peer_certificate",
]

# 2.25.<128-bit integer> is the ITU-T arc for OIDs made from a UUID (no registration needed).
GRANT_OID = "2.25.229568432174327052412343627469418744327"

ROLES = ("admin", "operator", "submitter", "viewer", "worker", "agent")


@dataclass(frozen=True, slots=True)
class Grant:
    """What a credential allows. ``namespaces`` empty means every namespace."""

    role: str
    namespaces: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    agent_types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one RPC.

    ``kind`` is ``token`` (a bearer token; ``name`` is its id), ``cert`` (a client certificate;
    ``name`` is its common name), ``agent`` (an agent by certificate or join credential; ``name``
    is the agent's name), ``dev`` (auth is off: the loopback default) or ``anonymous``.
    """

    kind: str
    name: str
    grant: Grant

    @property
    def role(self) -> str:
        return self.grant.role

    @property
    def namespaces(self) -> tuple[str, ...]:
        return self.grant.namespaces

    def covers(self, namespace: str) -> bool:
        """Whether this principal may act in ``namespace``."""
        return not self.grant.namespaces or namespace in self.grant.namespaces

    def describe(self) -> str:
        """One short phrase for errors and the audit log: ``token 3f2a… (submitter)``."""
        return f"{self.kind}:{self.name}" if self.kind != "dev" else "dev"


# Auth off (plaintext loopback, `corral dev`): every caller may do everything, agents say who they are.
DEV_ADMIN = Principal("dev", "dev", Grant("admin"))
ANONYMOUS = Principal("anonymous", "anonymous", Grant(""))

_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("corral_principal", default=DEV_ADMIN)


def current_principal() -> Principal:
    """The principal of the RPC being handled (``DEV_ADMIN`` outside any call, or with auth off)."""
    return _current.get()


@contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    """Make ``principal`` current for the duration of the block (the interceptor, and tests)."""
    token = _current.set(principal)
    try:
        yield
    finally:
        _current.reset(token)


def encode_grant(grant: Grant) -> bytes:
    """The certificate extension's value."""
    body: dict[str, Any] = {"role": grant.role, "namespaces": list(grant.namespaces)}
    if grant.labels:
        body["labels"] = dict(grant.labels)
    if grant.agent_types:
        body["agent_types"] = list(grant.agent_types)
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def decode_grant(raw: bytes) -> Grant:
    """Parse a certificate extension's value; raises ValueError when it is not one of ours."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"grant extension is not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("role") not in ROLES:
        raise ValueError("grant extension has no valid role")
    namespaces = body.get("namespaces", [])
    labels = body.get("labels", {})
    agent_types = body.get("agent_types", [])
    if not (
        isinstance(namespaces, list)
        and all(isinstance(n, str) for n in namespaces)
        and isinstance(labels, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
        and isinstance(agent_types, list)
        and all(isinstance(t, str) for t in agent_types)
    ):
        raise ValueError("grant extension has malformed fields")
    return Grant(str(body["role"]), tuple(namespaces), dict(labels), tuple(agent_types))


def peer_certificate(auth_context: Mapping[str, Any]) -> tuple[str, Grant | None] | None:
    """The verified client certificate of a call: (common name, its grant or None), or None.

    ``auth_context`` is ``context.auth_context()`` of a gRPC call; gRPC has already verified the
    certificate against the controller's client CA when it is there.
    """
    pems = auth_context.get("x509_pem_cert")
    if not pems:
        return None
    # Imported here: plaintext deployments and the agent never need the X.509 parser.
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(pems[0])
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    common_name = str(names[0].value)
    try:
        extension = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(GRANT_OID))
    except x509.ExtensionNotFound:
        return common_name, None
    value = extension.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    try:
        return common_name, decode_grant(raw)
    except ValueError:
        return common_name, None
