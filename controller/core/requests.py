"""The API's requests as events of the state machine: what each RPC asks of the core.

The servicers check a request at the edge (fields, sizes, permissions), turn it into one of these
frozen events and hand it to ``Runtime.handle``; :mod:`corral.controller.core.queries` holds their
handlers, registered in the machine's handler table. ``READ = True`` marks the events that change
no stored record: they keep being answered while the store refuses writes (a full disk).

Ids arrive as the caller typed them (a full id, a unique prefix, an agent's name) and are resolved
inside the handler, in the tick, so what they name cannot change in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from corral.controller.core import events as ev
from corral.controller.core.access import AuditEntry
from corral.controller.core.model import AgentState, WorkflowState

__all__ = [
    "AgentQuery",
    "Caller",
    "CancelRequest",
    "CreateNamespaceRequest",
    "CreateTokenRequest",
    "DeleteSecretRequest",
    "DrainRequest",
    "EventsQuery",
    "ExplainQuery",
    "JoinRequest",
    "ListAgentsQuery",
    "ListNamespacesQuery",
    "ListQuotasQuery",
    "ListRevokedCertsQuery",
    "ListSecretsQuery",
    "ListTokensQuery",
    "ListWorkflowsQuery",
    "LogsQuery",
    "PauseRequest",
    "PlanQuery",
    "RecordAudit",
    "ReportRequest",
    "ResumeRequest",
    "RevokeCertRequest",
    "RevokeTokenRequest",
    "SetNamespaceQuotaRequest",
    "SetSecretRequest",
    "StartRequest",
    "SubmitRequest",
    "WorkflowQuery",
]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks, as far as the core needs to know: a name for messages and the namespaces it covers.

    Empty ``namespaces``: every namespace (an admin, or auth off).
    """

    name: str = "dev"
    namespaces: tuple[str, ...] = ()

    def covers(self, namespace: str) -> bool:
        """Whether the caller may see and act in ``namespace``."""
        return not self.namespaces or namespace in self.namespaces


# --- workflows ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """Store a submission (SubmitWorkflow, ScheduleTask). ``secrets_field``: the path its secret
    references are reported under ("spec" or "task"). Answers ``(workflow, deduplicated)``."""

    submission: ev.SubmitWorkflow
    secrets_field: str = "spec"


@dataclass(frozen=True, slots=True)
class StartRequest:
    """ExecuteWorkflow. With ``wait`` an ended workflow is not started again (its result is asked for)."""

    workflow: str
    caller: Caller
    wait: bool = False


@dataclass(frozen=True, slots=True)
class CancelRequest:
    workflow: str
    caller: Caller
    force: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PauseRequest:
    workflow: str
    caller: Caller


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    workflow: str
    caller: Caller


@dataclass(frozen=True, slots=True)
class WorkflowQuery:
    """The workflow ``workflow`` names, if the caller may see it."""

    READ: ClassVar[bool] = True
    workflow: str
    caller: Caller


@dataclass(frozen=True, slots=True)
class ListWorkflowsQuery:
    """A page of workflows, newest first. Answers ``(page, more)``."""

    READ: ClassVar[bool] = True
    caller: Caller
    states: frozenset[WorkflowState] = frozenset()
    name_prefix: str = ""
    namespace: str = ""  # "": every namespace the caller covers
    offset: int = 0
    limit: int = 100


@dataclass(frozen=True, slots=True)
class PlanQuery:
    """The dependency graph of a stored workflow: ``(names, dependency names, durations)``."""

    READ: ClassVar[bool] = True
    workflow: str
    caller: Caller


@dataclass(frozen=True, slots=True)
class LogsQuery:
    """The task and the attempt whose output is asked for (``attempt_id`` "": the latest)."""

    READ: ClassVar[bool] = True
    task: str
    caller: Caller
    attempt_id: str = ""


@dataclass(frozen=True, slots=True)
class EventsQuery:
    """A workflow's id and, with ``task`` (an id, a prefix or a name in it), the task's id."""

    READ: ClassVar[bool] = True
    workflow: str
    caller: Caller
    task: str = ""


# --- tasks and workers ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExplainQuery:
    """Why a task is (not) running: ``(task, explanation)``."""

    READ: ClassVar[bool] = True
    task: str
    caller: Caller


@dataclass(frozen=True, slots=True)
class ReportRequest:
    """An external worker's CompleteTask/FailTask; ``caller`` must be the one that pulled the attempt."""

    finished: ev.AttemptFinished
    caller: Caller


# --- agents ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListAgentsQuery:
    READ: ClassVar[bool] = True
    states: frozenset[AgentState] = frozenset()


@dataclass(frozen=True, slots=True)
class AgentQuery:
    """An agent by id, name or unique id prefix."""

    READ: ClassVar[bool] = True
    agent: str


@dataclass(frozen=True, slots=True)
class DrainRequest:
    agent: str
    grace_s: float = 30.0


# --- access: tokens, namespaces, secrets, certificates, audit ------------------------------------


@dataclass(frozen=True, slots=True)
class CreateTokenRequest:
    """A token whose text was made (and hashed) at the edge; ``ttl_s`` 0: it never expires."""

    token_id: str
    token_hash: str
    role: str
    namespaces: tuple[str, ...]
    created_by: str
    description: str = ""
    ttl_s: float = 0.0
    name_pattern: str = ""
    uses: int = 0
    labels: tuple[tuple[str, str], ...] = ()
    agent_types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ListTokensQuery:
    READ: ClassVar[bool] = True
    include_revoked: bool = False


@dataclass(frozen=True, slots=True)
class RevokeTokenRequest:
    """Answers ``(token, ids of the agents holding a credential it covers)``."""

    token: str


@dataclass(frozen=True, slots=True)
class CreateNamespaceRequest:
    name: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class ListNamespacesQuery:
    READ: ClassVar[bool] = True
    caller: Caller


@dataclass(frozen=True, slots=True)
class SetSecretRequest:
    namespace: str
    name: str
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class DeleteSecretRequest:
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class ListSecretsQuery:
    """``(namespace, name, updated_at)`` of the secrets of ``namespace`` ("": all the caller covers)."""

    READ: ClassVar[bool] = True
    caller: Caller
    namespace: str = ""


@dataclass(frozen=True, slots=True)
class RevokeCertRequest:
    """Answers ``(the revocation, ids of the agents with that name)``."""

    name: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ListRevokedCertsQuery:
    READ: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class RecordAudit:
    """One audit record, stored with the next commit."""

    entry: AuditEntry


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """An agent exchanges a join token (by hash) for a credential of its own (see ``rpc.join``).

    Answers the new credential's record, or ``(who, refusal)`` when the join token is known but
    refuses this agent: a refusal is returned, not raised, so it can be audited in a commit of
    its own while this request changes nothing.
    """

    join_hash: str
    name: str
    credential_id: str
    credential_hash: str
    method: str = "/corral.v1.AgentGateway/Join"


@dataclass(frozen=True, slots=True)
class SetNamespaceQuotaRequest:
    """Set a namespace's fair-share weight and quotas (validated by the RPC layer); answers the record."""

    name: str
    weight: float = 1.0
    max_cpu: float = 0.0
    max_memory_mb: int = 0
    max_gpu: int = 0
    max_running: int = 0


@dataclass(frozen=True, slots=True)
class ListQuotasQuery:
    """Every namespace the caller covers: usage vs quota, weight and dominant share (``fairshare.QuotaRow``)."""

    READ: ClassVar[bool] = True
    caller: Caller
