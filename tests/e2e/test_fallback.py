"""End to end (issue 10 §5-6): fallback, allow_failure, min_success and approval tasks, each also with a
controller ``kill -9`` and restart in the middle (the replay variant: same outcome, nothing run twice).

Every task appends ``<task name> <what ran> <attempt id>`` to a ledger file, so the ledger, not the
controller, says what ran and how often.
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest

from corral.v1 import orchestrator_pb2
from tests.e2e.conftest import Api, Cluster, TaskState, WorkflowState, eventually
from tests.procs import corral

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

RESTART = pytest.mark.parametrize(
    "restart", [False, pytest.param(True, marks=pytest.mark.chaos)], ids=["plain", "controller-restart"]
)


def _shell(ledger: Path, name_as: str, script: str = "") -> dict[str, Any]:
    """A shell payload that writes its ledger line first, then runs ``script``."""
    line = f"echo $CORRAL_TASK_NAME {name_as} $CORRAL_ATTEMPT_ID >> {shlex.quote(str(ledger))}"
    return {"shell": f"{line}\n{script}" if script else line}


def _ledger(path: Path) -> Counter[tuple[str, str]]:
    """(task name, what ran) -> how many times."""
    if not path.exists():
        return Counter()
    return Counter(tuple(line.split()[:2]) for line in path.read_text().splitlines())  # type: ignore[misc]


def _start(cluster: Cluster) -> Api:
    return cluster.start({"alpha": 2, "beta": 2}, controller_flags=["--adopt-grace", "3", "--reconnect-grace", "2"])


def _restart(cluster: Cluster) -> Api:
    cluster.controller.kill9()
    cluster.controller.start(["--adopt-grace", "3", "--reconnect-grace", "2"])
    return cluster.api


def _running(api: Api, workflow_id: str, name: str) -> bool:
    return api.tasks(workflow_id)[name].state == TaskState.RUNNING


# --- fallback --------------------------------------------------------------------------------------


@RESTART
def test_fallback_runs_after_every_retry_failed(cluster: Cluster, tmp_path: Path, restart: bool) -> None:
    ledger, go = tmp_path / "ledger", tmp_path / "go"
    api = _start(cluster)
    # The fallback waits for a file, so the kill lands while it runs.
    wait = f"while [ ! -e {shlex.quote(str(go))} ]; do sleep 0.05; done; echo '\"plan-b\"'"
    spec = {
        "name": "fallback",
        "tasks": [
            {
                "name": "fetch",
                "payload": _shell(ledger, "primary", "exit 3"),
                "retries": 1,
                "retry_backoff": 0.1,
                "fallback": _shell(ledger, "fallback", wait),
            },
            {"name": "use", "dependencies": ["fetch"], "payload": _shell(ledger, "use", 'echo "$CORRAL_INPUTS"')},
        ],
    }
    workflow_id = api.submit(spec)
    eventually(lambda: _ledger(ledger)[("fetch", "fallback")] == 1, 30, "the fallback to start")
    assert api.tasks(workflow_id)["fetch"].fallback_used
    if restart:
        api = _restart(cluster)
    go.touch()
    final = api.wait_done(workflow_id, timeout=40)
    assert final.state == WorkflowState.COMPLETED, final.error
    tasks = {t.name: t for t in final.tasks}
    assert json.loads(tasks["fetch"].result_json) == "plan-b"
    assert tasks["fetch"].fallback_used
    assert json.loads(tasks["use"].result_json) == {"fetch": "plan-b"}
    runs = _ledger(ledger)
    assert runs == Counter({("fetch", "primary"): 2, ("fetch", "fallback"): 1, ("use", "use"): 1})


# --- allow_failure -----------------------------------------------------------------------------------


@RESTART
def test_allow_failure_dependents_run_with_null_and_the_error(cluster: Cluster, tmp_path: Path, restart: bool) -> None:
    ledger, go = tmp_path / "ledger", tmp_path / "go"
    api = _start(cluster)
    wait = f'while [ ! -e {shlex.quote(str(go))} ]; do sleep 0.05; done; echo "$CORRAL_INPUTS"'
    spec = {
        "name": "partial",
        "tasks": [
            {"name": "flaky", "payload": _shell(ledger, "flaky", "echo broken >&2; exit 7"), "allow_failure": True},
            {"name": "fine", "payload": _shell(ledger, "fine", "echo 5")},
            {"name": "report", "dependencies": ["flaky", "fine"], "payload": _shell(ledger, "report", wait)},
        ],
    }
    workflow_id = api.submit(spec)
    eventually(lambda: _ledger(ledger)[("report", "report")] == 1, 30, "the dependent to start")
    if restart:
        api = _restart(cluster)
    go.touch()
    final = api.wait_done(workflow_id, timeout=40)
    assert final.state == WorkflowState.COMPLETED, final.error
    tasks = {t.name: t for t in final.tasks}
    assert tasks["flaky"].state == TaskState.FAILED
    inputs = json.loads(tasks["report"].result_json)
    assert inputs["flaky"] is None and inputs["fine"] == 5
    assert inputs["_errors"]["flaky"]["state"] == "failed"
    assert inputs["_errors"]["flaky"]["error"]  # the agent's words for exit status 7
    assert _ledger(ledger) == Counter({("flaky", "flaky"): 1, ("fine", "fine"): 1, ("report", "report"): 1})


# --- min_success -------------------------------------------------------------------------------------


@RESTART
def test_min_success_fan_in_runs_with_n_of_m(cluster: Cluster, tmp_path: Path, restart: bool) -> None:
    ledger, go = tmp_path / "ledger", tmp_path / "go"
    api = _start(cluster)
    wait = f'while [ ! -e {shlex.quote(str(go))} ]; do sleep 0.05; done; echo "$CORRAL_INPUTS"'
    parts = [
        {"name": f"p{i}", "payload": _shell(ledger, f"p{i}", "exit 1" if i % 2 else f"echo {i}")} for i in range(5)
    ]
    spec = {
        "name": "n-of-m",
        "tasks": [
            *parts,
            {
                "name": "join",
                "dependencies": [p["name"] for p in parts],
                "min_success": 3,
                "payload": _shell(ledger, "join", wait),
            },
        ],
    }
    workflow_id = api.submit(spec)
    eventually(lambda: _ledger(ledger)[("join", "join")] == 1, 30, "the fan-in to start")
    if restart:
        api = _restart(cluster)
    go.touch()
    final = api.wait_done(workflow_id, timeout=40)
    assert final.state == WorkflowState.COMPLETED, final.error
    inputs = json.loads({t.name: t for t in final.tasks}["join"].result_json)
    assert {k: v for k, v in inputs.items() if k != "_errors"} == {"p0": 0, "p1": None, "p2": 2, "p3": None, "p4": 4}
    assert sorted(inputs["_errors"]) == ["p1", "p3"]
    assert _ledger(ledger) == Counter({(f"p{i}", f"p{i}"): 1 for i in range(5)} | {("join", "join"): 1})

    # Out of reach: 3 of 5 must complete, 3 fail -> the fan-in is skipped and the workflow fails.
    failing = [{"name": f"q{i}", "payload": {"shell": "exit 1" if i < 3 else "true"}} for i in range(5)]
    spec = {
        "name": "n-of-m-lost",
        "tasks": [
            *failing,
            {
                "name": "join",
                "dependencies": [f"q{i}" for i in range(5)],
                "min_success": 3,
                "payload": {"shell": "true"},
            },
        ],
    }
    final = api.wait_done(api.submit(spec), timeout=40)
    assert final.state == WorkflowState.FAILED
    join = {t.name: t for t in final.tasks}["join"]
    assert join.state == TaskState.SKIPPED and "min_success is 3" in join.error


# --- approvals -----------------------------------------------------------------------------------------


def _approval_flow(ledger: Path, timeout: str | None = None) -> dict[str, Any]:
    approval: dict[str, Any] = {"message": "deploy to prod?"}
    if timeout is not None:
        approval["timeout"] = timeout
    return {
        "name": "gated",
        "tasks": [
            {"name": "build", "payload": _shell(ledger, "build")},
            {"name": "gate", "dependencies": ["build"], "approval": approval},
            {"name": "deploy", "dependencies": ["gate"], "payload": _shell(ledger, "deploy", 'echo "$CORRAL_INPUTS"')},
        ],
    }


def _waiting(api: Api, workflow_id: str) -> bool:
    gate = api.tasks(workflow_id)["gate"]
    return gate.state == TaskState.READY and gate.approval_state == "waiting"


@RESTART
def test_approval_waits_until_approved(cluster: Cluster, tmp_path: Path, restart: bool) -> None:
    ledger = tmp_path / "ledger"
    api = _start(cluster)
    workflow_id = api.submit(_approval_flow(ledger))
    eventually(lambda: _waiting(api, workflow_id), 30, "the gate to wait for approval")
    gate = api.tasks(workflow_id)["gate"]
    explained = api.explain(gate.task_id)
    assert explained.reason.startswith("waiting for approval: deploy to prod?"), explained.reason
    assert gate.approval_message == "deploy to prod?"
    if restart:
        api = _restart(cluster)
        eventually(lambda: _waiting(api, workflow_id), 30, "the gate to wait again after the restart")
    # Nothing moves while it waits: deploy has not run (it cannot: no event would start it).
    assert api.status(workflow_id).state == WorkflowState.RUNNING
    assert _ledger(ledger)[("deploy", "deploy")] == 0
    shown = corral("approve", f"{workflow_id}/gate", "--reason", "lgtm", "--address", api.address, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert f"{workflow_id}/gate completed" in shown.stdout.lower(), shown.stdout
    final = api.wait_done(workflow_id, timeout=40)
    assert final.state == WorkflowState.COMPLETED, final.error
    tasks = {t.name: t for t in final.tasks}
    answer = json.loads(tasks["gate"].result_json)
    assert answer["reason"] == "lgtm" and answer["approved_by"]
    assert tasks["gate"].approval_state == "approved"
    assert json.loads(tasks["deploy"].result_json)["gate"] == answer
    assert _ledger(ledger) == Counter({("build", "build"): 1, ("deploy", "deploy"): 1})
    again = corral("reject", f"{workflow_id}/gate", "--address", api.address, timeout=30)
    assert again.returncode != 0 and "already answered" in again.stderr


@RESTART
def test_reject_fails_the_workflow(cluster: Cluster, tmp_path: Path, restart: bool) -> None:
    ledger = tmp_path / "ledger"
    api = _start(cluster)
    workflow_id = api.submit(_approval_flow(ledger))
    eventually(lambda: _waiting(api, workflow_id), 30, "the gate to wait for approval")
    if restart:
        api = _restart(cluster)
        eventually(lambda: _waiting(api, workflow_id), 30, "the gate to wait again after the restart")
    shown = corral("reject", f"{workflow_id}/gate", "--reason", "not now", "--address", api.address, timeout=30)
    assert shown.returncode == 0, shown.stderr
    final = api.wait_done(workflow_id, timeout=40)
    assert final.state == WorkflowState.FAILED
    tasks = {t.name: t for t in final.tasks}
    assert tasks["gate"].failure_reason == "rejected" and "not now" in tasks["gate"].error
    assert tasks["deploy"].state == TaskState.SKIPPED
    assert _ledger(ledger) == Counter({("build", "build"): 1})


@RESTART
def test_approval_timeout_fails_it_with_the_reason(cluster: Cluster, tmp_path: Path, restart: bool) -> None:
    ledger = tmp_path / "ledger"
    api = _start(cluster)
    workflow_id = api.submit(_approval_flow(ledger, timeout="4s"))
    eventually(lambda: _waiting(api, workflow_id), 30, "the gate to wait for approval")
    if restart:
        api = _restart(cluster)  # the timeout is counted from when it started waiting, across the restart
    final = api.wait_done(workflow_id, timeout=4 * 3 + 10)
    assert final.state == WorkflowState.FAILED
    tasks = {t.name: t for t in final.tasks}
    assert tasks["gate"].failure_reason == "approval_timeout"
    assert tasks["gate"].approval_state == "approval_timeout"
    assert tasks["deploy"].state == TaskState.SKIPPED
    assert _ledger(ledger) == Counter({("build", "build"): 1})


def test_approve_over_the_raw_rpc_refuses_bad_input(cluster: Cluster) -> None:
    api = _start(cluster)
    workflow_id = api.submit({"name": "plain", "tasks": [{"name": "t", "payload": {"shell": "sleep 30"}}]})

    for request, code in (
        (orchestrator_pb2.ResolveApprovalRequest(workflow_id=workflow_id, task=""), grpc.StatusCode.INVALID_ARGUMENT),
        (orchestrator_pb2.ResolveApprovalRequest(workflow_id=workflow_id, task="t"), grpc.StatusCode.INVALID_ARGUMENT),
        (orchestrator_pb2.ResolveApprovalRequest(workflow_id=workflow_id, task="nope"), grpc.StatusCode.NOT_FOUND),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            api.orchestrator.ResolveApproval(request, timeout=10)
        assert caught.value.code() == code, caught.value.details()
    api.cancel(workflow_id, force=True)
