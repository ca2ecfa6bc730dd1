"""The pieces of observability that need no process: the log format and the lean histogram."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from corral.agent.logsetup import configure, default_format
from corral.agent.metrics import AgentMetrics
from corral.controller.metrics import ControllerMetrics, LeanHistogram
from corral.controller.runtime import Runtime
from corral.controller.store.memory import MemoryStore
from corral.v1 import types_pb2


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    corral_level = logging.getLogger("corral").level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("corral").setLevel(corral_level)
    structlog.reset_defaults()


def test_json_format_renders_stdlib_and_structlog_lines_alike(restore_logging: None) -> None:
    out = io.StringIO()
    configure("debug", "json", stream=out)
    logging.getLogger("corral.controller.events").info("workflow %s", "completed", extra={"workflow_id": "wf-1"})
    structlog.get_logger("corral.agent.executor").debug("attempt ended", attempt_id="a1", outcome=1)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("corral.controller").exception("state loop: unexpected %s", "ValueError")
    logging.getLogger("grpc").debug("not ours: filtered at debug")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "workflow completed",
        "attempt ended",
        "state loop: unexpected ValueError",
    ]
    assert lines[0]["workflow_id"] == "wf-1" and lines[0]["level"] == "info"
    assert lines[0]["logger"] == "corral.controller.events" and lines[0]["timestamp"].endswith("Z")
    assert lines[1]["attempt_id"] == "a1" and lines[1]["level"] == "debug"
    assert "ValueError: boom" in lines[2]["exception"]


def test_text_format_is_key_value(restore_logging: None) -> None:
    out = io.StringIO()
    configure("info", "text", stream=out)
    logging.getLogger("corral.controller.events").info("workflow started", extra={"workflow_id": "wf-2"})
    structlog.get_logger("corral.agent").debug("dropped at info")
    text = out.getvalue()
    assert "workflow started" in text and "workflow_id=wf-2" in text and "[info" in text
    assert "dropped" not in text and len(text.splitlines()) == 1


def test_bad_format_and_the_environment_default(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="log format"):
        configure("info", "xml")
    monkeypatch.setenv("CORRAL_LOG_FORMAT", "JSON")
    assert default_format() == "json"
    monkeypatch.setenv("CORRAL_LOG_FORMAT", "yaml")
    assert default_format() == "text"


def test_lean_histogram_renders_like_prometheus_client() -> None:
    histogram = LeanHistogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 2.0):
        histogram.observe(value)
    # le is "less or equal": 0.1 falls in the 0.1 bucket.
    assert histogram.buckets() == [("0.1", 2.0), ("1.0", 3.0), ("+Inf", 4.0)]
    assert histogram.count == 4 and histogram.sum == pytest.approx(2.65)


def test_collector_without_a_runtime_renders_counters_only() -> None:
    metrics = ControllerMetrics()
    metrics.rpc_done("/corral.v1.Orchestrator/SubmitWorkflow", "OK", 0.002)
    metrics.rpc_done("/corral.v1.Orchestrator/SubmitWorkflow", "INVALID_ARGUMENT", 0.001)
    registry = CollectorRegistry()
    registry.register(metrics)  # type: ignore[arg-type]  # a collector by protocol, not by class
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    method = ("method", "/corral.v1.Orchestrator/SubmitWorkflow")
    assert samples[("corral_rpc_duration_seconds_count", (("code", "OK"), method))] == 1
    assert samples[("corral_rpc_duration_seconds_count", (("code", "INVALID_ARGUMENT"), method))] == 1
    assert samples[("corral_placements_total", ())] == 0
    assert not [name for name, _ in samples if name == "corral_tasks"]  # no runtime: no gauges


def test_agent_http_flag_wants_host_and_port(capsys: pytest.CaptureFixture[str]) -> None:
    from corral.agent.cli import build_parser

    assert build_parser().parse_args(["--http", "127.0.0.1:0"]).http == "127.0.0.1:0"
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--http", "nonsense"])
    assert exited.value.code == 2
    assert "--http wants host:port" in capsys.readouterr().err


def _exposed(collector: Collector | ControllerMetrics) -> set[str]:
    """Every sample name a collector can expose (counters as _total, histograms as _bucket/_count/_sum)."""
    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]  # ControllerMetrics: a collector by protocol
    names: set[str] = set()
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
    return names


class _FakeAgent:
    """What AgentMetrics reads of an agent that has not connected yet (weak-referenceable)."""

    executor = None
    session = None
    inventory = types_pb2.Inventory(slots=2)
    outbox = SimpleNamespace(unacked_ids=[])


def test_grafana_dashboard_queries_only_metrics_that_exist() -> None:
    controller = ControllerMetrics()
    runtime = Runtime(MemoryStore())
    controller.attach(runtime)
    agent = AgentMetrics()
    fake_agent = _FakeAgent()
    agent.attach(fake_agent)  # type: ignore[arg-type]
    exposed = _exposed(controller) | _exposed(agent)
    dashboard = json.loads((Path(__file__).parents[2] / "deploy" / "grafana" / "corral.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\b(corral_[a-z_]+)", expr)}
    assert len(exprs) > 20 and used
    assert not used - exposed, f"the dashboard queries metrics nobody exports: {sorted(used - exposed)}"
