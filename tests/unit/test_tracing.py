"""OpenTelemetry spans built from a workflow's event log: workflow -> task -> attempt, with the logged times."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from corral.controller.core.model import WorkflowEvent, WorkflowState
from corral.controller.tracing import WorkflowTracer, from_environment

otel = pytest.importorskip(
    "opentelemetry.sdk.trace", reason="the otel extra is not installed (pip install 'corral[otel]')"
)

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402

WF = "wf-1"


@pytest.fixture
def traced() -> Iterator[tuple[WorkflowTracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield WorkflowTracer(provider.get_tracer("test")), exporter
    provider.shutdown()


def _event(seq: int, at: float, kind: str, task: str = "", attempt: str = "", reason: str = "") -> WorkflowEvent:
    return WorkflowEvent(
        seq,
        at,
        WF,
        WorkflowState.RUNNING,
        task_id=f"t-{task}" if task else "",
        task_name=task,
        attempt_id=attempt,
        agent_id="alpha" if attempt else "",
        kind=kind,
        reason=reason,
    )


def _history() -> list[WorkflowEvent]:
    """A workflow whose task "a" fails once and is retried, then "b" runs after it."""
    return [
        _event(1, 100.0, "submitted"),
        _event(2, 100.0, "started"),
        _event(3, 100.5, "placed", "a", "att-1"),
        _event(4, 101.0, "running", "a", "att-1"),
        _event(5, 102.0, "retry", "a", "att-1", reason="exit code 7"),
        _event(6, 103.0, "placed", "a", "att-2"),
        _event(7, 103.5, "running", "a", "att-2"),
        _event(8, 104.0, "completed", "a", "att-2"),
        _event(9, 104.0, "placed", "b", "att-3"),
        _event(10, 105.0, "running", "b", "att-3"),
        _event(11, 106.0, "completed", "b", "att-3"),
        _event(12, 106.0, "completed"),
    ]


def _by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def test_a_finished_workflow_becomes_one_trace_of_tasks_and_attempts(
    traced: tuple[WorkflowTracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = traced
    history = _history()
    tracer.feed(history[:-1])
    assert exporter.get_finished_spans() == ()  # nothing before the workflow ends
    tracer.feed(history[-1:])
    spans = exporter.get_finished_spans()
    (root,) = _by_name(spans, "workflow")
    task_a, task_b = _by_name(spans, "task a"), _by_name(spans, "task b")
    attempts = {s.attributes["corral.attempt_id"]: s for s in _by_name(spans, "attempt") if s.attributes}
    assert len(spans) == 6 and len(task_a) == len(task_b) == 1 and set(attempts) == {"att-1", "att-2", "att-3"}
    # One trace; tasks are children of the workflow, attempts of their task.
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}
    assert task_a[0].parent is not None and task_a[0].parent.span_id == root.context.span_id
    for attempt_id, task in (("att-1", task_a[0]), ("att-2", task_a[0]), ("att-3", task_b[0])):
        parent = attempts[attempt_id].parent
        assert parent is not None and parent.span_id == task.context.span_id
    # The times are the event log's.
    assert (root.start_time, root.end_time) == (100_000_000_000, 106_000_000_000)
    assert (task_a[0].start_time, task_a[0].end_time) == (100_500_000_000, 104_000_000_000)
    assert (attempts["att-1"].start_time, attempts["att-1"].end_time) == (100_500_000_000, 102_000_000_000)
    # The retried attempt is an error; the task and the workflow succeeded.
    assert attempts["att-1"].status.status_code is StatusCode.ERROR
    assert attempts["att-1"].status.description == "exit code 7"
    assert attempts["att-2"].status.status_code is not StatusCode.ERROR
    assert root.status.status_code is not StatusCode.ERROR
    assert [e.name for e in attempts["att-1"].events] == ["placed", "running", "retry"]
    assert root.attributes is not None and root.attributes["corral.workflow_id"] == WF
    assert tracer.pending == {} and tracer.traces == 1


def test_a_failed_workflow_is_an_error_and_bounds_hold(traced: tuple[WorkflowTracer, InMemorySpanExporter]) -> None:
    tracer, exporter = traced
    tracer.max_events = 3
    tracer.feed(
        [
            _event(1, 1.0, "submitted"),
            _event(2, 1.0, "started"),
            _event(3, 2.0, "placed", "a", "att-1"),
            _event(4, 3.0, "running", "a", "att-1"),  # past max_events: counted, not traced
            _event(5, 4.0, "failed", reason="task 'a' failed: exit code 1"),
        ]
    )
    (root,) = _by_name(exporter.get_finished_spans(), "workflow")
    assert root.status.status_code is StatusCode.ERROR and tracer.dropped == 1
    assert root.end_time == 4_000_000_000  # the ending entry is always kept


def test_off_unless_an_endpoint_is_configured() -> None:
    assert from_environment({}) is None
    assert from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}) is not None
