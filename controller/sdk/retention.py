"""SDK methods of issue 12's retention (a mixin of :class:`~corral.controller.sdk.client.Client`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from corral.v1 import admin_pb2

__all__ = ["GarbageWorkflow", "GcResult", "RetentionMixin"]


@dataclass(frozen=True, slots=True)
class GarbageWorkflow:
    """A finished workflow past retention: deleted, or (dry run) due."""

    workflow_id: str
    name: str
    namespace: str
    state: str
    finished_at: float  # epoch seconds
    task_total: int


@dataclass(frozen=True, slots=True)
class GcResult:
    """What ``corral gc`` found and did."""

    workflows: tuple[GarbageWorkflow, ...]
    deleted: int
    dry_run: bool
    retention: str  # the retention in force, in words


class RetentionMixin:
    """``collect_garbage`` and ``set_namespace_retention`` (admin role)."""

    async def _call(self, service: str, method: str, request: Message, *, timeout: float | bool | None = True) -> Any:
        raise NotImplementedError  # Client's

    async def collect_garbage(self, *, dry_run: bool = False) -> GcResult:
        """Run a retention pass now: delete the finished workflows past retention (at most 10,000),
        with their tasks, attempts, logs and events; ``dry_run`` only lists them."""
        response = await self._call(
            "admin", "CollectGarbage", admin_pb2.CollectGarbageRequest(dry_run=dry_run), timeout=False
        )
        return GcResult(
            tuple(
                GarbageWorkflow(w.workflow_id, w.name, w.namespace, w.state, w.finished_at, w.task_total)
                for w in response.workflows
            ),
            int(response.deleted),
            bool(response.dry_run),
            str(response.retention),
        )

    async def set_namespace_retention(self, namespace: str, retain_s: float | None) -> str:
        """Keep a namespace's finished workflows ``retain_s`` seconds (0: forever; None: the
        controller's ``--retain`` again). Returns the retention in force, in words."""
        request = admin_pb2.SetNamespaceRetentionRequest(
            name=namespace, retain_s=retain_s or 0.0, inherit=retain_s is None
        )
        response = await self._call("admin", "SetNamespaceRetention", request)
        return str(response.retention)
