"""CLI behaviour that needs no controller: errors, exit codes, schema, help, and rendering."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pytest
from rich.console import Console

from corral.controller.cli.output import plan_view
from corral.controller.sdk import ExecutionPlan, WorkflowSpec
from corral.v1 import types_pb2 as pb
from tests.procs import corral


def free_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_controller_down_is_one_line_and_exit_1(tmp_path: Path) -> None:
    address = free_address()
    for args in (["list"], ["status", "abc"], ["agents", "-o", "json"], ["cancel", "x", "--force"]):
        result = corral(*args, "--address", address)
        assert result.returncode == 1, result
        assert result.stderr == f"cannot reach the controller at {address} — is it running?\n"
        assert result.stdout == ""


def test_address_comes_from_the_environment() -> None:
    address = free_address()
    result = corral("list", env={"CORRAL_ADDRESS": address})
    assert result.returncode == 1 and address in result.stderr


def test_invalid_workflow_file_prints_each_field_error_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\n"
        "tasks:\n"
        "  - {name: a, payload: {shell: x}, priority: 500}\n"
        "  - {name: b, payload: {shell: x}, dependencies: [a], resources: {memory_mb: -1}}\n"
    )
    for command in ("run", "submit", "plan"):
        result = corral(command, str(path), "--address", free_address())
        assert result.returncode == 2, result
        lines = result.stderr.splitlines()
        assert lines[0] == f"error: {path} is not a valid workflow:"
        assert any(line.strip().startswith("tasks[0].priority:") for line in lines[1:])
        assert any(line.strip().startswith("tasks[1].resources.memory_mb:") for line in lines[1:])
        assert "Traceback" not in result.stderr and result.stdout == ""


def test_missing_and_malformed_files_exit_2(tmp_path: Path) -> None:
    result = corral("run", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "no such file" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    result = corral("plan", str(bad))
    assert result.returncode == 2 and "malformed YAML" in result.stderr


def test_bad_flag_value_exits_2() -> None:
    result = corral("list", "-o", "xml")
    assert result.returncode == 2


def test_schema_is_the_workflow_models_json_schema() -> None:
    result = corral("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout) == WorkflowSpec.model_json_schema()


def test_help_documents_exit_codes() -> None:
    result = corral("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "0 ok; 1 workflow failed or cancelled" in text
    assert "2 invalid input" in text and "3 workflow unschedulable" in text
    for command in ("run", "submit", "plan", "status", "list", "cancel", "pause", "resume", "explain", "logs"):
        assert command in result.stdout
    assert "agents" in result.stdout and "drain" in result.stdout and "dev" in result.stdout


def _plan() -> ExecutionPlan:
    return ExecutionPlan.from_proto(
        pb.ExecutionPlan(
            stages=[
                pb.ExecutionStage(index=0, task_names=["extract"], estimated_duration_s=5),
                pb.ExecutionStage(index=1, task_names=[f"t{i}" for i in range(10)], estimated_duration_s=90),
                pb.ExecutionStage(index=2, task_names=["load"], estimated_duration_s=0.5),
            ],
            critical_path=["extract", "t3", "load"],
            estimated_duration_s=95.5,
            parallelism_factor=3.25,
            task_count=12,
            total_work_s=310,
        )
    )


def render(renderable: object) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=200, no_color=True).print(renderable)
    return buffer.getvalue()


def test_plan_table_rendering() -> None:
    text = render(plan_view(_plan(), wide=False))
    lines = [line.rstrip() for line in text.splitlines()]
    assert lines[0].split() == ["STAGE", "TASKS", "EST.", "DURATION", "NAMES"]
    assert lines[1].split() == ["0", "1", "5.0s", "extract"]
    assert "t0, t1, t2, t3, t4, t5, t6, t7, ... (+2)" in lines[2] and "1m30s" in lines[2]
    assert "Critical path       extract -> t3 -> load" in text
    assert "Estimated duration  1m35s" in text
    assert "Parallelism         3.25x" in text
    wide = render(plan_view(_plan(), wide=True))
    assert "t8, t9" in wide


def test_plan_json_fields() -> None:
    data = _plan().to_dict()
    assert set(data) == {
        "stages",
        "critical_path",
        "estimated_duration_s",
        "parallelism_factor",
        "task_count",
        "total_work_s",
    }
    assert data["stages"][1]["task_names"][:2] == ["t0", "t1"]


def test_fence_after_must_be_longer_than_the_lease(capsys: pytest.CaptureFixture[str]) -> None:
    from corral.controller.daemon import _config, parse_args

    args = parse_args([])
    assert args.fence_after == 30.0
    config = _config(parse_args(["--fence-after", "45"]))
    if hasattr(config, "fence_after_s"):
        assert config.fence_after_s == 45.0
    for flags in (["--fence-after", "15"], ["--lease", "40"], ["--fence-after", "nan"], ["--fence-after", "-1"]):
        with pytest.raises(SystemExit) as exited:
            parse_args(flags)
        assert exited.value.code == 2, flags
        err = capsys.readouterr().err
        assert "--fence-after" in err, err
    parse_args(["--lease", "40", "--fence-after", "60"])
