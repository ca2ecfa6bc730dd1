"""ListWorkflows once workflows have left memory (issue 12): memory and the store, merged.

Memory holds every live workflow and the recently finished ones; the store holds every workflow
(commit before notify: nothing answered is newer than the store). A page is the newest-first
merge of both, memory winning for a workflow found in both. The store is read first, off the
loop; memory is read after, in the loop, so a workflow evicted or taken back in between is in at
least one of the two.
"""

from __future__ import annotations

import asyncio
import dataclasses

from corral.controller.core import requests as rq
from corral.controller.core.machine import Machine
from corral.controller.core.model import Workflow
from corral.controller.rpc import wire
from corral.controller.runtime import Runtime
from corral.controller.store.base import WorkflowQuery
from corral.v1 import types_pb2

__all__ = ["list_merged"]


def _stored_summary(workflow: Workflow, counts: dict[str, int]) -> types_pb2.WorkflowSummary:
    """The summary of a workflow read from the store, with task counts the store computed."""
    return types_pb2.WorkflowSummary(
        workflow_id=workflow.id,
        name=workflow.name,
        state=wire.WORKFLOW_STATE_TO_PB[workflow.state],
        task_counts=counts,
        task_total=len(workflow.task_ids),
        created_at=wire.timestamp(workflow.created_at),
        started_at=wire.timestamp(workflow.started_at),
        finished_at=wire.timestamp(workflow.finished_at),
        namespace=workflow.namespace,
    )


async def list_merged(rt: Runtime, event: rq.ListWorkflowsQuery) -> tuple[list[types_pb2.WorkflowSummary], bool]:
    """A page of :class:`ListWorkflowsQuery` over memory and the store, and whether more follow."""
    end = event.offset + event.limit
    namespaces = (event.namespace,) if event.namespace else event.caller.namespaces
    # Rows of workflows also in memory are dropped below: fetch enough to fill the page anyway.
    query = WorkflowQuery(
        namespaces=namespaces,
        states=event.states,
        name_prefix=event.name_prefix,
        limit=end + 1 + len(rt.machine.workflows),
    )
    stored = await asyncio.to_thread(rt.store.list_workflows, query)

    def merge(
        m: Machine, answer: tuple[list[Workflow], bool], now: float
    ) -> tuple[list[tuple[Workflow, types_pb2.WorkflowSummary | None]], bool]:
        live, _ = answer
        rows: list[tuple[Workflow, types_pb2.WorkflowSummary | None]] = [(w, wire.workflow_summary(m, w)) for w in live]
        rows.extend((w, None) for w in stored if w.id not in m.workflows)
        rows.sort(key=lambda row: (-row[0].created_at, row[0].id))
        return rows[event.offset : end], len(rows) > end

    page, more = await rt.post_event(dataclasses.replace(event, offset=0, limit=end + 1), merge)
    missing = [w.id for w, summary in page if summary is None]
    counts = await asyncio.to_thread(rt.store.task_counts, missing) if missing else {}
    return [
        summary or _stored_summary(w, {str(state): n for state, n in counts.get(w.id, {}).items() if n})
        for w, summary in page
    ], more
