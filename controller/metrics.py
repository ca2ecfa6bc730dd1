"""The controller's Prometheus metrics, in prometheus-client's default registry (``REGISTRY``).

The controller's HTTP port (``--http``) serves them at ``/metrics``. Nothing here runs inside
the pure core: the runtime hands every committed tick to :meth:`ControllerMetrics.committed`
(counters from the tick's event-log entries, commit latency and size), the gRPC interceptor
:class:`RpcMetricsInterceptor` times calls and counts open streams, and the gauges (tasks by
state, queue depth, agents, capacity and usage) are computed from the machine when scraped, which
costs nothing between scrapes.

Why hand-rolled counters and histograms under a custom collector rather than prometheus-client's
``Counter``/``Histogram`` objects: those take a lock per update, and the runtime updates these on
its single event-loop thread for every placement; a plain ``int`` increment and one ``bisect``
cost a fraction of that. The collector renders them as ordinary counter and histogram families,
so scrapers see no difference.

Names follow Prometheus conventions: ``corral_`` prefix, base units (seconds, bytes), ``_total``
on counters.
"""

from __future__ import annotations

import logging
import time
import weakref
from bisect import bisect_left
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from corral.controller.rpc.errors import code_name
from corral.controller.tracing import WorkflowTracer, from_environment

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from corral.controller.core.machine import Machine
    from corral.controller.core.model import WorkflowEvent
    from corral.controller.runtime import Runtime
    from corral.controller.store.base import ChangeBatch

__all__ = ["METRICS", "ControllerMetrics", "LeanHistogram", "RpcMetricsInterceptor", "attach", "register"]

log = logging.getLogger("corral.controller.metrics")
# Workflow changes at info, task changes at debug: the committed event log as log lines.
events_log = logging.getLogger("corral.controller.events")

# Seconds: 0.5 ms .. 60 s, the spread of a commit (one fsync) to a long queue wait.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Records per commit (ChangeBatch.size()): one heartbeat tick to a 20k-task submission.
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000)


class LeanHistogram:
    """A histogram for one thread (the event loop): a bisect and two additions per observation."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound falls in that bound's bucket (le = "less or equal").
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs ending with ``+Inf``, as the text format wants them."""
        pairs: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            pairs.append((_float_text(bound), float(running)))
        pairs.append(("+Inf", float(self.count)))
        return pairs


def _float_text(value: float) -> str:
    return repr(float(value))


class ControllerMetrics:
    """Every controller metric; one per process, registered in ``REGISTRY`` by :func:`register`.

    Counters are cumulative for the process (Prometheus handles restarts through ``rate``); the
    gauges read the runtime last attached (tests may start several controllers in one process).
    """

    def __init__(self) -> None:
        self._runtime: weakref.ref[Runtime] | None = None
        self.events: dict[str, int] = {}  # task event-log kind -> entries committed
        self.workflow_events: Counter[str] = Counter()  # the same for workflow-level entries
        self.commit_seconds = LeanHistogram(LATENCY_BUCKETS)
        self.commit_records = LeanHistogram(BATCH_BUCKETS)
        self.schedule_latency = LeanHistogram(LATENCY_BUCKETS)
        self.rpc: dict[tuple[str, str], LeanHistogram] = {}  # (method, code) -> latency
        self.streams: Counter[str] = Counter()  # method -> open streams
        self.streams_opened: Counter[str] = Counter()
        self.tracer: WorkflowTracer | None = None  # OpenTelemetry spans, when configured (tracing.py)

    # --- updates (runtime and interceptor) -------------------------------------------------------

    def attach(self, runtime: Runtime) -> None:
        """Read gauges from ``runtime`` and count its commits."""
        self._runtime = weakref.ref(runtime)
        runtime.on_commit = self.committed

    def committed(self, machine: Machine, changes: ChangeBatch, seconds: float) -> None:
        """One committed tick: its size, how long the commit took, and its event-log entries.

        Never raises (it runs after the commit, where an exception would fail the loop's tick).
        """
        try:
            self.commit_seconds.observe(seconds)
            self.commit_records.observe(changes.size())
            events = changes.events
            if not events:
                return
            counts = self.events
            tasks = machine.tasks
            latency = self.schedule_latency
            debug = events_log.isEnabledFor(logging.DEBUG)  # once per commit, not per event
            for event in events:
                kind = event.kind
                if not event.task_id:  # a workflow's change: a handful per workflow
                    self.workflow_events[kind] += 1
                    _log_event(logging.INFO, event)
                    continue
                try:  # a plain dict: a Counter's += measured about twice as slow here
                    counts[kind] += 1
                except KeyError:
                    counts[kind] = 1
                if kind == "placed":
                    # Schedule latency: from the moment the task became ready to its placement.
                    task = tasks.get(event.task_id)
                    if task is not None and task.ready_at is not None:
                        latency.observe(max(0.0, event.at - task.ready_at))
                if debug:
                    _log_event(logging.DEBUG, event)
            if self.tracer is not None:
                self.tracer.feed(events)
        except Exception:  # metrics must never cost a tick
            log.exception("metrics: could not count a commit")

    def rpc_done(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        histogram = self.rpc.get(key)
        if histogram is None:
            histogram = self.rpc[key] = LeanHistogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    # --- scrape ----------------------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return ()  # unchecked: the families are computed at scrape time

    def collect(self) -> Iterable[Metric]:
        """The families, computed now (prometheus-client's collector protocol)."""
        from corral.controller.metrics_families import families  # see register()

        runtime = self._runtime() if self._runtime is not None else None
        yield from families(self, runtime)


def _log_event(level: int, event: WorkflowEvent) -> None:
    """One log line per committed event-log entry, with its ids as fields (``--log-format json``)."""
    fields = {"workflow_id": event.workflow_id, "kind": event.kind}
    if event.task_id:
        fields.update(task_id=event.task_id, task=event.task_name)
    if event.attempt_id:
        fields["attempt_id"] = event.attempt_id
    if event.agent_id:
        fields["agent_id"] = event.agent_id
    if event.reason:
        fields["reason"] = event.reason
    what = "task" if event.task_id else "workflow"
    events_log.log(level, "%s %s", what, event.kind, extra=fields)


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Times unary calls by method and status code, and counts open streams by method.

    Innermost of the server's interceptors, so it sees a handler's exception before the error
    interceptor turns it into a status (its code is named the same way, :func:`code_name`).
    """

    def __init__(self, metrics: ControllerMetrics) -> None:
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = str(handler_call_details.method)
        metrics = self.metrics
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = time.perf_counter()
                code = "OK"
                try:
                    return await inner_uu(request, context)
                except BaseException as exc:
                    code = code_name(exc)
                    raise
                finally:
                    metrics.rpc_done(method, code, time.perf_counter() - started)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                metrics.streams[method] += 1
                metrics.streams_opened[method] += 1
                try:
                    async for item in inner_us(request, context):
                        yield item
                finally:
                    metrics.streams[method] -= 1

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream is not None:
            inner_ss = handler.stream_stream

            async def stream_stream(
                requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                metrics.streams[method] += 1
                metrics.streams_opened[method] += 1
                try:
                    async for item in inner_ss(requests, context):
                        yield item
                finally:
                    metrics.streams[method] -= 1

            return grpc.stream_stream_rpc_method_handler(
                stream_stream, handler.request_deserializer, handler.response_serializer
            )
        return handler


METRICS = ControllerMetrics()
_registered = False


def register() -> None:
    """Register :data:`METRICS` in prometheus-client's ``REGISTRY`` (once per process).

    Called by the HTTP server, the only place that renders them: prometheus-client (with the
    wsgiref, http and email modules it imports) is ~2 MiB of a controller's RSS, which a controller
    without ``--http`` never needs (docs/DECISIONS.md, "Fifteenth wave").
    """
    global _registered
    if not _registered:
        from prometheus_client import REGISTRY

        REGISTRY.register(METRICS)  # a collector by protocol (collect, describe)
        _registered = True


def attach(runtime: Runtime) -> ControllerMetrics:
    """Feed :data:`METRICS` from ``runtime`` (gauges read from it, its commits counted).

    Also turns on OpenTelemetry spans when the environment configures an OTLP endpoint.
    """
    METRICS.attach(runtime)
    if METRICS.tracer is None:
        METRICS.tracer = from_environment()
    return METRICS
