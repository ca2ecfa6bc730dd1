"""Who may do what: namespaces, tokens, secrets, revoked certificates and the audit trail, as plain data.

Pure: no clock, no randomness, no cryptography. The edge hashes tokens and encrypts secrets before
they get here; this module only keeps the records, their indexes and the changes of the current
tick, which the machine hands to the store in the same commit as everything else. Decryption for
dispatch is injected (:attr:`AccessState.decrypt`), like the machine's id factory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from corral.controller.errors import AlreadyExists, NotFound

__all__ = [
    "DEFAULT_NAMESPACE",
    "AccessChanges",
    "AccessSnapshot",
    "AccessState",
    "AuditEntry",
    "Namespace",
    "RevokedCert",
    "Secret",
    "TokenRecord",
    "secret_env",
    "secret_refs",
]

DEFAULT_NAMESPACE = "default"


@dataclass(slots=True)
class Namespace:
    """A namespace: where workflows, secrets and (later) quotas live."""

    name: str
    description: str = ""
    created_at: float = 0.0
    # Fair share (fairshare.py): DRF weight, and quotas on running work (0: no limit).
    weight: float = 1.0
    max_cpu: float = 0.0
    max_memory_mb: int = 0
    max_gpu: int = 0
    max_running: int = 0
    # Issue 12: finished workflows deleted after this many seconds (0: kept forever); None: the
    # controller's --retain applies.
    retain_s: float | None = None


@dataclass(slots=True)
class TokenRecord:
    """A bearer credential, known only by the SHA-256 of its secret.

    ``kind`` is ``client`` (a role token), ``join`` (an agent join token: role ``agent``, with a
    name pattern, a use count and the grant given to agents that join) or ``agent`` (the
    credential one agent got from Join: ``agent_name`` is bound, ``parent`` is the join token).
    """

    id: str
    hash: str  # hex SHA-256 of the token text
    kind: str
    role: str
    namespaces: tuple[str, ...] = ()
    description: str = ""
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None
    created_by: str = ""
    name_pattern: str = ""
    uses: int = 0  # 0: unlimited
    used: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    agent_types: tuple[str, ...] = ()
    agent_name: str = ""
    parent: str = ""

    def live(self, now: float) -> bool:
        """Not revoked and not expired."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(slots=True)
class Secret:
    """A secret value of one namespace, encrypted by the edge (never plain text here)."""

    namespace: str
    name: str
    ciphertext: bytes
    updated_at: float = 0.0


@dataclass(slots=True)
class RevokedCert:
    """A certificate common name refused on every call."""

    name: str
    reason: str = ""
    revoked_at: float = 0.0


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited call: who, with which role, what, on which id, in which namespace, with what outcome."""

    at: float
    principal: str
    role: str
    method: str
    target: str = ""
    namespace: str = ""
    code: str = "OK"
    detail: str = ""
    seq: int = 0  # assigned by the store


@dataclass(slots=True)
class AccessChanges:
    """The access records changed in one tick (upserts, deletes, appends)."""

    namespaces: dict[str, Namespace] = field(default_factory=dict)
    tokens: dict[str, TokenRecord] = field(default_factory=dict)
    secrets: dict[tuple[str, str], Secret] = field(default_factory=dict)
    deleted_secrets: set[tuple[str, str]] = field(default_factory=set)
    revoked_certs: dict[str, RevokedCert] = field(default_factory=dict)
    audit: list[AuditEntry] = field(default_factory=list)
    audit_prune_before: float | None = None

    def size(self) -> int:
        return (
            len(self.namespaces)
            + len(self.tokens)
            + len(self.secrets)
            + len(self.deleted_secrets)
            + len(self.revoked_certs)
            + len(self.audit)
            + (self.audit_prune_before is not None)
        )

    def __bool__(self) -> bool:
        return self.size() > 0


@dataclass(slots=True)
class AccessSnapshot:
    """The stored access records (the audit trail is read on demand, not loaded)."""

    namespaces: list[Namespace] = field(default_factory=list)
    tokens: list[TokenRecord] = field(default_factory=list)
    secrets: list[Secret] = field(default_factory=list)
    revoked_certs: list[RevokedCert] = field(default_factory=list)


def secret_env(payload: bytes) -> list[tuple[str, str]]:
    """``(env variable, secret name)`` for each ``{"secret": NAME}`` value of a payload's ``env``."""
    if b'"secret"' not in payload:  # the common case, without parsing
        return []
    try:
        document = json.loads(payload)
    except ValueError:
        return []
    env = document.get("env") if isinstance(document, dict) else None
    if not isinstance(env, dict):
        return []
    return [
        (key, value["secret"])
        for key, value in env.items()
        if isinstance(value, dict) and isinstance(value.get("secret"), str)
    ]


def secret_refs(payload: bytes) -> tuple[str, ...]:
    """Names of the secrets a payload's ``env`` refers to as ``{"secret": NAME}``, each once."""
    return tuple(dict.fromkeys(name for _, name in secret_env(payload)))


def _no_decrypt(ciphertext: bytes) -> str:
    raise ValueError("this controller has no secret key")


class AccessState:
    """The access records in memory, their indexes, and this tick's changes."""

    def __init__(self) -> None:
        self.namespaces: dict[str, Namespace] = {DEFAULT_NAMESPACE: Namespace(DEFAULT_NAMESPACE)}
        self.tokens: dict[str, TokenRecord] = {}
        self.by_hash: dict[str, TokenRecord] = {}
        self.secrets: dict[tuple[str, str], Secret] = {}
        self.revoked_certs: dict[str, RevokedCert] = {}
        self.decrypt: Callable[[bytes], str] = _no_decrypt
        self._changes = AccessChanges()

    # --- boot and commit --------------------------------------------------------------------------

    def restore(self, snapshot: AccessSnapshot) -> None:
        for namespace in snapshot.namespaces:
            self.namespaces[namespace.name] = namespace
        for token in snapshot.tokens:
            self.tokens[token.id] = token
            self.by_hash[token.hash] = token
        for secret in snapshot.secrets:
            self.secrets[(secret.namespace, secret.name)] = secret
        for cert in snapshot.revoked_certs:
            self.revoked_certs[cert.name] = cert

    def take_changes(self) -> AccessChanges:
        changes, self._changes = self._changes, AccessChanges()
        return changes

    # --- namespaces -------------------------------------------------------------------------------

    def namespace(self, name: str) -> Namespace:
        found = self.namespaces.get(name)
        if found is None:
            raise NotFound(f"namespace {name[:128]!r} does not exist; create it with `corral namespace create {name}`")
        return found

    def create_namespace(self, name: str, description: str, now: float) -> Namespace:
        if name in self.namespaces:
            raise AlreadyExists(f"namespace {name!r} already exists")
        namespace = Namespace(name, description, now)
        self.namespaces[name] = namespace
        self._changes.namespaces[name] = namespace
        return namespace

    def set_quota(
        self, name: str, weight: float, max_cpu: float, max_memory_mb: int, max_gpu: int, max_running: int
    ) -> Namespace:
        """Set a namespace's fair-share weight and quotas (fairshare.py); it must exist."""
        namespace = self.namespace(name)
        namespace.weight, namespace.max_cpu, namespace.max_memory_mb = weight, max_cpu, max_memory_mb
        namespace.max_gpu, namespace.max_running = max_gpu, max_running
        self._changes.namespaces[name] = namespace
        return namespace

    def set_retention(self, name: str, retain_s: float | None) -> Namespace:
        """Set (None: drop) a namespace's own retention of finished workflows; it must exist."""
        namespace = self.namespace(name)
        namespace.retain_s = retain_s
        self._changes.namespaces[name] = namespace
        return namespace

    # --- tokens -----------------------------------------------------------------------------------

    def add_token(self, token: TokenRecord) -> TokenRecord:
        if token.id in self.tokens or token.hash in self.by_hash:
            raise AlreadyExists(f"token {token.id} already exists")
        self.tokens[token.id] = token
        self.by_hash[token.hash] = token
        self._changes.tokens[token.id] = token
        return token

    def touch_token(self, token: TokenRecord) -> None:
        self._changes.tokens[token.id] = token

    def revoke_token(self, token: TokenRecord, now: float) -> TokenRecord:
        if token.revoked_at is None:
            token.revoked_at = now
            self._changes.tokens[token.id] = token
        return token

    def authenticate(self, token_hash: str, now: float) -> TokenRecord | None:
        """The live token with that hash (an agent credential also needs its join token unrevoked)."""
        token = self.by_hash.get(token_hash)
        if token is None or not token.live(now):
            return None
        if token.parent:
            parent = self.tokens.get(token.parent)
            if parent is None or parent.revoked_at is not None:
                return None
        return token

    def has_admin_token(self, now: float) -> bool:
        return any(t.kind == "client" and t.role == "admin" and t.live(now) for t in self.tokens.values())

    # --- secrets ----------------------------------------------------------------------------------

    def set_secret(self, namespace: str, name: str, ciphertext: bytes, now: float) -> bool:
        """Store (or replace) a secret; True when it is new."""
        self.namespace(namespace)
        key = (namespace, name)
        created = key not in self.secrets
        secret = Secret(namespace, name, ciphertext, now)
        self.secrets[key] = secret
        self._changes.secrets[key] = secret
        self._changes.deleted_secrets.discard(key)
        return created

    def delete_secret(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        if key not in self.secrets:
            raise NotFound(f"secret {name[:128]!r} not found in namespace {namespace[:128]!r}")
        del self.secrets[key]
        self._changes.secrets.pop(key, None)
        self._changes.deleted_secrets.add(key)

    def missing_secrets(self, namespace: str, names: Iterable[str]) -> list[str]:
        return [name for name in names if (namespace, name) not in self.secrets]

    def reveal(self, namespace: str, names: Iterable[str]) -> dict[str, str]:
        """Plain values for dispatch; a value that does not decrypt is left out (the agent reports it)."""
        values: dict[str, str] = {}
        for name in names:
            secret = self.secrets.get((namespace, name))
            if secret is None:
                continue
            try:
                values[name] = self.decrypt(secret.ciphertext)
            except ValueError:
                continue
        return values

    # --- certificates and audit -------------------------------------------------------------------

    def revoke_cert(self, name: str, reason: str, now: float) -> RevokedCert:
        cert = self.revoked_certs.get(name)
        if cert is None:
            cert = RevokedCert(name, reason, now)
            self.revoked_certs[name] = cert
            self._changes.revoked_certs[name] = cert
        return cert

    def audit(self, entry: AuditEntry) -> None:
        self._changes.audit.append(entry)

    def prune_audit(self, before: float) -> None:
        self._changes.audit_prune_before = before
