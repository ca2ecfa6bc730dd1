"""The one auth interceptor: who is calling (:mod:`identity`), may they (:mod:`permissions`), and the audit trail.

Every call but grpc health is resolved to a :class:`~corral.controller.rpc.identity.Principal`
from a bearer token (``authorization: Bearer …``: a client token or an agent's credential) or a
verified client certificate, checked against the permission table, and made current for the
handler with :func:`~corral.controller.rpc.identity.acting_as` (so the servicer, and any task it
starts, reads it with ``current_principal()``). Namespace checks need the target of a request and
happen in the servicers.

With auth off (the plaintext loopback default) nothing is resolved: every caller is ``DEV_ADMIN``
and only mutating calls are wrapped, for the audit log. The interceptor must sit inside the
:class:`~corral.controller.rpc.errors.ErrorInterceptor`, which turns its domain errors into
UNAUTHENTICATED and PERMISSION_DENIED.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc

from corral.controller.core.access import AuditEntry
from corral.controller.core.requests import Caller, RecordAudit
from corral.controller.errors import PermissionDenied, Unauthenticated
from corral.controller.rpc import identity, permissions, protocol_gate
from corral.controller.rpc.errors import code_name
from corral.controller.rpc.identity import ANONYMOUS, Grant, Principal
from corral.controller.runtime import Runtime
from corral.controller.secretbox import hash_token

__all__ = ["AuthInterceptor", "audit_target", "current_caller", "record_audit"]

log = logging.getLogger("corral.controller.auth")
audit_log = logging.getLogger("corral.audit")

_CONNECT = "/corral.v1.AgentGateway/Connect"
_JOIN = "/corral.v1.AgentGateway/Join"
_HEALTH = "/grpc.health.v1.Health/"
_MAX_CERT_CACHE = 1024
_MAX_TARGET = 128
# Request fields that name what a call acts on, in order of preference.
_TARGET_FIELDS = ("workflow_id", "task_id", "attempt_id", "agent_id", "token_id", "name", "schedule")


def audit_target(request: Any, response: Any = None) -> tuple[str, str]:
    """``(target id, namespace)`` of a request (and its response, which holds a new workflow's id)."""
    target = ""
    for name in _TARGET_FIELDS:
        value = getattr(request, name, "")
        if isinstance(value, str) and value:
            target = value
            break
    if not target and response is not None:
        for name in ("workflow_id", "task_id", "schedule_id"):
            value = getattr(response, name, "")
            if isinstance(value, str) and value:
                target = value
                break
    namespace = getattr(request, "namespace", "")
    spec = getattr(request, "spec", None)
    if not namespace and spec is not None:
        namespace = getattr(spec, "namespace", "") or "default"
    return target[:_MAX_TARGET], str(namespace)[:_MAX_TARGET]


def current_caller() -> Caller:
    """The current call's principal as the core sees it (a name for messages, the namespaces covered)."""
    principal = identity.current_principal()
    return Caller(principal.describe(), principal.namespaces)


def record_audit(runtime: Runtime, entry: AuditEntry, *, store: bool = True) -> None:
    """One structured log line, and (unless ``store`` is False) a record in the next commit."""
    audit_log.info(
        "audit principal=%s role=%s method=%s target=%s namespace=%s code=%s%s",
        entry.principal,
        entry.role or "-",
        entry.method,
        entry.target or "-",
        entry.namespace or "-",
        entry.code,
        f" detail={entry.detail!r}" if entry.detail else "",
    )
    if store:
        runtime.post_lazy(RecordAudit(entry)).add_done_callback(_seen)


def _seen(done: Any) -> None:
    # Nobody awaits an audit record: a refusal (storage full) is in the log line above already.
    if not done.cancelled():
        done.exception()


def _bearer(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("malformed authorization metadata: expected 'Bearer <token>'")
            return token.strip()
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authenticates, authorizes and audits every call (see the module docstring)."""

    def __init__(self, runtime: Runtime, *, enabled: bool) -> None:
        self.rt = runtime
        self.enabled = enabled
        self._certs: dict[bytes, tuple[str, Grant | None]] = {}

    # --- who is calling ---------------------------------------------------------------------------

    def _certificate(self, context: Any) -> tuple[str, Grant | None] | None:
        auth_context = context.auth_context()
        pems = auth_context.get("x509_pem_cert")
        if not pems:
            return None
        cached = self._certs.get(pems[0])
        if cached is None:
            found = identity.peer_certificate(auth_context)
            if found is None:
                return None
            if len(self._certs) >= _MAX_CERT_CACHE:
                self._certs.clear()
            cached = self._certs[pems[0]] = found
        return cached

    def principal(self, method: str, metadata: Sequence[tuple[str, Any]] | None, context: Any) -> Principal:
        """The authenticated caller; Unauthenticated when there is none (or it is revoked)."""
        # The one read of the machine outside handle(): every call is authenticated before it is
        # admitted, and a trip through the state loop per call would double the latency of all of
        # them. It only looks up access records, on the loop's own thread, and changes nothing;
        # a change the loop has not committed yet can only make it stricter (a revocation), never
        # admit anyone (a new token's text is returned only after its commit).
        access = self.rt.machine.access
        cert = self._certificate(context)
        if cert is not None and cert[0] in access.revoked_certs:
            raise Unauthenticated(f"certificate {cert[0][:_MAX_TARGET]!r} is revoked")
        token_text = _bearer(metadata)
        if token_text is not None:
            token = access.authenticate(hash_token(token_text), self.rt.clock())
            if token is None:
                raise Unauthenticated("the bearer token is unknown, expired or revoked")
            if token.kind == "agent":
                grant = Grant("agent", token.namespaces, dict(token.labels), token.agent_types)
                return Principal("agent", token.agent_name, grant)
            if token.kind == "join":
                # A join token is only good for AgentGateway/Join, which does not look at metadata.
                return Principal("token", token.id, Grant("join"))
            return Principal("token", token.id, Grant(token.role, token.namespaces))
        if cert is not None:
            name, cert_grant = cert
            if cert_grant is None:
                # A certificate without our extension: an agent with no labels, on the agent stream only.
                if method == _CONNECT:
                    return Principal("agent", name, Grant("agent"))
                return Principal("cert", name, Grant(""))
            return Principal("agent" if cert_grant.role == "agent" else "cert", name, cert_grant)
        raise Unauthenticated(
            f"no credentials for {permissions.short_method(method)}: send 'authorization: Bearer <token>' "
            "(corral --token / CORRAL_TOKEN) or a client certificate"
        )

    def admit(self, method: str, metadata: Sequence[tuple[str, Any]] | None, context: Any) -> Principal:
        """Authenticate and check the permission table; the principal the handler runs as."""
        permission = permissions.permission_of(method)
        if permission == permissions.PUBLIC:
            return ANONYMOUS
        principal = self.principal(method, metadata, context)
        short = permissions.short_method(method)
        if permission is None:
            raise PermissionDenied(f"{short} has no entry in the permission table; nobody may call it")
        if principal.kind == "agent" and permission != permissions.CONNECT:
            raise PermissionDenied(f"agents may only call AgentGateway/Connect, not {short}; {principal.describe()}")
        if permission == permissions.AUTHENTICATED:
            return principal
        if not permissions.allowed(principal.role, permission):
            roles = " or ".join(permissions.roles_with(permission))
            held = f"is {principal.role}" if principal.role else "has no role"
            raise PermissionDenied(f"needs role {roles} for {short}; {principal.describe()} {held}")
        return principal

    # --- the audit trail --------------------------------------------------------------------------

    def _where(self, request: Any, response: Any = None) -> tuple[str, str]:
        target, namespace = audit_target(request, response)
        if not namespace and target:
            # A call naming a workflow or task by id: record the namespace it lives in (a lookup
            # for the audit line, like the authentication above; it changes nothing).
            machine = self.rt.machine
            found = machine.workflows.get(target) or machine.tasks.get(target)
            namespace = found.namespace if found is not None else ""
        return target, namespace

    def _audit(self, principal: Principal, method: str, request: Any, response: Any, code: str) -> None:
        target, namespace = self._where(request, response)
        entry = AuditEntry(
            at=self.rt.clock(),
            principal=principal.describe(),
            role=principal.role,
            method=method,
            target=target,
            namespace=namespace,
            code=code,
        )
        record_audit(self.rt, entry)

    def _refused(self, method: str, request: Any, exc: Exception, principal: Principal | None) -> None:
        """A call stopped at the door. Only authenticated callers are stored (anonymous ones could
        fill the database); every refusal of a mutating call is logged."""
        target, namespace = self._where(request)
        who = principal or ANONYMOUS
        entry = AuditEntry(
            self.rt.clock(), who.describe(), who.role, method, target, namespace, code_name(exc), str(exc)[:256]
        )
        record_audit(self.rt, entry, store=principal is not None)

    # --- the interceptor --------------------------------------------------------------------------

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        handler = protocol_gate.gate(handler, method, details.invocation_metadata)  # older than N-1: refused
        mutating = method in permissions.MUTATING and method != _JOIN  # Join audits itself, in its commit
        if handler is None or method.startswith(_HEALTH) or not (self.enabled or mutating):
            return handler
        metadata = details.invocation_metadata
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method, metadata, mutating),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._unary_stream(handler.unary_stream, method, metadata),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream_stream(handler.stream_stream, method, metadata),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return handler

    def _door(self, method: str, metadata: Any, context: Any, request: Any, mutating: bool) -> Principal:
        if not self.enabled:
            return identity.DEV_ADMIN
        try:
            return self.admit(method, metadata, context)
        except (Unauthenticated, PermissionDenied) as exc:
            if mutating:
                known = None
                if isinstance(exc, PermissionDenied):
                    try:
                        known = self.principal(method, metadata, context)
                    except Unauthenticated:
                        known = None
                self._refused(method, request, exc, known)
            raise

    def _unary(self, inner: Any, method: str, metadata: Any, mutating: bool) -> Any:
        async def unary_unary(request: Any, context: Any) -> Any:
            principal = self._door(method, metadata, context, request, mutating)
            with identity.acting_as(principal):
                if not mutating:
                    return await inner(request, context)
                try:
                    response = await inner(request, context)
                except Exception as exc:
                    self._audit(principal, method, request, None, code_name(exc))
                    raise
                self._audit(principal, method, request, response, "OK")
                return response

        return unary_unary

    def _unary_stream(self, inner: Any, method: str, metadata: Any) -> Any:
        async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            principal = self._door(method, metadata, context, request, False)
            token = identity._current.set(principal)
            try:
                async for item in inner(request, context):
                    yield item
            finally:
                _reset(token)

        return unary_stream

    def _stream_stream(self, inner: Any, method: str, metadata: Any) -> Any:
        async def stream_stream(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            principal = self._door(method, metadata, context, None, False)
            # Set for the call's task: the handler and every task it creates (they copy the context).
            token = identity._current.set(principal)
            try:
                async for item in inner(requests, context):
                    yield item
            finally:
                _reset(token)

        return stream_stream


def _reset(token: Any) -> None:
    # An async generator may be finalised in another context (e.g. by garbage collection); the
    # call's own context dies with its task then, so there is nothing left to reset.
    with contextlib.suppress(ValueError):
        identity._current.reset(token)
