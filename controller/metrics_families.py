"""The controller's metrics as Prometheus families, computed at scrape time.

Imported only when something scrapes (the HTTP server's ``/metrics``, tests): prometheus-client
stays out of a controller that serves no HTTP (:func:`corral.controller.metrics.register`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

if TYPE_CHECKING:
    from corral.controller.core.machine import Machine
    from corral.controller.metrics import ControllerMetrics
    from corral.controller.runtime import Runtime

__all__ = ["families"]

# Task event-log kinds (core/state.py and friends) counted under their own metric names, besides
# corral_task_events_total{kind}: the ones operators alert on.
_NAMED_COUNTERS = (
    ("placed", "corral_placements_total", "Tasks placed on an agent (attempts assigned)."),
    ("preempted", "corral_preemptions_total", "Running attempts preempted for a higher-priority task."),
    ("retry", "corral_retries_total", "Failed attempts retried (a new attempt of the task follows)."),
    ("cache_hit", "corral_cache_hits_total", "Tasks completed from the result cache without running."),
    ("requeued", "corral_requeues_total", "Attempts lost with their agent (or given back) and requeued."),
)
_RESOURCES = (
    ("cpu_cores", "cpu_cores", 1.0),
    ("memory_bytes", "memory_mb", float(1 << 20)),
    ("gpus", "gpu_count", 1.0),
)


def families(metrics: ControllerMetrics, runtime: Runtime | None) -> Iterator[Metric]:
    """Every family of ``metrics``; the machine's gauges too when a runtime is attached."""
    yield from _counters(metrics)
    yield from _histograms(metrics)
    yield _streams(metrics)
    if runtime is not None:
        yield from _machine_gauges(runtime.machine)
        up = GaugeMetricFamily("corral_store_degraded", "1 while the store refuses writes (degraded mode).")
        up.add_metric([], 1.0 if runtime.degraded is not None else 0.0)
        yield up


def _counters(metrics: ControllerMetrics) -> Iterator[Metric]:
    for kind, name, doc in _NAMED_COUNTERS:
        family = CounterMetricFamily(name.removesuffix("_total"), doc)
        family.add_metric([], float(metrics.events.get(kind, 0)))
        yield family
    fires = CounterMetricFamily("corral_schedule_fires", "Workflows started by a cron schedule or at a set time.")
    fires.add_metric([], float(metrics.workflow_events.get("fired", 0)))
    yield fires
    workflows = CounterMetricFamily(
        "corral_workflow_events", "Workflow event-log entries committed, by kind.", labels=["kind"]
    )
    for kind, n in sorted(metrics.workflow_events.items()):
        workflows.add_metric([kind], float(n))
    yield workflows
    every = CounterMetricFamily(
        "corral_task_events", "Event-log entries committed, by kind (placed, completed, ...).", labels=["kind"]
    )
    for kind, n in sorted(metrics.events.items()):
        every.add_metric([kind], float(n))
    yield every
    opened = CounterMetricFamily("corral_rpc_streams_opened", "Streaming calls started.", labels=["method"])
    for method, n in sorted(metrics.streams_opened.items()):
        opened.add_metric([method], float(n))
    yield opened


def _histograms(metrics: ControllerMetrics) -> Iterator[Metric]:
    for name, doc, histogram in (
        ("corral_commit_duration_seconds", "Time to commit one tick's changes to the store.", metrics.commit_seconds),
        ("corral_commit_batch_records", "Records committed per tick (group commit size).", metrics.commit_records),
        (
            "corral_schedule_latency_seconds",
            "Time from a task becoming ready to its placement on an agent.",
            metrics.schedule_latency,
        ),
    ):
        family = HistogramMetricFamily(name, doc)
        family.add_metric([], histogram.buckets(), histogram.sum)
        yield family
    rpc = HistogramMetricFamily(
        "corral_rpc_duration_seconds", "Unary gRPC calls served, by method and code.", labels=["method", "code"]
    )
    for (method, code), histogram in sorted(metrics.rpc.items()):
        rpc.add_metric([method, code], histogram.buckets(), histogram.sum)
    yield rpc


def _streams(metrics: ControllerMetrics) -> Metric:
    family = GaugeMetricFamily(
        "corral_rpc_streams", "Open streaming calls (agent streams, watches), by method.", labels=["method"]
    )
    for method, n in sorted(metrics.streams.items()):
        family.add_metric([method], float(n))
    return family


def _machine_gauges(machine: Machine) -> Iterator[Metric]:
    """Gauges read from the machine at scrape time (on the event loop, between ticks)."""
    by_state: Counter[str] = Counter()
    for counts in machine.counts.values():
        for task_state, n in counts.items():
            if n:
                by_state[task_state.value] += n
    yield _by_state("corral_tasks", "Tasks the controller holds, by state.", by_state)
    workflows = Counter(workflow.state.value for workflow in machine.workflows.values())
    yield _by_state("corral_workflows", "Workflows the controller holds, by state.", workflows)
    queue = GaugeMetricFamily(
        "corral_queue_depth", "Ready tasks waiting in the controller's queue, by agent type.", labels=["agent_type"]
    )
    for agent_type in sorted(machine.queue.agent_types()):
        queue.add_metric([agent_type], float(machine.queue.ready_count(agent_type)))
    yield queue
    yield from _agent_gauges(machine)


def _by_state(name: str, documentation: str, counts: Counter[str]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=["state"])
    for state, n in sorted(counts.items()):
        family.add_metric([state], float(n))
    return family


def _agent_gauges(machine: Machine) -> Iterator[Metric]:
    agents = Counter(agent.state.value for agent in machine.agents.values())
    yield _by_state("corral_agents", "Agents the controller knows, by state.", agents)
    capacity = GaugeMetricFamily(
        "corral_agent_capacity",
        "What an online agent offers, by resource (slots, cpu_cores, memory_bytes, gpus).",
        labels=["agent", "resource"],
    )
    allocated = GaugeMetricFamily(
        "corral_agent_allocated",
        "What is allocated on an online agent to its active attempts, by resource.",
        labels=["agent", "resource"],
    )
    for agent_id in sorted(machine.views):
        view = machine.views[agent_id]
        capacity.add_metric([agent_id, "slots"], float(view.slots))
        allocated.add_metric([agent_id, "slots"], float(min(view.outstanding, view.slots)))
        for label, field, scale in _RESOURCES:
            capacity.add_metric([agent_id, label], float(getattr(view.capacity, field)) * scale)
            allocated.add_metric([agent_id, label], float(getattr(view.allocated, field)) * scale)
    yield capacity
    yield allocated
    cordoned = GaugeMetricFamily("corral_agents_cordoned", "Agents getting no new work (cordoned).")
    cordoned.add_metric([], float(len(machine.cordons.until)))
    yield cordoned
