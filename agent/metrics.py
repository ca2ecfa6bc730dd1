"""The agent's own HTTP port (``--http HOST:PORT``): Prometheus ``/metrics`` and ``/healthz``.

Metrics live in prometheus-client's default registry (``REGISTRY``, which also carries the
process collector: CPU, memory, open files of the agent process). Like the controller's, they are
computed when scraped from the agent's state, on the agent's event loop (aiohttp runs there), so
they cost nothing between scrapes; the one counter updated per attempt is a plain dict increment
(:data:`FINISHED`, by the executor as an attempt ends).

This module must not import ``corral.controller``: agents are installed without the controller.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from corral.v1 import types_pb2

if TYPE_CHECKING:
    from aiohttp import web

    from corral.agent.daemon import Agent

__all__ = ["FINISHED", "AgentHttp", "AgentMetrics", "attach", "split_listen"]

log = structlog.get_logger("corral.agent.http")

#: Attempts ended in this process, by outcome number (AttemptOutcome); the executor counts them.
FINISHED: Counter[int] = Counter()


def _outcome(number: int) -> str:
    try:
        return types_pb2.AttemptOutcome.Name(number).removeprefix("ATTEMPT_OUTCOME_").lower()
    except ValueError:
        return str(number)


class AgentMetrics(Collector):
    """The agent's metrics, read from the agent last attached (one per process)."""

    def __init__(self) -> None:
        self._agent: weakref.ref[Agent] | None = None

    def attach(self, agent: Agent) -> None:
        self._agent = weakref.ref(agent)

    def describe(self) -> Iterable[Metric]:
        return ()  # computed at scrape time

    def collect(self) -> Iterable[Metric]:
        finished = CounterMetricFamily(
            "corral_agent_attempts_finished", "Attempts this agent process ended, by outcome.", labels=["outcome"]
        )
        for number, n in sorted(FINISHED.items()):
            finished.add_metric([_outcome(number)], float(n))
        yield finished
        agent = self._agent() if self._agent is not None else None
        if agent is None:
            return
        executor, session = agent.executor, agent.session
        running = executor.running_count if executor is not None else 0
        queued = executor.queued() if executor is not None else 0
        for name, doc, value in (
            ("corral_agent_slots", "Attempts this agent runs at once (--slots).", agent.inventory.slots),
            ("corral_agent_attempts_running", "Attempts running (or starting) on this agent.", running),
            ("corral_agent_attempts_queued", "Attempts assigned and waiting for a free slot here.", queued),
            (
                "corral_agent_connected",
                "1 while the agent has a session with the controller.",
                1 if session is not None and session.connected.is_set() else 0,
            ),
            (
                "corral_agent_draining",
                "1 once the agent drains (no new work).",
                1 if session is not None and session.draining else 0,
            ),
            (
                "corral_agent_unacked_reports",
                "Finished reports awaiting the controller's Ack.",
                len(agent.outbox.unacked_ids),
            ),
        ):
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], float(value))
            yield gauge
        inventory = agent.inventory
        # Not corral_agent_capacity: the controller exports that name per agent (labels agent, resource).
        capacity = GaugeMetricFamily(
            "corral_agent_inventory", "What this agent offers, by resource.", labels=["resource"]
        )
        capacity.add_metric(["slots"], float(inventory.slots))
        capacity.add_metric(["cpu_cores"], float(inventory.cpu_cores))
        capacity.add_metric(["memory_bytes"], float(inventory.memory_mb) * (1 << 20))
        capacity.add_metric(["gpus"], float(inventory.gpu_count))
        yield capacity


METRICS = AgentMetrics()
_registered = False


def attach(agent: Agent) -> AgentMetrics:
    """Register the agent's metrics in ``REGISTRY`` (once per process) and read them from ``agent``."""
    global _registered
    if not _registered:
        REGISTRY.register(METRICS)
        _registered = True
    METRICS.attach(agent)
    return METRICS


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` -> (host, port); ``[::1]:9100`` gives ``::1``. ValueError when it is not one."""
    host, colon, port = listen.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--http wants host:port (port 0: any free port), got {listen!r}")
    return host.strip("[]"), int(port)


class AgentHttp:
    """The agent's HTTP server on its event loop: ``/metrics`` and ``/healthz``."""

    def __init__(self) -> None:
        from aiohttp import web  # only agents with --http pay for importing aiohttp

        self.app = web.Application()
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._healthz)
        self._runner: web.AppRunner | None = None

    async def start(self, listen: str, address_file: Path | None = None) -> str:
        """Bind ``host:port`` and serve; returns (and writes to ``address_file``) the bound address."""
        from aiohttp import web

        host, port = split_listen(listen)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host or None, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # the bound port (port 0) is kept there
        bound_port = sockets[0].getsockname()[1] if sockets else port
        bound = f"[{host}]:{bound_port}" if ":" in host else f"{host}:{bound_port}"
        if address_file is not None:
            partial = address_file.with_suffix(address_file.suffix + ".tmp")
            partial.write_text(bound)
            partial.replace(address_file)  # a reader never sees half an address
        log.info("http (metrics) listening", address=bound)
        return bound

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.Response(text="ok\n")
