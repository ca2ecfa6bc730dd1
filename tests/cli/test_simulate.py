"""``corral simulate``: offline replay of a workflow file on simulated agents (no controller)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from tests.procs import corral

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline.yaml"


def test_simulate_prints_makespan_bound_and_a_timeline_per_agent() -> None:
    result = corral("simulate", str(EXAMPLE), "--agents", "2x4")
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert lines[0] == f"simulated {EXAMPLE} (7 tasks) on 2 agents x 4 slots: completed"
    # extract 0.2, four transforms of 0.5 in parallel, combine 0.2, report 0.1: the critical path.
    assert "  makespan  1.000 s" in lines
    assert any(
        line.startswith("  bound     1.000 s  = max(critical path 1.000 s, work 2.500 s / 8 slots") for line in lines
    )
    assert "  ratio     1.000 x bound" in lines
    rows = [line for line in lines if line.startswith("  sim-")]
    assert [row.split()[0] for row in rows] == [f"sim-{a}/{s}" for a in (1, 2) for s in range(4)]
    assert any("legend: A=extract" in line for line in lines)
    assert result.stderr == ""


def test_simulate_on_one_slot_runs_everything_in_sequence_and_json_has_every_span() -> None:
    result = corral("simulate", str(EXAMPLE), "--agents", "1x1", "--json")
    assert result.returncode == 0, result
    data = json.loads(result.stdout)
    assert data["state"] == "completed" and data["agents"] == 1 and data["slots_per_agent"] == 1
    assert data["makespan_s"] == 2.5 and data["total_work_s"] == 2.5 and data["bound_s"] == 2.5
    spans = data["spans"]
    assert len(spans) == 7 and {s["agent"] for s in spans} == {"sim-1"}
    assert spans[0]["task"] == "extract" and spans[-1]["task"] == "report"
    for before, after in itertools.pairwise(spans):
        assert after["start_s"] >= before["end_s"]
    assert data["per_agent"] == [{"agent": "sim-1", "attempts": 7, "busy_s": 2.5, "utilisation": 1.0}]


def test_simulate_refuses_bad_fleets_with_exit_2() -> None:
    for shape, message in (
        ("2y4", "agents: '2y4' is not AGENTSxSLOTS (for example 2x4: 2 agents of 4 slots)"),
        ("5000x1", "agents: must be between 1 and 1000, got 5000"),
        ("1x0", "slots: must be between 1 and 4096 per agent, got 0"),
    ):
        result = corral("simulate", str(EXAMPLE), "--agents", shape)
        assert result.returncode == 2, result
        assert result.stderr.splitlines() == ["error: cannot simulate:", f"  {message}"]
        assert result.stdout == ""
    runs = corral("simulate", str(EXAMPLE), "--runs", "11")
    assert runs.returncode == 2 and "--runs must be between 1 and 10" in runs.stderr


def test_simulate_exits_3_and_says_why_when_a_task_can_never_run(tmp_path: Path) -> None:
    result = corral("simulate", str(EXAMPLE), "--agents", "1x2", "--type", "shell")
    assert result.returncode == 3, result
    assert "simulated" in result.stdout and ": stuck" in result.stdout.splitlines()[0]
    assert any(
        line.strip().startswith("stuck") and "transform-0" in line and "python" in line
        for line in result.stdout.splitlines()
    )


def test_simulate_reports_an_invalid_file_like_run_does(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ntasks:\n  - {name: a, payload: {shell: x}, estimated_duration: -1}\n")
    result = corral("simulate", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == f"error: {path} is not a valid workflow:"
    assert "tasks[0].estimated_duration" in result.stderr


def test_simulate_runs_the_workflow_again_on_the_same_simulated_controller() -> None:
    result = corral("simulate", str(EXAMPLE), "--agents", "2x4", "--runs", "2", "--json")
    assert result.returncode == 0, result
    data = json.loads(result.stdout)
    assert data["earlier_makespans_s"] == [1.0] and data["makespan_s"] == 1.0
    assert len(data["spans"]) == 7  # the last run's spans only


def test_simulate_latency_adds_a_round_trip_per_stage() -> None:
    result = corral("simulate", str(EXAMPLE), "--latency", "0.01", "--json")
    assert result.returncode == 0, result
    # Four stages (extract, transforms, combine, report), each 10 ms out and 10 ms back.
    assert json.loads(result.stdout)["makespan_s"] == 1.08
    refused = corral("simulate", str(EXAMPLE), "--latency", "5")
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "error: cannot simulate:",
        "  latency: must be between 0 and 1 seconds, got 5.0",
    ]
