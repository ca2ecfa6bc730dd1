"""Optional OpenTelemetry spans: one trace per workflow, a span per task, a child span per attempt.

Off unless configured: with the ``otel`` extra installed (``pip install 'corral[otel]'``) and the
standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) set, the
controller exports over OTLP/gRPC (``OTEL_SERVICE_NAME`` names the service, default
``corral-controller``; the exporter reads the other ``OTEL_EXPORTER_OTLP_*`` variables itself).

How: the spans are built from the committed event log, not from live hooks. The metrics' commit
observer hands every committed entry to :meth:`WorkflowTracer.feed`, which keeps the entries of
unfinished workflows; when a workflow ends, its whole trace is built at once with the times the
event log recorded (a workflow span from its first entry to its end, a task span from the task's
first entry to its last, an attempt span from the entry that names the attempt first to the one
that names it last, every entry a span event). So nothing in the core knows about tracing, a span
is never left open by a crash, and the cost while tracing is off is one ``is None`` check per
commit. Memory is bounded: at most ``max_workflows`` unfinished workflows are followed, and
``max_events`` entries each (the rest of a huge workflow is counted, not traced).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from corral.controller.core.model import WorkflowEvent

__all__ = ["WorkflowTracer", "from_environment"]

log = logging.getLogger("corral.controller.tracing")

_WORKFLOW_END = frozenset({"completed", "failed", "cancelled"})
_ERROR_KINDS = frozenset({"failed", "lost", "fenced", "poison"})


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class WorkflowTracer:
    """Turns each finished workflow's event-log entries into one trace (see the module docstring)."""

    def __init__(self, tracer: Tracer, *, max_workflows: int = 10_000, max_events: int = 100_000) -> None:
        self.tracer = tracer
        self.max_workflows = max_workflows
        self.max_events = max_events
        self.pending: dict[str, list[WorkflowEvent]] = {}
        self.dropped = 0  # entries not traced (bounds)
        self.traces = 0

    def feed(self, events: Iterable[WorkflowEvent]) -> None:
        """Committed entries, in order; a workflow's trace is exported once it ends."""
        pending = self.pending
        for event in events:
            kept = pending.get(event.workflow_id)
            if kept is None:
                if len(pending) >= self.max_workflows:
                    self.dropped += 1
                    continue
                kept = pending[event.workflow_id] = []
            if len(kept) < self.max_events or not event.task_id:  # a workflow's own entries are few: kept
                kept.append(event)
            else:
                self.dropped += 1
            if not event.task_id and event.kind in _WORKFLOW_END:
                self._export(pending.pop(event.workflow_id))

    def _export(self, events: list[WorkflowEvent]) -> None:
        try:
            self._build(events)
            self.traces += 1
        except Exception:  # tracing must never cost a tick
            log.exception("tracing: could not build the trace of %s", events[0].workflow_id if events else "?")

    def _build(self, events: list[WorkflowEvent]) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        first, last = events[0], events[-1]
        root = self.tracer.start_span(
            "workflow",
            start_time=_ns(first.at),
            attributes={"corral.workflow_id": first.workflow_id},
        )
        tasks: dict[str, list[WorkflowEvent]] = {}
        for event in events:
            if event.task_id:
                tasks.setdefault(event.task_id, []).append(event)
            else:
                root.add_event(f"workflow {event.kind}", _attributes(event), _ns(event.at))
        root_context = trace.set_span_in_context(root)
        for task_id, entries in tasks.items():
            task_span = self.tracer.start_span(
                f"task {entries[0].task_name}",
                context=root_context,
                start_time=_ns(entries[0].at),
                attributes={
                    "corral.workflow_id": first.workflow_id,
                    "corral.task_id": task_id,
                    "corral.task": entries[0].task_name,
                },
            )
            self._attempts(task_span, entries)
            final = entries[-1]
            task_span.set_attribute("corral.state", final.kind)
            if final.kind in _ERROR_KINDS:
                task_span.set_status(Status(StatusCode.ERROR, final.reason or final.kind))
            task_span.end(end_time=_ns(final.at))
        root.set_attribute("corral.state", last.kind)
        if last.kind != "completed":
            root.set_status(Status(StatusCode.ERROR, last.reason or last.kind))
        root.end(end_time=_ns(last.at))

    def _attempts(self, task_span: Span, entries: list[WorkflowEvent]) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        context = trace.set_span_in_context(task_span)
        attempts: dict[str, list[WorkflowEvent]] = {}
        for event in entries:
            task_span.add_event(event.kind, _attributes(event), _ns(event.at))
            if event.attempt_id:
                attempts.setdefault(event.attempt_id, []).append(event)
        for attempt_id, named in attempts.items():
            span = self.tracer.start_span(
                "attempt",
                context=context,
                start_time=_ns(named[0].at),
                attributes={
                    "corral.attempt_id": attempt_id,
                    "corral.task_id": named[0].task_id,
                    "corral.workflow_id": named[0].workflow_id,
                    "corral.agent_id": named[-1].agent_id,
                },
            )
            for event in named:
                span.add_event(event.kind, _attributes(event), _ns(event.at))
            if named[-1].kind in _ERROR_KINDS or named[-1].kind in ("retry", "requeued", "preempted"):
                span.set_status(Status(StatusCode.ERROR, named[-1].reason or named[-1].kind))
            span.end(end_time=_ns(named[-1].at))


def _attributes(event: WorkflowEvent) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if event.reason:
        attributes["corral.reason"] = event.reason
    if event.agent_id:
        attributes["corral.agent_id"] = event.agent_id
    return attributes


def from_environment(environ: dict[str, str] | None = None) -> WorkflowTracer | None:
    """A tracer exporting over OTLP when ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` is set, else None.

    Logs a warning (and returns None) when an endpoint is set but the ``otel`` extra is missing.
    """
    env = os.environ if environ is None else environ
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: pip install 'corral[otel]'")
        return None
    service = env.get("OTEL_SERVICE_NAME") or "corral-controller"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    # The batch processor exports from its own thread: the state loop never waits for the collector.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    log.info("tracing: OTLP spans to %s as %s", endpoint, service)
    return WorkflowTracer(provider.get_tracer("corral.controller"))
