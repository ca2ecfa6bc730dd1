"""Namespace scoping of requests: a caller sees and touches only workflows (and tasks) of its namespaces.

The permission table says what a role may do; these checks say where. They run inside runtime
commands, after the id a caller typed has been resolved. A prefix only ever matches among the
caller's own namespaces, so a prefix cannot be used to probe for another namespace's ids; a full
id of another namespace's workflow is answered PERMISSION_DENIED.
"""

from __future__ import annotations

from corral.controller.core.machine import Machine
from corral.controller.core.model import Task, Workflow
from corral.controller.errors import PermissionDenied
from corral.controller.rpc.identity import Principal
from corral.controller.rpc.lookup import resolve

__all__ = ["require_namespace", "visible_task", "visible_workflow"]

_SHOWN = 128


def require_namespace(principal: Principal, namespace: str) -> None:
    """PermissionDenied unless ``principal`` may act in ``namespace``."""
    if not principal.covers(namespace):
        covered = ", ".join(principal.namespaces)
        raise PermissionDenied(f"namespace {namespace[:_SHOWN]!r} not covered by {principal.describe()} ({covered})")


def visible_workflow(machine: Machine, typed: str, principal: Principal, field: str = "workflow_id") -> Workflow:
    """The workflow ``typed`` names (id or unique prefix), if the principal may see it."""
    workflows = machine.workflows
    if not principal.namespaces:
        return workflows[resolve(workflows, typed, "workflow", field)]
    found = workflows.get(typed)
    if found is not None:
        require_namespace(principal, found.namespace)
        return found
    mine = [wid for wid, w in workflows.items() if principal.covers(w.namespace)]
    return workflows[resolve(mine, typed, "workflow", field)]


def visible_task(machine: Machine, typed: str, principal: Principal, field: str = "task_id") -> Task:
    """The task ``typed`` names (id or unique prefix), if the principal may see its workflow."""
    tasks = machine.tasks
    if not principal.namespaces:
        return tasks[resolve(tasks, typed, "task", field)]
    found = tasks.get(typed)
    if found is not None:
        require_namespace(principal, found.namespace)
        return found
    mine = [tid for tid, t in tasks.items() if principal.covers(t.namespace)]
    return tasks[resolve(mine, typed, "task", field)]
