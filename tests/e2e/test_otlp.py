"""A real controller exports a workflow's spans over OTLP/gRPC to a collector (the test's own server)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from tests.e2e.conftest import Cluster, WorkflowState, eventually

pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra is not installed (pip install 'corral[otel]')")

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """Keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        with self.lock:
            for resource_spans in request.resource_spans:
                for scope in resource_spans.scope_spans:
                    self.spans.extend(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(0)


def test_controller_exports_workflow_task_and_attempt_spans(cluster: Cluster, collector: tuple[Collector, int]) -> None:
    servicer, port = collector
    cluster.env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_BSP_SCHEDULE_DELAY="100",  # ms: export soon after the workflow ends
        OTEL_SERVICE_NAME="corral-e2e",
    )
    api = cluster.start({"alpha": 2})
    spec = {
        "name": "traced",
        "tasks": [
            {"name": "a", "agent_type": "shell", "payload": {"shell": "echo 1"}},
            {"name": "b", "agent_type": "shell", "payload": {"shell": "echo 2"}, "dependencies": ["a"]},
        ],
    }
    workflow_id = api.submit(spec)
    assert api.wait_done(workflow_id, timeout=45).state == WorkflowState.COMPLETED

    def exported() -> list[Any] | None:
        with servicer.lock:
            spans = list(servicer.spans)
        return spans if len(spans) >= 5 else None

    spans = eventually(exported, 20, "5 spans at the collector")
    names = sorted(span.name for span in spans)
    assert names == ["attempt", "attempt", "task a", "task b", "workflow"]
    (root,) = [s for s in spans if s.name == "workflow"]
    assert {s.trace_id for s in spans} == {root.trace_id}
    tasks = {s.span_id: s for s in spans if s.name.startswith("task ")}
    assert all(t.parent_span_id == root.span_id for t in tasks.values())
    assert all(s.parent_span_id in tasks for s in spans if s.name == "attempt")
    attributes = {kv.key: kv.value.string_value for kv in root.attributes}
    assert attributes["corral.workflow_id"] == workflow_id
