"""Rows of the access tables (namespaces, tokens, secrets, revoked certificates, audit), shared by both stores.

Like :mod:`codec`, a row is a tuple in the column order of :data:`ACCESS_COLUMNS` holding only
values SQLite stores natively; ``decode_x(encode_x(r)) == r``. Tokens are stored as their hash,
secrets as ciphertext: nothing here ever sees a plain credential or value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from corral.controller.core.access import AuditEntry, Namespace, RevokedCert, Secret, TokenRecord

__all__ = [
    "ACCESS_COLUMNS",
    "decode_audit",
    "decode_namespace",
    "decode_revoked",
    "decode_secret",
    "decode_token",
    "encode_audit",
    "encode_namespace",
    "encode_revoked",
    "encode_secret",
    "encode_token",
]

#: Columns per access table, in row order (they match migration 2 of the SQLite store).
ACCESS_COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    # weight .. max_running: migration 8 (fair share).
    "namespaces": (
        "name",
        "description",
        "created_at",
        "weight",
        "max_cpu",
        "max_memory_mb",
        "max_gpu",
        "max_running",
        "retain_s",
    ),
    "tokens": (
        "id",
        "hash",
        "kind",
        "role",
        "namespaces",
        "description",
        "created_at",
        "expires_at",
        "revoked_at",
        "created_by",
        "name_pattern",
        "uses",
        "used",
        "labels",
        "agent_types",
        "agent_name",
        "parent",
    ),
    "secrets": ("namespace", "name", "ciphertext", "updated_at"),
    "revoked_certs": ("name", "reason", "revoked_at"),
    "audit": ("seq", "at", "principal", "role", "method", "target", "namespace", "code", "detail"),
}

_dumps: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False, sort_keys=True).encode


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    return value


def encode_namespace(n: Namespace) -> tuple[Any, ...]:
    return (
        _str(n.name, "namespace name"),
        _str(n.description, "description"),
        float(n.created_at),
        float(n.weight),
        float(n.max_cpu),
        int(n.max_memory_mb),
        int(n.max_gpu),
        int(n.max_running),
        None if n.retain_s is None else float(n.retain_s),
    )


def decode_namespace(row: Sequence[Any]) -> Namespace:
    retain_s = None if row[8] is None else float(row[8])
    return Namespace(
        row[0], row[1], row[2], float(row[3]), float(row[4]), int(row[5]), int(row[6]), int(row[7]), retain_s
    )


def encode_token(t: TokenRecord) -> tuple[Any, ...]:
    return (
        _str(t.id, "token id"),
        _str(t.hash, "token hash"),
        t.kind,
        t.role,
        _dumps(list(t.namespaces)),
        t.description,
        float(t.created_at),
        t.expires_at,
        t.revoked_at,
        t.created_by,
        t.name_pattern,
        int(t.uses),
        int(t.used),
        _dumps(dict(t.labels)),
        _dumps(list(t.agent_types)),
        t.agent_name,
        t.parent,
    )


def decode_token(row: Sequence[Any]) -> TokenRecord:
    return TokenRecord(
        id=row[0],
        hash=row[1],
        kind=row[2],
        role=row[3],
        namespaces=tuple(json.loads(row[4])),
        description=row[5],
        created_at=row[6],
        expires_at=row[7],
        revoked_at=row[8],
        created_by=row[9],
        name_pattern=row[10],
        uses=row[11],
        used=row[12],
        labels=json.loads(row[13]),
        agent_types=tuple(json.loads(row[14])),
        agent_name=row[15],
        parent=row[16],
    )


def encode_secret(s: Secret) -> tuple[Any, ...]:
    if type(s.ciphertext) is not bytes:
        raise TypeError("secret ciphertext must be bytes")
    return (_str(s.namespace, "namespace"), _str(s.name, "secret name"), s.ciphertext, float(s.updated_at))


def decode_secret(row: Sequence[Any]) -> Secret:
    return Secret(row[0], row[1], row[2], row[3])


def encode_revoked(c: RevokedCert) -> tuple[Any, ...]:
    return (_str(c.name, "certificate name"), c.reason, float(c.revoked_at))


def decode_revoked(row: Sequence[Any]) -> RevokedCert:
    return RevokedCert(row[0], row[1], row[2])


def encode_audit(a: AuditEntry) -> tuple[Any, ...]:
    """Row without ``seq`` (the store numbers entries as it appends them)."""
    return (float(a.at), a.principal, a.role, a.method, a.target, a.namespace, a.code, a.detail)


def decode_audit(row: Sequence[Any]) -> AuditEntry:
    return AuditEntry(
        at=row[1],
        principal=row[2],
        role=row[3],
        method=row[4],
        target=row[5],
        namespace=row[6],
        code=row[7],
        detail=row[8],
        seq=row[0],
    )
