"""Typed results of the Admin API: identity, tokens, namespaces, secrets, revoked certificates, audit."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime

from corral.controller.sdk.records import Record, timestamp
from corral.v1 import admin_pb2

__all__ = [
    "AuditRecord",
    "CreatedToken",
    "Identity",
    "NamespaceInfo",
    "RevokedCertificate",
    "SecretInfo",
    "TokenInfo",
]


@dataclasses.dataclass(frozen=True)
class Identity(Record):
    """Who the controller says the caller is (``principal`` is ``token:ID``, ``cert:NAME`` or ``dev``)."""

    principal: str
    role: str
    namespaces: tuple[str, ...]
    auth_enabled: bool

    @classmethod
    def from_proto(cls, m: admin_pb2.WhoAmIResponse) -> Identity:
        return cls(m.principal, m.role, tuple(m.namespaces), m.auth_enabled)


@dataclasses.dataclass(frozen=True)
class TokenInfo(Record):
    """A token as listed: never its secret. ``namespaces`` empty means every namespace."""

    token_id: str
    role: str
    namespaces: tuple[str, ...]
    description: str
    created_at: datetime | None
    expires_at: datetime | None
    revoked: bool
    created_by: str
    name_pattern: str
    uses: int
    used: int
    labels: Mapping[str, str]
    agent_types: tuple[str, ...]
    raw: admin_pb2.TokenInfo = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: admin_pb2.TokenInfo) -> TokenInfo:
        return cls(
            token_id=m.token_id,
            role=m.role,
            namespaces=tuple(m.namespaces),
            description=m.description,
            created_at=timestamp(m, "created_at"),
            expires_at=timestamp(m, "expires_at"),
            revoked=m.revoked,
            created_by=m.created_by,
            name_pattern=m.name_pattern,
            uses=m.uses,
            used=m.used,
            labels=dict(m.labels),
            agent_types=tuple(m.agent_types),
            raw=m,
        )


@dataclasses.dataclass(frozen=True)
class CreatedToken(Record):
    """A new token: ``token`` is shown only this once (the controller keeps only its hash)."""

    token: str = dataclasses.field(repr=False)
    info: TokenInfo

    @classmethod
    def from_proto(cls, m: admin_pb2.CreateTokenResponse) -> CreatedToken:
        return cls(m.token, TokenInfo.from_proto(m.info))


@dataclasses.dataclass(frozen=True)
class NamespaceInfo(Record):
    name: str
    description: str
    created_at: datetime | None

    @classmethod
    def from_proto(cls, m: admin_pb2.NamespaceInfo) -> NamespaceInfo:
        return cls(m.name, m.description, timestamp(m, "created_at"))


@dataclasses.dataclass(frozen=True)
class SecretInfo(Record):
    """A secret's name and when it was last set (values are never returned)."""

    namespace: str
    name: str
    updated_at: datetime | None

    @classmethod
    def from_proto(cls, m: admin_pb2.SecretInfo) -> SecretInfo:
        return cls(m.namespace, m.name, timestamp(m, "updated_at"))


@dataclasses.dataclass(frozen=True)
class RevokedCertificate(Record):
    name: str
    reason: str
    revoked_at: datetime | None

    @classmethod
    def from_proto(cls, m: admin_pb2.RevokedCertificate) -> RevokedCertificate:
        return cls(m.name, m.reason, timestamp(m, "revoked_at"))


@dataclasses.dataclass(frozen=True)
class AuditRecord(Record):
    """One audited call: who, with which role, which method, on what, and its outcome code."""

    seq: int
    at: datetime | None
    principal: str
    role: str
    method: str
    target: str
    namespace: str
    code: str
    detail: str

    @classmethod
    def from_proto(cls, m: admin_pb2.AuditRecord) -> AuditRecord:
        return cls(m.seq, timestamp(m, "at"), m.principal, m.role, m.method, m.target, m.namespace, m.code, m.detail)


@dataclasses.dataclass(frozen=True)
class QuotaInfo(Record):
    """A namespace's fair-share weight and quotas (0: no limit), its running usage and its shares."""

    namespace: str
    weight: float
    max_cpu: float
    max_memory_mb: int
    max_gpu: int
    max_running: int
    cpu: float = 0.0
    memory_mb: float = 0.0
    gpu: int = 0
    running: int = 0
    dominant_share: float = 0.0
    weighted_share: float = 0.0

    @classmethod
    def from_proto(cls, m: admin_pb2.QuotaUsage) -> QuotaInfo:
        q = m.quota
        return cls(
            m.namespace,
            q.weight,
            q.max_cpu,
            q.max_memory_mb,
            q.max_gpu,
            q.max_running,
            m.cpu,
            m.memory_mb,
            m.gpu,
            m.running,
            m.dominant_share,
            m.weighted_share,
        )
