"""End to end (issue 10): the task result cache and workflow parameters, with a ledger the tasks write.

Every task appends ``<workflow id> <task name> <text>`` to a ledger file when its body runs, so the
ledger (not the controller) says what really ran and how often.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from corral.controller.rpc.wire_spec import spec_to_proto
from corral.controller.spec import parse_workflow
from corral.v1 import admin_pb2, admin_pb2_grpc, orchestrator_pb2, types_pb2
from tests.e2e.conftest import RPC_TIMEOUT_S, Api, Cluster, TaskState, WorkflowState, eventually

TTL_S = 10.0


def _task(name: str, ledger: Path, deps: tuple[str, ...] = (), *, sleep: float = 0.0, **fields: Any) -> dict[str, Any]:
    text = fields.pop("text", "ran")
    work = f"sleep {sleep}; " if sleep else ""
    script = (
        f'{work}echo "$CORRAL_WORKFLOW_ID $CORRAL_TASK_NAME {text}" >> {shlex.quote(str(ledger))}; '
        f'echo \'{{"task": "{name}"}}\''
    )
    return {"name": name, "payload": {"shell": script}, "dependencies": list(deps), **fields}


def _workflow(ledger: Path, *, sleep_c: float = 0.0, ttl: float | None = TTL_S) -> dict[str, Any]:
    cache: dict[str, Any] = {"ttl": ttl} if ttl else {}
    return {
        "name": "cached",
        "tasks": [
            _task("a", ledger, cache=cache),
            _task("b", ledger, ("a",), cache=cache),
            _task("c", ledger, ("a",), sleep=sleep_c, cache=cache),
        ],
    }


def _ledger(ledger: Path) -> list[tuple[str, str, str]]:
    if not ledger.exists():
        return []
    lines = [line.split(" ", 2) for line in ledger.read_text().splitlines() if line.strip()]
    return [(wf, name, text) for wf, name, text in lines]


def _submit(api: Api, spec: dict[str, Any], **request: Any) -> str:
    message = orchestrator_pb2.SubmitWorkflowRequest(spec=spec_to_proto(parse_workflow(spec)), start=True, **request)
    return str(api.orchestrator.SubmitWorkflow(message, timeout=RPC_TIMEOUT_S).workflow_id)


def _cached_from(status: types_pb2.WorkflowStatus) -> dict[str, str]:
    return {t.name: t.cache_source_workflow_id for t in status.tasks}


def test_a_second_run_executes_nothing_and_runs_again_after_the_ttl(cluster: Cluster, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    api = cluster.start({"solo": 2})
    first = _submit(api, _workflow(ledger))
    done = api.wait_done(first, timeout=30)
    assert done.state == WorkflowState.COMPLETED, done.error
    expires = max(t.finished_at.ToDatetime().timestamp() for t in done.tasks) + TTL_S
    assert sorted(name for wf, name, _ in _ledger(ledger) if wf == first) == ["a", "b", "c"]

    second = _submit(api, _workflow(ledger))
    again = api.wait_done(second, timeout=30)
    assert time.time() < expires, "too slow to test the cache inside its ttl"
    assert again.state == WorkflowState.COMPLETED, again.error
    assert [line for line in _ledger(ledger) if line[0] == second] == [], "a cached task ran"
    assert _cached_from(again) == {"a": first, "b": first, "c": first}
    assert all(t.state == TaskState.COMPLETED and t.attempts == 0 for t in again.tasks)
    by_name = {t.name: t for t in again.tasks}
    assert json.loads(by_name["b"].result_json) == {"task": "b"}
    events = api.orchestrator.GetWorkflowEvents(orchestrator_pb2.GetWorkflowEventsRequest(workflow_id=second))
    assert sorted(e.task_name for e in events.events if e.kind == "cache_hit") == ["a", "b", "c"]

    # The CLI shows it: CACHED in the table, the source in -o json.
    table = _corral(cluster, "status", second)
    assert table.count("CACHED from " + first) == 3, table
    assert json.loads(_corral(cluster, "status", second, "-o", "json"))["tasks"][0]["cache_source"].startswith(first)

    # --no-cache runs everything (and refreshes the entries).
    fresh = _submit(api, _workflow(ledger), no_cache=True)
    assert api.wait_done(fresh, timeout=30).state == WorkflowState.COMPLETED
    assert sorted(name for wf, name, _ in _ledger(ledger) if wf == fresh) == ["a", "b", "c"]

    # After the ttl of the refreshed entries, everything runs again.
    status = api.status(fresh)
    expires = max(t.finished_at.ToDatetime().timestamp() for t in status.tasks) + TTL_S
    time.sleep(max(0.0, expires - time.time()) + 0.2)  # the ttl must pass: this wait is the test
    late = _submit(api, _workflow(ledger))
    assert api.wait_done(late, timeout=30).state == WorkflowState.COMPLETED
    assert sorted(name for wf, name, _ in _ledger(ledger) if wf == late) == ["a", "b", "c"]
    assert _cached_from(api.status(late)) == {"a": "", "b": "", "c": ""}

    # corral cache clear: the next run executes.
    out = _corral(cluster, "cache", "clear")
    assert out.startswith("cleared 3 cached results"), out
    cleared = _submit(api, _workflow(ledger))
    assert api.wait_done(cleared, timeout=30).state == WorkflowState.COMPLETED
    assert sorted(name for wf, name, _ in _ledger(ledger) if wf == cleared) == ["a", "b", "c"]


@pytest.mark.chaos  # the controller-restart variant: make chaos runs it
def test_cache_replay_after_a_controller_kill9_in_the_middle(cluster: Cluster, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    api = cluster.start({"solo": 2})
    first = _submit(api, _workflow(ledger, sleep_c=3.0, ttl=None))

    def c_running() -> bool:
        tasks = api.tasks(first)
        return tasks["b"].state == TaskState.COMPLETED and tasks["c"].state == TaskState.RUNNING

    eventually(c_running, 30, "b completed and c running")
    cluster.controller.kill9()  # a and b are cached; c runs on through the outage
    cluster.controller.start(["--adopt-grace", "3", "--reconnect-grace", "2"])
    api = cluster.api
    done = api.wait_done(first, timeout=40)
    assert done.state == WorkflowState.COMPLETED, done.error

    second = _submit(api, _workflow(ledger, sleep_c=3.0, ttl=None))
    again = api.wait_done(second, timeout=30)
    assert again.state == WorkflowState.COMPLETED
    assert _cached_from(again) == {"a": first, "b": first, "c": first}
    # Each body ran exactly once over both workflows and the restart.
    assert sorted((wf, name) for wf, name, _ in _ledger(ledger)) == [(first, "a"), (first, "b"), (first, "c")]

    # A second restart with the entries only in the database: still a hit.
    cluster.controller.kill9()
    cluster.controller.start()
    third = _submit(cluster.api, _workflow(ledger, sleep_c=3.0, ttl=None))
    assert _cached_from(cluster.api.wait_done(third, timeout=30)) == {"a": first, "b": first, "c": first}
    assert len(_ledger(ledger)) == 3


def _params_workflow(ledger: Path) -> dict[str, Any]:
    return {
        "name": "params",
        "params": {"who": None, "times": 2},
        "tasks": [
            _task("greet", ledger, text="hello ${params.who} x${params.times}"),
            _task("slow", ledger, ("greet",), sleep=3.0, text="bye ${params.who}"),
        ],
    }


@pytest.mark.chaos  # a controller-restart variant: make chaos runs it
def test_params_are_substituted_at_submit_and_survive_a_restart(cluster: Cluster, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    api = cluster.start({"solo": 1})
    spec_file = tmp_path / "params.yaml"
    spec_file.write_text(json.dumps(_params_workflow(ledger)))

    # Bad input: a parameter that is not declared, a value of the wrong type, a required one missing.
    for args, path in (
        (["-p", "who=x", "-p", "nope=1"], "params.nope"),
        (["-p", "who=x", "-p", "times=two"], "params.times"),
        ([], "params.who"),
    ):
        proc = _corral_proc(cluster, "submit", str(spec_file), *args)
        assert proc.returncode == 2 and path in proc.stderr, proc.stderr
    listed = api.orchestrator.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(), timeout=RPC_TIMEOUT_S)
    assert list(listed.workflows) == [], "a refused submission was stored"

    workflow_id = _corral(cluster, "submit", str(spec_file), "-p", "who=ann").strip()
    eventually(lambda: api.tasks(workflow_id)["slow"].state == TaskState.RUNNING, 30, "slow to run")
    cluster.controller.kill9()
    cluster.controller.start(["--adopt-grace", "3", "--reconnect-grace", "2"])
    done = cluster.api.wait_done(workflow_id, timeout=40)
    assert done.state == WorkflowState.COMPLETED, done.error
    assert json.loads(done.params_json) == {"who": "ann", "times": 2}
    lines = sorted((name, text) for wf, name, text in _ledger(ledger) if wf == workflow_id)
    assert lines == [("greet", "hello ann x2"), ("slow", "bye ann")]


def test_clear_cache_is_scoped_and_validated(cluster: Cluster) -> None:
    api = cluster.start({"solo": 1})
    admin = admin_pb2_grpc.AdminStub(api.channel)
    with pytest.raises(grpc.RpcError) as exc:
        admin.ClearCache(admin_pb2.ClearCacheRequest(namespace="no such"), timeout=RPC_TIMEOUT_S)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as exc:
        admin.ClearCache(admin_pb2.ClearCacheRequest(namespace="missing"), timeout=RPC_TIMEOUT_S)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    answer = admin.ClearCache(admin_pb2.ClearCacheRequest(), timeout=RPC_TIMEOUT_S)
    assert (answer.cleared, answer.remaining) == (0, 0)


def _corral_proc(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    code = "from corral.controller.cli.main import main; main()"
    argv = [sys.executable, "-c", code, *args, "--address", cluster.controller.address]
    return subprocess.run(argv, capture_output=True, text=True, env=cluster.env, timeout=60, check=False)


def _corral(cluster: Cluster, *args: str) -> str:
    proc = _corral_proc(cluster, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
