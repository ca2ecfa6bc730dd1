"""Admin API: tokens, namespaces, secrets, certificate revocation and the audit log.

Every change goes through the runtime's state loop (one command, committed before the answer),
so a revoked token or certificate is refused from the very next call on. Token texts and secret
values never reach the state machine: tokens are hashed and secrets encrypted here, at the edge.
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import Any

from corral.controller.core import requests as rq
from corral.controller.core.access import Namespace, RevokedCert, TokenRecord
from corral.controller.core.cache import ClearCacheRequest
from corral.controller.core.fairshare import QuotaRow
from corral.controller.core.lifecycle import SetNamespaceRetention
from corral.controller.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from corral.controller.rpc import fields, quotas, wire
from corral.controller.rpc.auth import current_caller
from corral.controller.rpc.identity import current_principal
from corral.controller.rpc.scope import require_namespace
from corral.controller.runtime import Runtime
from corral.controller.secretbox import SecretBox, hash_token, new_token, new_token_id
from corral.controller.spec import NAME_PATTERN
from corral.v1 import admin_pb2 as pb
from corral.v1 import admin_pb2_grpc

__all__ = ["CLIENT_ROLES", "AdminService", "token_info", "token_request"]

CLIENT_ROLES = ("admin", "operator", "submitter", "viewer", "worker")
_NAME = re.compile(NAME_PATTERN)
_MAX_NAME = 128
_MAX_TEXT = 1024
_MAX_TTL_S = 10 * 365 * 86_400.0
_MAX_SECRET_BYTES = 64 * 1024
_MAX_LIST = 1000
_MAX_RETAIN_S = 100 * 365 * 86_400.0
_ALL = "*"  # a namespace list of just this: every namespace, for any role


def _name(value: str, field: str, what: str = "name") -> str:
    if not value or len(value) > _MAX_NAME or not _NAME.match(value):
        raise InvalidArgument.field(
            field, f"{what} must be 1-{_MAX_NAME} characters of letters, digits, '_', '.', '-' (not first)"
        )
    return value


def token_info(token: TokenRecord) -> pb.TokenInfo:
    return pb.TokenInfo(
        token_id=token.id,
        role=token.role,
        namespaces=token.namespaces,
        description=token.description,
        created_at=wire.timestamp(token.created_at),
        expires_at=wire.timestamp(token.expires_at),
        revoked=token.revoked_at is not None,
        created_by=token.created_by,
        name_pattern=token.name_pattern,
        uses=token.uses,
        used=token.used,
        labels=dict(token.labels),
        agent_types=token.agent_types,
    )


def _requested_scope(request: pb.CreateTokenRequest) -> tuple[str, ...]:
    """The namespaces a new token will cover (empty: every namespace); names checked, not existence."""
    given = list(request.namespaces)
    if given == [_ALL]:
        return ()
    if not given:
        # A narrow role without a namespace gets "default", not everything (least privilege).
        return () if request.role in ("admin", "operator") else ("default",)
    for i, namespace in enumerate(given):
        _name(namespace, f"namespaces[{i}]", "a namespace")
    return tuple(dict.fromkeys(given))


def _check_token_request(request: pb.CreateTokenRequest) -> None:
    if request.role not in (*CLIENT_ROLES, "agent"):
        raise InvalidArgument.field("role", f"must be one of {', '.join((*CLIENT_ROLES, 'agent'))}")
    if not math.isfinite(request.ttl_s) or not 0 <= request.ttl_s <= _MAX_TTL_S:
        raise InvalidArgument.field("ttl_s", f"must be between 0 (never expires) and {_MAX_TTL_S:g} seconds")
    if len(request.description) > _MAX_TEXT:
        raise InvalidArgument.field("description", f"longer than {_MAX_TEXT} characters")
    join_only = request.name_pattern or request.uses or request.labels or request.agent_types
    if request.role != "agent" and join_only:
        raise InvalidArgument.field(
            "role", "name_pattern, uses, labels and agent_types are for agent join tokens (role agent)"
        )
    if len(request.name_pattern) > _MAX_NAME or "\x00" in request.name_pattern:
        raise InvalidArgument.field("name_pattern", f"at most {_MAX_NAME} characters, no NUL")
    if request.uses < 0:
        raise InvalidArgument.field("uses", "must be >= 0 (0: unlimited)")
    for key, value in request.labels.items():
        _name(key, f"labels[{key[:_MAX_NAME]!r}]", "a label name")
        if len(value) > 256 or "\x00" in value:
            raise InvalidArgument.field(f"labels[{key!r}]", "a label value is at most 256 characters, no NUL")
    for i, agent_type in enumerate(request.agent_types):
        _name(agent_type, f"agent_types[{i}]", "an agent type")


def token_request(request: pb.CreateTokenRequest, token_hash: str, created_by: str) -> rq.CreateTokenRequest:
    """The request event that stores a new token (validated request, hash made at the edge)."""
    return rq.CreateTokenRequest(
        token_id=new_token_id(),
        token_hash=token_hash,
        role=request.role,
        namespaces=_requested_scope(request),
        created_by=created_by,
        description=request.description,
        ttl_s=request.ttl_s,
        name_pattern=request.name_pattern,
        uses=request.uses,
        labels=tuple(sorted(request.labels.items())),
        agent_types=tuple(request.agent_types),
    )


class AdminService(admin_pb2_grpc.AdminServicer):
    def __init__(self, runtime: Runtime, *, auth_enabled: bool, box: SecretBox | None) -> None:
        self.rt = runtime
        self.auth_enabled = auth_enabled
        self.box = box

    async def WhoAmI(self, request: pb.WhoAmIRequest, context: Any) -> pb.WhoAmIResponse:
        principal = current_principal()
        name = principal.kind if principal.kind in ("dev", "anonymous") else f"{principal.kind}:{principal.name}"
        return pb.WhoAmIResponse(
            principal=name, role=principal.role, namespaces=principal.namespaces, auth_enabled=self.auth_enabled
        )

    # --- tokens -----------------------------------------------------------------------------------

    async def CreateToken(self, request: pb.CreateTokenRequest, context: Any) -> pb.CreateTokenResponse:
        _check_token_request(request)
        text = new_token()
        token_hash = hash_token(text)
        principal = current_principal()
        created_by = principal.describe()

        # An admin limited to some namespaces hands out nothing wider than itself.
        wanted = _requested_scope(request)
        if principal.namespaces and (not wanted or not all(principal.covers(n) for n in wanted)):
            raise PermissionDenied(
                f"{created_by} covers only {', '.join(principal.namespaces)}; it cannot create a token for "
                f"{', '.join(wanted) or 'every namespace'}"
            )

        record: TokenRecord = await self.rt.handle(token_request(request, token_hash, created_by))
        return pb.CreateTokenResponse(token=text, info=token_info(record))

    async def ListTokens(self, request: pb.ListTokensRequest, context: Any) -> pb.ListTokensResponse:
        tokens: list[TokenRecord] = await self.rt.handle(rq.ListTokensQuery(request.include_revoked))
        return pb.ListTokensResponse(tokens=[token_info(t) for t in tokens])

    async def RevokeToken(self, request: pb.RevokeTokenRequest, context: Any) -> pb.RevokeTokenResponse:
        fields.identifier(request.token_id, "token_id", "token id")
        token, agents = await self.rt.handle(rq.RevokeTokenRequest(request.token_id))
        self._disconnect(agents)
        return pb.RevokeTokenResponse(info=token_info(token))

    def _disconnect(self, names: set[str]) -> None:
        """Close the live streams of these agents (by id): a revocation takes effect at once."""
        if not names:
            return
        for agent_id, session in list(self.rt.sessions.items()):
            if agent_id in names:
                session.close()

    # --- namespaces -------------------------------------------------------------------------------

    async def CreateNamespace(self, request: pb.CreateNamespaceRequest, context: Any) -> pb.CreateNamespaceResponse:
        name = _name(request.name, "name", "a namespace")
        if len(request.description) > _MAX_TEXT:
            raise InvalidArgument.field("description", f"longer than {_MAX_TEXT} characters")

        created: Namespace = await self.rt.handle(rq.CreateNamespaceRequest(name, request.description))
        return pb.CreateNamespaceResponse(namespace=_namespace_info(created))

    async def ListNamespaces(self, request: pb.ListNamespacesRequest, context: Any) -> pb.ListNamespacesResponse:
        namespaces: list[Namespace] = await self.rt.handle(rq.ListNamespacesQuery(current_caller()))
        return pb.ListNamespacesResponse(namespaces=[_namespace_info(n) for n in namespaces])

    async def SetNamespaceQuota(
        self, request: pb.SetNamespaceQuotaRequest, context: Any
    ) -> pb.SetNamespaceQuotaResponse:
        name = _name(request.name, "name", "a namespace")
        updated: Namespace = await self.rt.handle(quotas.quota_request(name, request.quota))
        return pb.SetNamespaceQuotaResponse(quota=quotas.quota_message(updated))

    async def ListQuotas(self, request: pb.ListQuotasRequest, context: Any) -> pb.ListQuotasResponse:
        rows: list[QuotaRow] = await self.rt.handle(rq.ListQuotasQuery(current_caller()))
        return pb.ListQuotasResponse(namespaces=[quotas.quota_usage(row) for row in rows])

    async def ClearCache(self, request: pb.ClearCacheRequest, context: Any) -> pb.ClearCacheResponse:
        """Issue 10: drop cached task results of a namespace (or of all the caller covers)."""
        if request.namespace:
            require_namespace(current_principal(), _name(request.namespace, "namespace", "a namespace"))
        event = ClearCacheRequest(current_caller(), request.namespace)
        cleared, remaining = await self.rt.handle(event)
        return pb.ClearCacheResponse(cleared=cleared, remaining=remaining)

    async def CollectGarbage(self, request: pb.CollectGarbageRequest, context: Any) -> pb.CollectGarbageResponse:
        """Issue 12: a retention pass now (``corral gc``), or only the list of what it would delete."""
        lifecycle = self.rt.lifecycle
        if lifecycle is None:
            raise FailedPrecondition("this controller runs without retention (no lifecycle)")
        report = await lifecycle.collect(dry_run=request.dry_run)
        return pb.CollectGarbageResponse(
            workflows=[
                pb.GarbageWorkflow(
                    workflow_id=w.id,
                    name=w.name,
                    namespace=w.namespace,
                    state=str(w.state),
                    finished_at=w.finished_at or 0.0,
                    task_total=len(w.task_ids),
                )
                for w in report.workflows
            ],
            deleted=report.deleted,
            dry_run=report.dry_run,
            retention=report.retention,
        )

    async def SetNamespaceRetention(
        self, request: pb.SetNamespaceRetentionRequest, context: Any
    ) -> pb.SetNamespaceRetentionResponse:
        """Issue 12: a namespace's own retention of finished workflows (or back to the default)."""
        name = _name(request.name, "name", "a namespace")
        if not math.isfinite(request.retain_s) or not 0 <= request.retain_s <= _MAX_RETAIN_S:
            raise InvalidArgument.field("retain_s", f"must be between 0 (forever) and {_MAX_RETAIN_S:g} seconds")
        if request.inherit and request.retain_s:
            raise InvalidArgument.field("inherit", "give a retention or inherit, not both")
        retain_s = None if request.inherit else request.retain_s
        await self.rt.handle(SetNamespaceRetention(name, retain_s))
        lifecycle = self.rt.lifecycle
        return pb.SetNamespaceRetentionResponse(retention=lifecycle.describe() if lifecycle is not None else "")

    # --- secrets ----------------------------------------------------------------------------------

    def _box(self) -> SecretBox:
        if self.box is None:
            raise FailedPrecondition("this controller has no secret key: start it with --secret-key-file PATH")
        return self.box

    async def SetSecret(self, request: pb.SetSecretRequest, context: Any) -> pb.SetSecretResponse:
        namespace = _name(request.namespace, "namespace", "a namespace")
        name = _name(request.name, "name", "a secret name")
        if len(request.value) > _MAX_SECRET_BYTES:
            raise InvalidArgument.field("value", f"{len(request.value)} bytes, over the {_MAX_SECRET_BYTES} limit")
        try:
            value = request.value.decode()
        except UnicodeDecodeError:
            raise InvalidArgument.field("value", "secrets become environment variables: UTF-8 text only") from None
        if "\x00" in value:
            raise InvalidArgument.field("value", "an environment variable cannot hold NUL")
        require_namespace(current_principal(), namespace)
        ciphertext = self._box().encrypt(value)
        del value

        created: bool = await self.rt.handle(rq.SetSecretRequest(namespace, name, ciphertext))
        return pb.SetSecretResponse(created=created)

    async def DeleteSecret(self, request: pb.DeleteSecretRequest, context: Any) -> pb.DeleteSecretResponse:
        namespace = _name(request.namespace, "namespace", "a namespace")
        name = _name(request.name, "name", "a secret name")
        require_namespace(current_principal(), namespace)
        await self.rt.handle(rq.DeleteSecretRequest(namespace, name))
        return pb.DeleteSecretResponse()

    async def ListSecrets(self, request: pb.ListSecretsRequest, context: Any) -> pb.ListSecretsResponse:
        namespace = request.namespace and _name(request.namespace, "namespace", "a namespace")
        if namespace:
            require_namespace(current_principal(), namespace)
        found: list[tuple[str, str, float]] = await self.rt.handle(rq.ListSecretsQuery(current_caller(), namespace))
        return pb.ListSecretsResponse(
            secrets=[pb.SecretInfo(namespace=ns, name=n, updated_at=wire.timestamp(at)) for ns, n, at in found]
        )

    # --- certificates -----------------------------------------------------------------------------

    async def RevokeCertificate(
        self, request: pb.RevokeCertificateRequest, context: Any
    ) -> pb.RevokeCertificateResponse:
        if not request.name or len(request.name) > 256 or "\x00" in request.name:
            raise InvalidArgument.field("name", "the certificate's common name: 1-256 characters, no NUL")
        if len(request.reason) > _MAX_TEXT:
            raise InvalidArgument.field("reason", f"longer than {_MAX_TEXT} characters")

        _, agents = await self.rt.handle(rq.RevokeCertRequest(request.name, request.reason))
        self._disconnect(agents)
        return pb.RevokeCertificateResponse()

    async def ListRevokedCertificates(
        self, request: pb.ListRevokedCertificatesRequest, context: Any
    ) -> pb.ListRevokedCertificatesResponse:
        certs: list[RevokedCert] = await self.rt.handle(rq.ListRevokedCertsQuery())
        return pb.ListRevokedCertificatesResponse(
            certificates=[
                pb.RevokedCertificate(name=c.name, reason=c.reason, revoked_at=wire.timestamp(c.revoked_at))
                for c in certs
            ]
        )

    # --- audit ------------------------------------------------------------------------------------

    async def ListAudit(self, request: pb.ListAuditRequest, context: Any) -> pb.ListAuditResponse:
        limit = request.limit or 100
        if not 0 < limit <= _MAX_LIST:
            raise InvalidArgument.field("limit", f"must be between 1 and {_MAX_LIST}")
        if len(request.principal) > 512:
            raise InvalidArgument.field("principal", "longer than 512 characters")
        since = wire.seconds_of(request.since) if request.HasField("since") else 0.0
        # A read of committed records on the store's reader connection: never waits behind a commit.
        entries = await asyncio.to_thread(self.rt.store.read_audit, since, request.principal, limit)
        return pb.ListAuditResponse(
            records=[
                pb.AuditRecord(
                    seq=e.seq,
                    at=wire.timestamp(e.at),
                    principal=e.principal,
                    role=e.role,
                    method=e.method,
                    target=e.target,
                    namespace=e.namespace,
                    code=e.code,
                    detail=e.detail,
                )
                for e in entries
            ]
        )


def _by_name(namespace: Namespace) -> str:
    return namespace.name


def _namespace_info(namespace: Namespace) -> pb.NamespaceInfo:
    return pb.NamespaceInfo(
        name=namespace.name, description=namespace.description, created_at=wire.timestamp(namespace.created_at)
    )
