"""Handlers of the API's request events (:mod:`corral.controller.core.requests`).

Each takes ``(event, now)`` and answers with domain values (records, explanations, tuples of
them); the servicers turn those into messages. Read handlers change nothing. Scoping lives here:
a caller sees only workflows and tasks of the namespaces it covers, and a prefix matches only
among those, so a prefix cannot probe another namespace; a full id of another namespace's
workflow is refused with PermissionDenied.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corral.controller.core import events as ev
from corral.controller.core import requests as rq
from corral.controller.core.access import AuditEntry, Namespace, RevokedCert, TokenRecord, secret_env
from corral.controller.core.cache import ClearCacheRequest
from corral.controller.core.fairshare import QuotaRow, quota_rows
from corral.controller.core.model import Agent, Task, TaskState, Workflow
from corral.controller.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    clip,
)

if TYPE_CHECKING:
    from corral.controller.core.machine import Explanation, Machine

__all__ = [
    "LogsAnswer",
    "agent_id_of",
    "check_secret_refs",
    "request_handlers",
    "require_namespace",
    "resolve",
    "visible_task",
    "visible_workflow",
]

_MAX_SHOWN = 5
_SHOWN = 128


@dataclass(frozen=True, slots=True)
class LogsAnswer:
    """Whose output a logs read returns: the task, the attempt ("" none yet), and whether that
    attempt has ended. ``unconfirmed``: an id asked for whose attempt left memory; the store must
    say it is the task's before its output is read (:mod:`core.settled`)."""

    task: Task
    attempt_id: str
    finished: bool
    unconfirmed: bool = False


def resolve(ids: Collection[str], typed: str, what: str, field: str) -> str:
    """The id equal to ``typed``, else the only one starting with it (``typed`` checked at the edge).

    NotFound when nothing matches; InvalidArgument naming some matches when the prefix is ambiguous.
    """
    if typed in ids:
        return typed  # the common case, without a scan
    if not typed:
        raise InvalidArgument.field(field, f"a {what} id is required")
    matches = [candidate for candidate in ids if candidate.startswith(typed)]
    if not matches:
        raise NotFound(f"{what} {clip(typed)!r} not found")
    if len(matches) > 1:
        shown = ", ".join(sorted(matches)[:_MAX_SHOWN])
        raise InvalidArgument.field(
            field, f"{what} prefix {clip(typed)!r} is ambiguous: {len(matches)} match ({shown} ...)"
        )
    return matches[0]


def require_namespace(caller: rq.Caller, namespace: str) -> None:
    """PermissionDenied unless ``caller`` may act in ``namespace``."""
    if not caller.covers(namespace):
        covered = ", ".join(caller.namespaces)
        raise PermissionDenied(f"namespace {namespace[:_SHOWN]!r} not covered by {caller.name} ({covered})")


def visible_workflow(machine: Machine, typed: str, caller: rq.Caller, field: str = "workflow_id") -> Workflow:
    """The workflow ``typed`` names (id or unique prefix), if the caller may see it."""
    workflows = machine.workflows
    if not caller.namespaces:
        return workflows[resolve(workflows, typed, "workflow", field)]
    found = workflows.get(typed)
    if found is not None:
        require_namespace(caller, found.namespace)
        return found
    mine = [wid for wid, w in workflows.items() if caller.covers(w.namespace)]
    return workflows[resolve(mine, typed, "workflow", field)]


def visible_task(machine: Machine, typed: str, caller: rq.Caller, field: str = "task_id") -> Task:
    """The task ``typed`` names (id or unique prefix), if the caller may see its workflow."""
    tasks = machine.tasks
    if not caller.namespaces:
        return tasks[resolve(tasks, typed, "task", field)]
    found = tasks.get(typed)
    if found is not None:
        require_namespace(caller, found.namespace)
        return found
    mine = [tid for tid, t in tasks.items() if caller.covers(t.namespace)]
    return tasks[resolve(mine, typed, "task", field)]


def agent_id_of(machine: Machine, typed: str) -> str:
    """An agent by id, name or unique id prefix."""
    for agent in machine.agents.values():
        if agent.name == typed:
            return agent.id
    return resolve(machine.agents, typed, "agent", "agent_id")


def check_secret_refs(machine: Machine, tasks: Iterable[Task], field: str) -> None:
    """InvalidArgument naming each ``field.tasks[i].payload_json.env.VAR`` whose secret does not exist.

    Runs inside the submitting request, so a secret deleted concurrently cannot slip between this
    check and the submission; one deleted later fails its task at dispatch instead.
    """
    violations: list[FieldViolation] = []
    secrets = machine.access.secrets
    for task in tasks:
        for variable, name in secret_env(task.payload):
            if (task.namespace, name) not in secrets:
                path = f"{field}.tasks[{task.index}]" if field != "task" else "task"
                violations.append(
                    FieldViolation(
                        f"{path}.payload_json.env.{variable}",
                        f"secret {name[:128]!r} does not exist in namespace {task.namespace!r}; "
                        f"create it with `corral secret set {task.namespace} {name[:128]}`",
                    )
                )
    if violations:
        raise InvalidArgument(violations)


class _Queries:
    """The handlers, bound to one machine."""

    def __init__(self, machine: Machine) -> None:
        self.m = machine

    # --- workflows --------------------------------------------------------------------------------

    def submit(self, event: rq.SubmitRequest, now: float) -> tuple[Workflow, bool]:
        m = self.m
        submission = event.submission
        m.access.namespace(submission.workflow.namespace)  # NOT_FOUND first, with its hint
        check_secret_refs(m, submission.tasks, event.secrets_field)
        workflow_id, deduplicated = m.submit(submission, now)
        return m.workflows[workflow_id], deduplicated

    def start(self, event: rq.StartRequest, now: float) -> Workflow:
        workflow = visible_workflow(self.m, event.workflow, event.caller)
        if not (event.wait and workflow.state.terminal):  # waiting on an ended one returns its result
            self.m.start(workflow.id, now)
        return workflow

    def cancel(self, event: rq.CancelRequest, now: float) -> Workflow:
        workflow = visible_workflow(self.m, event.workflow, event.caller)
        return self.m.cancel(ev.CancelWorkflow(workflow.id, event.force, event.reason), now)

    def pause(self, event: rq.PauseRequest, now: float) -> Workflow:
        return self.m.pause(visible_workflow(self.m, event.workflow, event.caller).id, now)

    def resume(self, event: rq.ResumeRequest, now: float) -> Workflow:
        return self.m.resume(visible_workflow(self.m, event.workflow, event.caller).id, now)

    def workflow(self, event: rq.WorkflowQuery, now: float) -> Workflow:
        workflow = visible_workflow(self.m, event.workflow, event.caller)
        if workflow.id in self.m.lifecycle.idle:  # read: idle from now (a result paged past --evict-after)
            self.m.lifecycle.moved(workflow.id, True, now)
        return workflow

    def list_workflows(self, event: rq.ListWorkflowsQuery, now: float) -> tuple[list[Workflow], bool]:
        caller, namespace = event.caller, event.namespace
        chosen = [
            w
            for w in self.m.workflows.values()
            if (not event.states or w.state in event.states)
            and w.name.startswith(event.name_prefix)
            and (w.namespace == namespace if namespace else caller.covers(w.namespace))
        ]
        chosen.sort(key=lambda w: (-w.created_at, w.id))
        end = event.offset + event.limit
        return chosen[event.offset : end], end < len(chosen)

    def plan(self, event: rq.PlanQuery, now: float) -> tuple[list[str], list[list[str]], list[float]]:
        tasks_by_id = self.m.tasks
        workflow = visible_workflow(self.m, event.workflow, event.caller)
        tasks = [tasks_by_id[t] for t in workflow.task_ids]
        return (
            [t.name for t in tasks],
            [[tasks_by_id[d].name for d in t.dependencies] for t in tasks],
            [t.estimated_duration_s for t in tasks],
        )

    def logs(self, event: rq.LogsQuery, now: float) -> LogsAnswer:
        task = visible_task(self.m, event.task, event.caller)
        wanted = event.attempt_id or task.current_attempt_id or ""
        attempt = self.m.attempts.get(wanted)
        if attempt is not None and attempt.task_id == task.id:
            return LogsAnswer(task, attempt.id, not attempt.state.active)
        if wanted and self.m.settled.away(task.workflow_id):
            # Its attempt left memory once committed (core/settled.py): the task's own final one is
            # known from the task; any other id the store must confirm before its output is read.
            return LogsAnswer(task, wanted, True, unconfirmed=wanted != task.current_attempt_id)
        if event.attempt_id:
            raise InvalidArgument.field("attempt_id", f"not an attempt of task {task.id}")
        return LogsAnswer(task, "", task.state.terminal)

    def events(self, event: rq.EventsQuery, now: float) -> tuple[str, str]:
        workflow = visible_workflow(self.m, event.workflow, event.caller)
        if not event.task:
            return workflow.id, ""
        by_name = self.m.by_name.get((workflow.id, event.task))
        if by_name is not None:
            return workflow.id, by_name
        return workflow.id, resolve(workflow.task_ids, event.task, "task", "task")

    # --- tasks and workers ------------------------------------------------------------------------

    def explain(self, event: rq.ExplainQuery, now: float) -> tuple[Task, Explanation]:
        task = visible_task(self.m, event.task, event.caller)
        return task, self.m.explain(task.id, now)

    def report(self, event: rq.ReportRequest, now: float) -> TaskState:
        m, report, caller = self.m, event.finished, event.caller
        attempt = m.attempts.get(report.attempt_id)
        if attempt is None:
            raise NotFound(f"attempt {clip(report.attempt_id)!r} not found")
        require_namespace(caller, m.tasks[attempt.task_id].namespace)
        # The fence: only the worker that pulled an attempt, with the same credential, reports
        # on it. An agent's attempt is reported by that agent over its own stream, never here.
        if not attempt.pulled:
            raise PermissionDenied(
                f"attempt {attempt.id} is held by agent {clip(attempt.agent_id)!r} over its stream; "
                "only that agent reports on it"
            )
        if attempt.agent_id != report.reporter:
            raise PermissionDenied(
                f"attempt {attempt.id} is held by worker {clip(attempt.agent_id)!r}; "
                f"report from worker {clip(report.reporter)!r} refused"
            )
        if attempt.principal and attempt.principal != caller.name:
            raise PermissionDenied(
                f"attempt {attempt.id} was pulled by {attempt.principal}; report from {caller.name} refused"
            )
        if not m.finished(report, now):
            raise FailedPrecondition(
                f"attempt {clip(report.attempt_id)} is {attempt.state} and held by {clip(attempt.agent_id)!r}; "
                f"report from {clip(report.reporter)!r} rejected"
            )
        return m.tasks[attempt.task_id].state

    # --- agents -----------------------------------------------------------------------------------

    def agents(self, event: rq.ListAgentsQuery, now: float) -> list[Agent]:
        agents = sorted(self.m.agents.values(), key=lambda a: a.name)
        return [a for a in agents if not event.states or a.state in event.states]

    def agent(self, event: rq.AgentQuery, now: float) -> Agent:
        return self.m.agents[agent_id_of(self.m, event.agent)]

    def drain(self, event: rq.DrainRequest, now: float) -> Agent:
        return self.m.drain(ev.DrainAgent(agent_id_of(self.m, event.agent), event.grace_s), now)

    # --- access -----------------------------------------------------------------------------------

    def create_token(self, event: rq.CreateTokenRequest, now: float) -> TokenRecord:
        access = self.m.access
        for namespace in event.namespaces:
            access.namespace(namespace)  # NOT_FOUND, with the command that creates it
        join = event.role == "agent"
        record = TokenRecord(
            id=event.token_id,
            hash=event.token_hash,
            kind="join" if join else "client",
            role=event.role,
            namespaces=event.namespaces,
            description=event.description,
            created_at=now,
            expires_at=now + event.ttl_s if event.ttl_s else None,
            created_by=event.created_by,
            name_pattern=event.name_pattern,
            uses=event.uses,
            labels=dict(event.labels),
            agent_types=event.agent_types or (("shell", "python") if join else ()),
        )
        return access.add_token(record)

    def tokens(self, event: rq.ListTokensQuery, now: float) -> list[TokenRecord]:
        tokens = sorted(self.m.access.tokens.values(), key=lambda t: (t.created_at, t.id))
        return [t for t in tokens if event.include_revoked or t.revoked_at is None]

    def revoke_token(self, event: rq.RevokeTokenRequest, now: float) -> tuple[TokenRecord, set[str]]:
        access = self.m.access
        token = access.tokens[resolve(access.tokens, event.token, "token", "token_id")]
        access.revoke_token(token, now)
        # Agents holding this credential (or one issued with this join token) lose their stream.
        names = {t.agent_name for t in access.tokens.values() if t.kind == "agent" and token.id in (t.id, t.parent)}
        return token, self._agents_named(names)

    def _agents_named(self, names: set[str]) -> set[str]:
        """Ids of the agents with one of these names (or ids)."""
        return {a.id for a in self.m.agents.values() if a.id in names or a.name in names} | names

    def create_namespace(self, event: rq.CreateNamespaceRequest, now: float) -> Namespace:
        return self.m.access.create_namespace(event.name, event.description, now)

    def namespaces(self, event: rq.ListNamespacesQuery, now: float) -> list[Namespace]:
        chosen = (n for n in self.m.access.namespaces.values() if event.caller.covers(n.name))
        return sorted(chosen, key=lambda n: n.name)

    def set_quota(self, event: rq.SetNamespaceQuotaRequest, now: float) -> Namespace:
        e = event
        return self.m.access.set_quota(e.name, e.weight, e.max_cpu, e.max_memory_mb, e.max_gpu, e.max_running)

    def quotas(self, event: rq.ListQuotasQuery, now: float) -> list[QuotaRow]:
        m = self.m
        rows = quota_rows(m.access.namespaces, m.views.values(), m.active, m.attempts, m.tasks)
        return [row for row in rows if event.caller.covers(row.namespace)]

    def set_secret(self, event: rq.SetSecretRequest, now: float) -> bool:
        return self.m.access.set_secret(event.namespace, event.name, event.ciphertext, now)

    def delete_secret(self, event: rq.DeleteSecretRequest, now: float) -> None:
        self.m.access.delete_secret(event.namespace, event.name)

    def secrets(self, event: rq.ListSecretsQuery, now: float) -> list[tuple[str, str, float]]:
        access, namespace, caller = self.m.access, event.namespace, event.caller
        if namespace:
            access.namespace(namespace)
        stored = access.secrets
        chosen = sorted(k for k in stored if (k[0] == namespace if namespace else caller.covers(k[0])))
        return [(ns, name, stored[(ns, name)].updated_at) for ns, name in chosen]

    def revoke_cert(self, event: rq.RevokeCertRequest, now: float) -> tuple[RevokedCert, set[str]]:
        return self.m.access.revoke_cert(event.name, event.reason, now), self._agents_named({event.name})

    def revoked_certs(self, event: rq.ListRevokedCertsQuery, now: float) -> list[RevokedCert]:
        return sorted(self.m.access.revoked_certs.values(), key=lambda c: c.name)

    def record_audit(self, event: rq.RecordAudit, now: float) -> None:
        self.m.access.audit(event.entry)

    def join(self, event: rq.JoinRequest, now: float) -> TokenRecord | tuple[str, PermissionDenied]:
        access, name = self.m.access, event.name
        token = access.authenticate(event.join_hash, now)
        if token is None or token.kind != "join":
            raise Unauthenticated("the join token is unknown, expired or revoked")
        who = f"token:{token.id}"
        # Refusals are returned, not raised: a request that raises must leave nothing behind, and
        # the refusal is audited by a request of its own.
        if token.name_pattern and not fnmatch.fnmatchcase(name, token.name_pattern):
            return who, PermissionDenied(
                f"agent name {name!r} does not match join token {token.id}'s pattern {token.name_pattern!r}"
            )
        if token.uses and token.used >= token.uses:
            return who, PermissionDenied(f"join token {token.id} has no uses left ({token.used} of {token.uses} used)")
        token.used += 1
        access.touch_token(token)
        record = TokenRecord(
            id=event.credential_id,
            hash=event.credential_hash,
            kind="agent",
            role="agent",
            namespaces=token.namespaces,
            description=f"credential of agent {name}",
            created_at=now,
            created_by=who,
            labels=dict(token.labels),
            agent_types=token.agent_types,
            agent_name=name,
            parent=token.id,
        )
        access.add_token(record)
        # Stored in the same commit as the credential.
        access.audit(AuditEntry(now, who, "agent", event.method, name, "", "OK", f"credential {record.id}"))
        return record


def request_handlers(machine: Machine) -> dict[type, Callable[[Any, float], Any]]:
    """The handler of every request event, for the machine's handler table."""
    q = _Queries(machine)
    return {
        rq.SubmitRequest: q.submit,
        rq.StartRequest: q.start,
        rq.CancelRequest: q.cancel,
        rq.PauseRequest: q.pause,
        rq.ResumeRequest: q.resume,
        rq.WorkflowQuery: q.workflow,
        rq.ListWorkflowsQuery: q.list_workflows,
        rq.PlanQuery: q.plan,
        rq.LogsQuery: q.logs,
        rq.EventsQuery: q.events,
        rq.ExplainQuery: q.explain,
        rq.ReportRequest: q.report,
        rq.ListAgentsQuery: q.agents,
        rq.AgentQuery: q.agent,
        rq.DrainRequest: q.drain,
        rq.CreateTokenRequest: q.create_token,
        rq.ListTokensQuery: q.tokens,
        rq.RevokeTokenRequest: q.revoke_token,
        rq.CreateNamespaceRequest: q.create_namespace,
        rq.ListNamespacesQuery: q.namespaces,
        rq.SetSecretRequest: q.set_secret,
        rq.DeleteSecretRequest: q.delete_secret,
        rq.ListSecretsQuery: q.secrets,
        rq.RevokeCertRequest: q.revoke_cert,
        rq.ListRevokedCertsQuery: q.revoked_certs,
        rq.RecordAudit: q.record_audit,
        rq.JoinRequest: q.join,
        rq.SetNamespaceQuotaRequest: q.set_quota,
        rq.ListQuotasQuery: q.quotas,
        ClearCacheRequest: lambda event, now: event.handle(machine, now),
    }
