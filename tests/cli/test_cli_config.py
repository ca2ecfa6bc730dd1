"""Issue 11, offline (no controller): ``--version``, contexts, ``--state`` checked by the CLI, and the
pure helpers of status DETAIL, queued/run time, exit codes and ``logs --tail/--since``."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from google.protobuf.timestamp_pb2 import Timestamp

from corral import __version__
from corral.controller.cli.detail import display_state, queued_and_run, task_detail
from corral.controller.cli.tasks import parse_since, tail_lines
from corral.controller.core.exits import exit_words
from corral.controller.sdk.history import exit_description, split_target
from corral.controller.sdk.types import TaskStatus
from corral.v1 import types_pb2 as pb
from tests.procs import corral

# Nothing listens here: a command that tried to connect would fail with exit code 1, not 2.
NOWHERE = "127.0.0.1:9"


def test_version() -> None:
    shown = corral("--version")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"corral {__version__}"
    assert corral("-V").stdout == shown.stdout


def test_shell_completion_is_enabled() -> None:
    helped = corral("--help")
    assert "--install-completion" in helped.stdout and "--show-completion" in helped.stdout


@pytest.mark.parametrize("command", [["list", "--state", "bogus"], ["agents", "-s", "connected", "-s", "bogus"]])
def test_state_is_checked_by_the_cli(command: list[str]) -> None:
    refused = corral(*command, "--address", NOWHERE)
    assert refused.returncode == 2, refused.stderr
    assert "unknown state 'bogus'" in refused.stderr  # rich may wrap the list of states
    assert "cannot reach" not in refused.stderr  # refused before any call


def test_context_set_use_list_and_precedence(tmp_path: Path) -> None:
    config = tmp_path / "corral" / "config.yaml"
    env = {"CORRAL_CONFIG": str(config)}
    ca = tmp_path / "ca.pem"
    ca.write_text("not really a CA")
    token = tmp_path / "token"
    token.write_text("s3cret\n")

    assert "no contexts" in corral("context", "list", env=env).stdout
    made = corral("context", "set", "prod", "--address", NOWHERE, "--token-file", str(token), env=env)
    assert made.returncode == 0, made.stderr
    assert "(current)" in made.stdout  # the first context becomes current
    assert corral("context", "set", "lab", "--address", "127.0.0.1:8", "--ca", str(ca), env=env).returncode == 0
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600  # it holds tokens

    stored = yaml.safe_load(config.read_text())
    assert stored["current_context"] == "prod"
    assert stored["contexts"]["prod"] == {"address": NOWHERE, "token": "s3cret"}
    assert stored["contexts"]["lab"]["ca"] == str(ca.resolve())

    used = corral("context", "use", "lab", env=env)
    assert used.returncode == 0 and yaml.safe_load(config.read_text())["current_context"] == "lab"
    listed = json.loads(corral("context", "list", "-o", "json", env=env).stdout)
    assert [(c["name"], c["current"], c["token_set"]) for c in listed] == [("lab", True, False), ("prod", False, True)]
    assert "s3cret" not in corral("context", "list", "-o", "wide", env=env).stdout

    # Commands connect as the current context says (lab: TLS with its CA, at 127.0.0.1:8) ...
    via_lab = corral("list", env=env)
    assert via_lab.returncode == 1 and "127.0.0.1:8" in via_lab.stderr, via_lab.stderr
    # ... unless --context, $CORRAL_CONTEXT or --address says otherwise.
    assert NOWHERE in corral("--context", "prod", "list", env=env).stderr
    assert NOWHERE in corral("list", env={**env, "CORRAL_CONTEXT": "prod"}).stderr
    assert "127.0.0.1:7" in corral("list", "--address", "127.0.0.1:7", env=env).stderr

    missing = corral("context", "use", "nope", env=env)
    assert missing.returncode == 2 and "no context 'nope'" in missing.stderr
    assert corral("context", "set", "bad name", env=env).returncode == 2
    assert corral("context", "rm", "lab", env=env).returncode == 0
    assert yaml.safe_load(config.read_text())["current_context"] == ""


def test_malformed_config_file_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("contexts: [1, 2]\n")
    broken = corral("list", env={"CORRAL_CONFIG": str(config)})
    assert broken.returncode == 2 and str(config) in broken.stderr


def _task(**fields: object) -> TaskStatus:
    return TaskStatus.from_proto(pb.TaskStatus(**fields))  # type: ignore[arg-type]


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def test_display_state_and_detail_of_every_non_terminal_task() -> None:
    huge = _task(name="huge", state=pb.TASK_STATE_READY, unschedulable=True, waiting_reason="needs 4000 cpu_cores")
    queued = _task(name="q", state=pb.TASK_STATE_READY, plan_reason="waiting for free capacity")
    nap = _task(name="nap", state=pb.TASK_STATE_RUNNING, agent_id="a1", attempts=1)
    after = _task(name="after", state=pb.TASK_STATE_PENDING, dependencies=["nap", "huge"])
    by_name = {t.name: t for t in (huge, queued, nap, after)}
    assert display_state(huge) == "unplaceable" and display_state(queued) == "ready"
    assert task_detail(huge, by_name, "running") == "no agent can take it: needs 4000 cpu_cores"
    assert task_detail(queued, by_name, "running") == "waiting for free capacity"
    assert task_detail(nap, by_name, "running") == "running on a1 (attempt 1)"
    assert task_detail(after, by_name, "running") == "waiting on nap (running), huge (ready)"
    lone = _task(name="lone", state=pb.TASK_STATE_PENDING)
    assert task_detail(lone, {}, "pending").startswith("its workflow has not started")
    killed = _task(name="k", state=pb.TASK_STATE_FAILED, exit_code=-9, exit_code_known=True)
    assert task_detail(killed, {}, "failed") == "killed by SIGKILL (-9)"


def test_queued_and_run_time_apart() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ready = now - timedelta(seconds=30)
    started = now - timedelta(seconds=20)
    running = _task(state=pb.TASK_STATE_RUNNING, ready_at=_stamp(ready), started_at=_stamp(started))
    assert queued_and_run(running, now) == (10.0, 20.0)
    # Requeued: its old start is before its new ready_at, so it queues again and does not run.
    requeued = _task(state=pb.TASK_STATE_READY, ready_at=_stamp(now - timedelta(seconds=5)), started_at=_stamp(started))
    assert queued_and_run(requeued, now) == (5.0, None)
    never = _task(state=pb.TASK_STATE_CANCELLED, ready_at=_stamp(ready), finished_at=_stamp(started))
    assert queued_and_run(never, now) == (10.0, None)


def test_exit_codes_in_words() -> None:
    assert [exit_description(c) for c in (0, 3, -15, -9)] == ["0", "3", "SIGTERM (-15)", "SIGKILL (-9)"]
    assert [exit_words(c) for c in (None, 0, 3, -15)] == ["", "", "exit code 3", "killed by SIGTERM (-15)"]


def test_targets_tail_and_since() -> None:
    assert split_target("wf-1/extract") == ("wf-1", "extract")
    assert split_target("t-123") is None
    with pytest.raises(Exception, match="WORKFLOW/TASK"):
        split_target("wf-1/")
    assert tail_lines(b"a\nb\nc\n", 2) == b"b\nc\n" and tail_lines(b"a\nb\nc", 1) == b"c"
    assert tail_lines(b"a\n", 0) == b"" and tail_lines(b"a\n", 5) == b"a\n"
    assert [parse_since(s) for s in ("30s", "5m", "2h", "1d", "1.5m")] == [30, 300, 7200, 86400, 90]
