"""Rendering of measured usage in `corral status` and of `corral analyze` (offline: no controller)."""

from __future__ import annotations

import io

from rich.console import Console

from corral.controller.cli.analyze import analysis_view
from corral.controller.cli.output import memory, tasks_table
from corral.controller.cli.quota import quota_table
from corral.controller.sdk.admin_types import QuotaInfo
from corral.controller.sdk.types import DependencyAnalysis, TaskStatus
from corral.v1 import admin_pb2, scheduler_pb2
from corral.v1 import types_pb2 as pb


def render(renderable: object) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=200, no_color=True).print(renderable)
    return buffer.getvalue()


def test_memory_in_binary_units() -> None:
    assert [memory(v) for v in (0, 900 * 1024, 52 << 20, 3 << 29)] == ["-", "900Ki", "52Mi", "1.5Gi"]


def test_status_table_shows_peak_memory_and_cpu() -> None:
    measured = TaskStatus.from_proto(
        pb.TaskStatus(name="train", state=pb.TASK_STATE_COMPLETED, attempts=1, peak_rss_bytes=52 << 20, cpu_s=12.34)
    )
    waiting = TaskStatus.from_proto(pb.TaskStatus(name="eval", state=pb.TASK_STATE_PENDING))
    lines = [line.split() for line in render(tasks_table([measured, waiting], wide=False)).splitlines()]
    assert lines[0] == ["NAME", "STATE", "ATTEMPTS", "QUEUED", "RUN", "PEAK", "MEM", "CPU", "DETAIL"]
    assert lines[1] == ["train", "completed", "1", "-", "-", "52Mi", "12.3s"]
    assert lines[2][:6] == ["eval", "pending", "0", "-", "-", "-"]
    assert (measured.peak_rss_bytes, measured.cpu_s) == (52 << 20, 12.34)
    assert measured.to_dict()["peak_rss_bytes"] == 52 << 20


def test_status_table_shows_slack_and_the_last_pass_reason() -> None:
    late = TaskStatus.from_proto(pb.TaskStatus(name="report", state=pb.TASK_STATE_READY, slack_s=-4.25))
    ready = TaskStatus.from_proto(
        pb.TaskStatus(name="train", state=pb.TASK_STATE_READY, plan_reason="waiting for free capacity: all slots busy")
    )
    lines = [line.split() for line in render(tasks_table([late, ready], wide=False)).splitlines()]
    assert lines[0] == ["NAME", "STATE", "ATTEMPTS", "QUEUED", "RUN", "PEAK", "MEM", "CPU", "SLACK", "DETAIL"]
    assert lines[1][:8] == ["report", "ready", "0", "-", "-", "-", "-", "-4.2s"]
    assert lines[2][:8] == ["train", "ready", "0", "-", "-", "-", "-", "-"]
    assert " ".join(lines[2][8:]) == "waiting for free capacity: all slots busy"


def test_status_table_marks_usage_learned_from_earlier_runs() -> None:
    waiting = TaskStatus.from_proto(
        pb.TaskStatus(name="train", state=pb.TASK_STATE_READY, expected_peak_rss_bytes=52 << 20, expected_cpu_s=1.5)
    )
    done = TaskStatus.from_proto(
        pb.TaskStatus(name="prep", state=pb.TASK_STATE_COMPLETED, peak_rss_bytes=8 << 20, cpu_s=0.5)
    )
    lines = [line.split() for line in render(tasks_table([waiting, done], wide=False)).splitlines()]
    assert lines[1][:7] == ["train", "ready", "0", "-", "-", "~52Mi", "~1.5s"]
    assert lines[2][:7] == ["prep", "completed", "0", "-", "-", "8Mi", "500ms"]


def _analysis(**fields: object) -> DependencyAnalysis:
    message = scheduler_pb2.AnalyzeDependenciesResponse(
        plan=pb.ExecutionPlan(
            stages=[
                pb.ExecutionStage(index=0, task_names=["extract"]),
                pb.ExecutionStage(index=1, task_names=["load"]),
            ],
            critical_path=["extract", "load"],
            task_count=2,
        ),
        roots=["extract"],
        leaves=["load"],
        max_width=1,
        depth=2,
        **fields,  # type: ignore[arg-type]
    )
    return DependencyAnalysis.from_proto(message)


def test_analysis_lists_redundant_dependencies_and_dominators() -> None:
    edge = scheduler_pb2.DependencyEdge(**{"from": "extract", "to": "load"})
    analysis = _analysis(redundant_edges=[edge], immediate_dominators={"load": "extract", "clean": "extract"})
    assert analysis.redundant_edges == (("extract", "load"),)
    text = render(analysis_view(analysis, ["extract", "clean", "load"], wide=False))
    lines = [line.split() for line in text.splitlines()]
    assert ["load", "extract"] in lines
    dominators = text[text.index("IMMEDIATE DOMINATOR") :].splitlines()
    # In file order: clean before load.
    assert [line.split() for line in dominators[1:3]] == [["clean", "extract"], ["load", "extract"]]
    assert analysis.to_dict()["redundant_edges"] == [["extract", "load"]]


def test_analysis_of_a_clean_graph_and_of_one_too_big_to_analyse() -> None:
    text = render(analysis_view(_analysis(), ["extract", "load"], wide=False))
    assert "No redundant dependencies." in text
    assert "No task is dominated by another" in text
    big = render(analysis_view(_analysis(), ["extract", "load"], wide=False, computed=False))
    assert "not computed (over 20,000 tasks or 200,000 dependencies)" in big


def test_long_lists_are_cut_unless_wide() -> None:
    names = [f"t{i}" for i in range(30)]
    analysis = _analysis(immediate_dominators={n: "t0" for n in names[1:]})
    assert "... and 9 more (--output wide shows all)" in render(analysis_view(analysis, names, wide=False))
    assert "more (--output wide" not in render(analysis_view(analysis, names, wide=True))


def test_quota_table_shows_used_of_limit_weight_and_shares() -> None:
    row = admin_pb2.QuotaUsage(
        namespace="team",
        quota=admin_pb2.NamespaceQuota(weight=2, max_cpu=16, max_running=40),
        cpu=4,
        memory_mb=2048,
        running=3,
        dominant_share=0.5,
        weighted_share=0.25,
    )
    lines = [line.split() for line in render(quota_table([QuotaInfo.from_proto(row)])).splitlines()]
    assert lines[0] == ["NAMESPACE", "WEIGHT", "RUNNING", "CPU", "MEMORY_MB", "GPU", "DOMINANT", "WEIGHTED"]
    assert lines[1] == ["team", "2", "3/40", "4/16", "2048", "0", "0.500", "0.250"]
