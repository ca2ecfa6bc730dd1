"""The runtime's side of issue 12: evicted workflows read back on demand, retention, ``corral gc``.

The pure decisions live in :mod:`corral.controller.core.lifecycle`; this module does the I/O they
need, always off the state loop (``asyncio.to_thread`` on the store's reader connection), and
hands the results to the loop as events:

- :meth:`Lifecycle.readmit_for`: a request answered NotFound (or Evicted) that names a workflow,
  or a task, the store still holds: read the record, take it back in memory, and let the caller
  run the request again (:meth:`Runtime.handle` does that once).
- :meth:`Lifecycle.run`: once a second, find workflows past retention (their namespace's override
  or ``--retain``) and forget a small batch of them; each batch is one tick's commit. Then give
  SQLite's free pages back (incremental vacuum) and, after evictions, the interpreter's free lists
  (a full collection, after big ones) and the C heap (``malloc_trim``).
- :meth:`Lifecycle.collect`: the same pass on demand (``corral gc``), or only its list (dry run).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral.controller.core.lifecycle import Evicted, ForgetWorkflows, ReadmitWorkflow, retention_queries
from corral.controller.core.model import Workflow
from corral.controller.core.shrink import shrink_tables
from corral.controller.errors import CorralError, NotFound
from corral.controller.heaptrim import HEAP, HeapTrim
from corral.controller.store.base import WorkflowQuery

if TYPE_CHECKING:
    from corral.controller.runtime import Runtime

__all__ = ["GcReport", "Lifecycle"]

log = logging.getLogger("corral.controller.lifecycle")

_EVERY_S = 1.0
_BATCH = 100  # workflows forgotten per tick
_BATCH_TASKS = 20_000  # ... and at most this many of their tasks (a huge workflow goes alone)
_VACUUM_PAGES = 2_000  # 8 MiB of 4 KiB pages given back per pass
_MAX_GC = 10_000  # workflows one `corral gc` deletes (or lists) at most
# A full garbage collection follows an eviction that freed at least this many tasks, and at least
# as many as are still in memory (so its cost, which grows with what is live, stays below the
# eviction's own).
_COLLECT_MIN_TASKS = 5_000


@dataclass(slots=True)
class GcReport:
    """What a retention pass found and did: the workflows (past retention) and whether they went."""

    workflows: list[Workflow] = field(default_factory=list)
    deleted: int = 0
    dry_run: bool = False
    retention: str = ""  # the retention in words (for an answer that deletes nothing)


class Lifecycle:
    """Readmission, retention and garbage collection for one runtime (see the module docstring)."""

    def __init__(self, runtime: Runtime, retain_s: float = 0.0) -> None:
        self.rt = runtime
        self.retain_s = retain_s
        self._loading: dict[str, asyncio.Future[bool]] = {}
        self.heap: HeapTrim = HEAP
        self._evicted_seen = 0
        self._trim_due = False  # evictions happened since the last trim
        self._pass = asyncio.Lock()  # one retention pass at a time (the timer's or `corral gc`'s)
        self.forgotten = 0  # workflows deleted by retention since the start
        self.gc_collect: Callable[[], object] = gc.collect  # swapped by tests
        self.collect_min_tasks = _COLLECT_MIN_TASKS
        self.collections = 0  # full collections after evictions since the start
        self._tasks_peak = 0  # most tasks in memory since the last of them

    # --- on demand ------------------------------------------------------------------------------

    async def readmit_for(self, event: Any, missing: NotFound) -> bool:
        """Take back the workflow ``event`` names (by id, unique id prefix, or a task id) if the
        store holds it; False when there is nothing to take back."""
        if isinstance(missing, Evicted):
            return await self.readmit(missing.workflow_id)
        caller = getattr(event, "caller", None)
        namespaces: tuple[str, ...] = getattr(caller, "namespaces", ())
        typed = getattr(event, "workflow", None)
        if isinstance(typed, str) and typed:
            query = WorkflowQuery(namespaces=namespaces, id_prefix=typed, limit=2)
        else:
            task = getattr(event, "task", None)
            if not isinstance(task, str) or not task:
                return False
            query = WorkflowQuery(namespaces=namespaces, task_id=task, limit=1)
        found = await asyncio.to_thread(self.rt.store.list_workflows, query)
        exact = [w for w in found if w.id == typed]
        chosen = exact or (found if len(found) == 1 else [])
        if not chosen or chosen[0].id in self.rt.machine.workflows:
            return False  # not stored, ambiguous, or in memory already (the NotFound was real)
        return await self.readmit(chosen[0].id)

    async def readmit(self, workflow_id: str) -> bool:
        """Read a workflow from the store and take it back into memory (one read per workflow at a time)."""
        pending = self._loading.get(workflow_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._loading[workflow_id] = future
        try:
            forgets = self.rt.machine.lifecycle.forgets
            record = await asyncio.to_thread(self.rt.store.load_workflow, workflow_id)
            done = record is not None and bool(await self.rt.post_event(ReadmitWorkflow(record, forgets)))
            future.set_result(done)
            return done
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else needs the warning
            raise
        finally:
            del self._loading[workflow_id]

    # --- retention ------------------------------------------------------------------------------

    def _queries(self, limit: int) -> list[WorkflowQuery]:
        namespaces = self.rt.machine.access.namespaces.values()
        overrides = {n.name: n.retain_s for n in namespaces if n.retain_s is not None}
        return retention_queries(self.retain_s, overrides, self.rt.clock(), limit)

    def _due(self, queries: list[WorkflowQuery]) -> list[Workflow]:
        """Stored workflows past retention (runs in a thread)."""
        found: list[Workflow] = []
        for query in queries:
            found.extend(self.rt.store.list_workflows(query))
        return found

    async def collect(self, *, dry_run: bool = False, limit: int = _MAX_GC) -> GcReport:
        """One retention pass now: forget everything due (up to ``limit``), batch by batch; or only list it."""
        report = GcReport(dry_run=dry_run, retention=self.describe())
        async with self._pass:
            while len(report.workflows) < limit:
                queries = self._queries(min(_BATCH, limit - len(report.workflows)) if not dry_run else limit)
                if not queries:
                    break
                due = await asyncio.to_thread(self._due, queries)
                if dry_run:
                    report.workflows = due[:limit]
                    break
                batch = _batch(due)
                if not batch:
                    break
                forgotten = await self.rt.post_event(
                    ForgetWorkflows(tuple((w.id, w.namespace, w.idempotency_key or "") for w in batch))
                )
                gone = set(forgotten)
                report.workflows.extend(w for w in batch if w.id in gone)
                report.deleted += len(gone)
                self.forgotten += len(gone)
                full = len(batch) >= _BATCH or sum(len(w.task_ids) for w in batch) >= _BATCH_TASKS
                if len(gone) < len(batch) or not full:
                    break  # the rest is kept (running again), or there is no more
            if report.deleted:
                await self._give_back()
        return report

    def describe(self) -> str:
        """The retention in words: the default and the namespaces' overrides."""
        default = f"{self.retain_s:g}s" if self.retain_s > 0 else "forever"
        overrides = [
            f"{n.name}={(f'{n.retain_s:g}s' if n.retain_s else 'forever')}"
            for n in self.rt.machine.access.namespaces.values()
            if n.retain_s is not None
        ]
        return f"finished workflows kept {default}" + (f" ({', '.join(sorted(overrides))})" if overrides else "")

    async def _give_back(self) -> None:
        """Free pages back to the file system (SQLite, incremental) after deletions."""
        vacuum = getattr(self.rt.store, "incremental_vacuum", None)
        if vacuum is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(vacuum, _VACUUM_PAGES)

    async def run(self) -> None:
        """The retention timer: a pass every second (cancel to stop). Never raises."""
        while True:
            await asyncio.sleep(_EVERY_S)
            try:
                if self.rt.degraded is None and self._queries(1):
                    await self.collect(limit=_BATCH)
                await self.after_evictions()
            except CorralError as exc:  # the store refuses writes: the next pass tries again
                log.info("retention pass skipped: %s", exc)
            except Exception:  # a bug must not end retention for good
                log.exception("retention pass failed")

    async def after_evictions(self) -> None:
        """Give back what evictions freed (a pass of :meth:`run`): the interpreter's free lists and
        cyclic garbage after a big one, then the C heap."""
        in_memory = len(self.rt.machine.tasks)
        self._tasks_peak = max(self._tasks_peak, in_memory)
        evicted = self.rt.machine.lifecycle.evicted
        if evicted != self._evicted_seen:
            self._evicted_seen = evicted
            log.info("%d finished workflows left memory since the start", evicted)
            freed = self._tasks_peak - in_memory
            if freed >= self.collect_min_tasks and freed >= in_memory:
                # An evicted workflow's last records go to CPython's free lists (up to 2,000 tuples
                # of each size, dicts, lists, floats...), not back to pymalloc: each keeps a 1 MiB
                # arena of the run alive, and only a full collection empties them. The daemon's
                # thresholds (daemon.py) make full collections rare, and an idle controller never
                # reaches one: measured after a 200k-task workflow, 137 arenas before, 68 after,
                # -69 MiB of RSS (DECISIONS.md, "Memory, fourth wave: after idle").
                shrunk = shrink_tables(self.rt.machine)
                self.gc_collect()
                self.collections += 1
                log.debug("after evictions: %d bytes of emptied tables given back", shrunk)
                self._tasks_peak = in_memory
            self._trim_due = True
        if self._trim_due:
            # Evicted workflows' memory is freed in many small blocks; without a trim glibc keeps
            # much of it in the process (docs/DECISIONS.md). A trim skipped because another just
            # ran (a big submission's) is tried again next pass.
            self._trim_due = not await self.heap.trim()


def _batch(due: list[Workflow]) -> list[Workflow]:
    """The first workflows of ``due`` up to the batch bounds (at least one)."""
    chosen: list[Workflow] = []
    tasks = 0
    for workflow in due:
        if chosen and (len(chosen) >= _BATCH or tasks + len(workflow.task_ids) > _BATCH_TASKS):
            break
        chosen.append(workflow)
        tasks += len(workflow.task_ids)
    return chosen
