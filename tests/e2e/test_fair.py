"""End to end: two namespaces of equal weight share real agents, whatever priority one of them sets."""

from __future__ import annotations

import json

import pytest

from corral.v1 import admin_pb2, admin_pb2_grpc
from tests.e2e.conftest import Cluster, WorkflowState
from tests.procs import corral

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

N = 12


def _spec(namespace: str, priority: int) -> dict[str, object]:
    task = {"agent_type": "shell", "priority": priority, "payload": {"shell": "sleep 0.5"}}
    return {"name": namespace, "namespace": namespace, "tasks": [{"name": f"t{i}", **task} for i in range(N)]}


def test_two_namespaces_share_the_cluster_fairly(cluster: Cluster) -> None:
    api = cluster.start({"alpha": 2, "beta": 2})
    admin = admin_pb2_grpc.AdminStub(api.channel)
    for name in ("hog", "fair"):
        admin.CreateNamespace(admin_pb2.CreateNamespaceRequest(name=name), timeout=10)
    # "hog" submits first, with the highest priority: plain queue order would run all of it first.
    hog = api.submit(_spec("hog", 100))
    fair = api.submit(_spec("fair", 0))
    assert api.wait_done(hog, 60).state == WorkflowState.COMPLETED
    assert api.wait_done(fair, 60).state == WorkflowState.COMPLETED
    hog_starts = sorted(t.started_at.ToNanoseconds() for t in api.tasks(hog).values())
    fair_starts = sorted(t.started_at.ToNanoseconds() for t in api.tasks(fair).values())
    # While both had work the 4 slots were split: by the time hog's last task started, fair had
    # started about half of its tasks (without fair share it would have started none).
    before = sum(1 for s in fair_starts if s < hog_starts[-1])
    assert before >= N // 2 - 2, (before, hog_starts, fair_starts)
    shown = corral("quota", "--address", api.address, "-o", "json", timeout=30)
    assert shown.returncode == 0, shown.stderr
    rows = {row["namespace"]: row for row in json.loads(shown.stdout)}
    assert set(rows) == {"default", "hog", "fair"} and rows["hog"]["weight"] == 1.0
    assert rows["fair"]["running"] == 0 and rows["fair"]["dominant_share"] == 0.0  # all done
