"""The one table of who may call what: every RPC's full method name -> a permission, each role -> its permissions.

The auth interceptor looks every call up here. A method missing from :data:`METHODS` is denied
(fail closed), and a test derives the list of RPCs from the .proto descriptors, so a new RPC
without a rule fails the build instead of going unguarded. Namespace scoping is not in this
table: the servicers check it after resolving the workflow a request names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = [
    "AUTHENTICATED",
    "METHODS",
    "MUTATING",
    "PUBLIC",
    "ROLE_PERMISSIONS",
    "allowed",
    "permission_of",
    "roles_with",
    "short_method",
]

# Permissions. PUBLIC needs no credentials at all; AUTHENTICATED any valid credential.
PUBLIC: Final = "public"
AUTHENTICATED: Final = "authenticated"
READ: Final = "read"
SUBMIT: Final = "submit"  # submit, execute, cancel, pause, resume, ScheduleTask
DRAIN: Final = "agents.drain"
PULL: Final = "worker.pull"  # the Scheduler pull API
CONNECT: Final = "agent.connect"
WHOAMI: Final = "whoami"
ADMIN: Final = "admin"  # tokens, namespaces, secrets, certificate revocation, audit

_O = "/corral.v1.Orchestrator/"
_S = "/corral.v1.Scheduler/"
_G = "/corral.v1.AgentGateway/"
_C = "/corral.v1.Cluster/"
_A = "/corral.v1.Admin/"

#: Every RPC of every service the controller serves, and the permission it needs.
METHODS: Final[Mapping[str, str]] = {
    _O + "SubmitWorkflow": SUBMIT,
    _O + "ExecuteWorkflow": SUBMIT,
    _O + "CancelWorkflow": SUBMIT,
    _O + "PauseWorkflow": SUBMIT,
    _O + "ResumeWorkflow": SUBMIT,
    _O + "GetWorkflowStatus": READ,
    _O + "ListWorkflows": READ,
    _O + "WatchWorkflow": READ,
    _O + "GetExecutionPlan": READ,
    _O + "GetTaskLogs": READ,
    _O + "GetWorkflowEvents": READ,
    _O + "RetryWorkflow": SUBMIT,
    _O + "RerunWorkflow": SUBMIT,
    _O + "ListRuns": READ,
    _O + "ResolveApproval": SUBMIT,  # the role that may cancel workflows (issue 10)
    _O + "ListAttempts": READ,
    _O + "AppendTasks": SUBMIT,  # issue 13: audited once per upload, by the servicer (not in MUTATING)
    _S + "ScheduleTask": SUBMIT,
    _S + "GetNextTask": PULL,
    _S + "CompleteTask": PULL,
    _S + "FailTask": PULL,
    _S + "AnalyzeDependencies": READ,
    _S + "ExplainTask": READ,
    _G + "Connect": CONNECT,
    _G + "Join": PUBLIC,  # carries its join token in the request
    _C + "ListAgents": READ,
    _C + "GetAgent": READ,
    _C + "DrainAgent": DRAIN,
    _C + "CordonAgent": DRAIN,  # issue 11: whoever may drain an agent may cordon or remove it
    _C + "UncordonAgent": DRAIN,
    _C + "RemoveAgent": DRAIN,
    _A + "WhoAmI": WHOAMI,
    _A + "ListNamespaces": READ,
    _A + "CreateToken": ADMIN,
    _A + "ListTokens": ADMIN,
    _A + "RevokeToken": ADMIN,
    _A + "CreateNamespace": ADMIN,
    _A + "SetSecret": ADMIN,
    _A + "DeleteSecret": ADMIN,
    _A + "ListSecrets": ADMIN,
    _A + "RevokeCertificate": ADMIN,
    _A + "ListRevokedCertificates": ADMIN,
    _A + "ListAudit": ADMIN,
    _A + "SetNamespaceQuota": ADMIN,
    _A + "ListQuotas": READ,
    _A + "ClearCache": SUBMIT,  # issue 10: whoever may run work in a namespace may make it run again
    _A + "CollectGarbage": ADMIN,  # issue 12: deletes finished workflows of every namespace
    _A + "SetNamespaceRetention": ADMIN,
    "/corral.v1.Schedules/CreateSchedule": SUBMIT,
    "/corral.v1.Schedules/ListSchedules": READ,
    "/corral.v1.Schedules/PauseSchedule": SUBMIT,
    "/corral.v1.Schedules/ResumeSchedule": SUBMIT,
    "/corral.v1.Schedules/DeleteSchedule": SUBMIT,
    # Kubernetes probes and load balancers have no credentials.
    "/grpc.health.v1.Health/Check": PUBLIC,
    "/grpc.health.v1.Health/Watch": PUBLIC,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": AUTHENTICATED,
}

_EVERYTHING_BUT_AGENTS = frozenset({READ, SUBMIT, DRAIN, PULL, WHOAMI, ADMIN})

#: What each role may do. Agents (principals of kind "agent") may only hold their stream open.
ROLE_PERMISSIONS: Final[Mapping[str, frozenset[str]]] = {
    "admin": _EVERYTHING_BUT_AGENTS,
    "operator": frozenset({READ, WHOAMI, DRAIN}),
    "submitter": frozenset({READ, WHOAMI, SUBMIT}),
    "viewer": frozenset({READ, WHOAMI}),
    "worker": frozenset({PULL, WHOAMI}),
    "agent": frozenset({CONNECT}),
}

#: Calls that change state: audited (who, what, which id, outcome).
MUTATING: Final = frozenset(
    {
        _O + "SubmitWorkflow",
        _O + "ExecuteWorkflow",
        _O + "CancelWorkflow",
        _O + "PauseWorkflow",
        _O + "ResumeWorkflow",
        _O + "RetryWorkflow",
        _O + "RerunWorkflow",
        _O + "ResolveApproval",
        _S + "ScheduleTask",
        _S + "CompleteTask",
        _S + "FailTask",
        _G + "Join",
        _C + "DrainAgent",
        _C + "CordonAgent",
        _C + "UncordonAgent",
        _C + "RemoveAgent",
        _A + "CreateToken",
        _A + "RevokeToken",
        _A + "CreateNamespace",
        _A + "SetSecret",
        _A + "DeleteSecret",
        _A + "RevokeCertificate",
        _A + "SetNamespaceQuota",
        _A + "ClearCache",
        _A + "CollectGarbage",
        _A + "SetNamespaceRetention",
        "/corral.v1.Schedules/CreateSchedule",
        "/corral.v1.Schedules/PauseSchedule",
        "/corral.v1.Schedules/ResumeSchedule",
        "/corral.v1.Schedules/DeleteSchedule",
    }
)


def permission_of(method: str) -> str | None:
    """The permission a full method name needs; None for a method nobody may call."""
    return METHODS.get(method)


def allowed(role: str, permission: str) -> bool:
    """Whether ``role`` holds ``permission`` (AUTHENTICATED and PUBLIC are not role questions)."""
    return permission in ROLE_PERMISSIONS.get(role, frozenset())


def roles_with(permission: str) -> tuple[str, ...]:
    """The roles holding a permission, for "needs role X or Y" messages."""
    return tuple(role for role, held in ROLE_PERMISSIONS.items() if permission in held)


def short_method(method: str) -> str:
    """``/corral.v1.Orchestrator/SubmitWorkflow`` -> ``Orchestrator/SubmitWorkflow``."""
    service, _, name = method.lstrip("/").rpartition("/")
    return f"{service.rsplit('.', 1)[-1]}/{name}"
