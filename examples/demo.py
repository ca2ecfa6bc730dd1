"""The corral demo: a local cluster runs the example workflows, then prints what happened.

``make demo`` runs this file. It starts a controller on a fresh SQLite file in a temporary
directory and two agents (two slots each), then runs, each with the live progress view of
``corral run``:

- ``pipeline.yaml``: fan-out / fan-in of shell and python tasks whose results flow downstream;
- ``retry.yaml``: a task that fails once and succeeds on its retry;
- ``priority-low.yaml`` then ``priority-high.yaml``: the later, higher-priority workflow jumps the
  queue and finishes first.

It prints a summary of each workflow (state, critical path, duration, per-task timings), stops
everything it started (also on Ctrl-C or an error) and exits 0 only when every example behaved as
expected.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import grpc

from corral.controller.rpc.wire_spec import spec_to_proto
from corral.controller.spec import load_workflow_file
from corral.v1 import agent_pb2, agent_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

EXAMPLES = Path(__file__).resolve().parent
sys.path.insert(0, str(EXAMPLES))

from corral_examples.flaky import STATE_ENV  # noqa: E402  (needs the sys.path entry above)
from corral_examples.local import LocalCluster, corral_command  # noqa: E402

RPC_TIMEOUT_S = 30.0
EXPECTED_SUM_SQUARES = sum(n * n for n in range(1, 41))


class DemoFailure(Exception):
    """An example did not behave as documented."""


@dataclass(frozen=True)
class Outcome:
    """The final status of a workflow plus what only a WorkflowResult carries."""

    status: types_pb2.WorkflowStatus
    critical_path: list[str]
    duration_s: float

    def task(self, name: str) -> types_pb2.TaskStatus:
        for task in self.status.tasks:
            if task.name == name:
                return task
        raise DemoFailure(f"workflow {self.status.name} has no task {name!r}")

    def result(self, name: str) -> Any:
        raw = self.task(name).result_json
        return json.loads(raw) if raw else None


class Demo:
    """Drives the examples against a running local cluster through the CLI and the raw stubs."""

    def __init__(self, cluster: LocalCluster, channel: grpc.Channel) -> None:
        self.cluster = cluster
        # The generated stubs are untyped; the messages they carry are typed.
        self.orchestrator: Any = orchestrator_pb2_grpc.OrchestratorStub(channel)
        self.agents: Any = agent_pb2_grpc.ClusterStub(channel)
        self.agent_names: dict[str, str] = {}

    # -- plumbing ---------------------------------------------------------------------------------

    def wait_for_agents(self, count: int, deadline_s: float = 30.0) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            self.cluster.check_alive()
            response = self.agents.ListAgents(agent_pb2.ListAgentsRequest(), timeout=RPC_TIMEOUT_S)
            connected = [a for a in response.agents if a.state == types_pb2.AGENT_STATE_CONNECTED]
            if len(connected) >= count:
                self.agent_names = {a.agent_id: a.name for a in response.agents}
                return
            time.sleep(0.2)
        raise DemoFailure(f"{count} agents did not connect within {deadline_s:g}s")

    def corral_run(self, file: Path) -> int:
        """Run a workflow file with the live progress view on this terminal; return the exit code."""
        print(f"\n$ corral run {file.name}", flush=True)
        command = [*corral_command(), "run", str(file), "--address", self.cluster.address]
        return subprocess.run(command, cwd=EXAMPLES, check=False, timeout=120).returncode

    def workflow_id(self, name: str) -> str:
        response = self.orchestrator.ListWorkflows(
            orchestrator_pb2.ListWorkflowsRequest(name_prefix=name, limit=100), timeout=RPC_TIMEOUT_S
        )
        matches = [w for w in response.workflows if w.name == name]
        if len(matches) != 1:
            raise DemoFailure(f"expected one workflow named {name!r}, found {len(matches)}")
        return str(matches[0].workflow_id)

    def submit(self, file: Path) -> str:
        spec = spec_to_proto(load_workflow_file(file))
        request = orchestrator_pb2.SubmitWorkflowRequest(spec=spec, start=True)
        return str(self.orchestrator.SubmitWorkflow(request, timeout=RPC_TIMEOUT_S).workflow_id)

    def status(self, workflow_id: str) -> types_pb2.WorkflowStatus:
        request = orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id, include_tasks=True)
        response = self.orchestrator.GetWorkflowStatus(request, timeout=RPC_TIMEOUT_S)
        status: types_pb2.WorkflowStatus = response.status
        return status

    def outcome(self, workflow_id: str, wait_s: float = 90.0) -> Outcome:
        """Wait for the workflow to finish and collect its status and result."""
        request = orchestrator_pb2.ExecuteWorkflowRequest(workflow_id=workflow_id, wait=True, wait_timeout_s=wait_s)
        critical_path: list[str] = []
        duration = 0.0
        try:
            response = self.orchestrator.ExecuteWorkflow(request, timeout=wait_s + RPC_TIMEOUT_S)
            if response.HasField("result"):
                critical_path = list(response.result.critical_path)
                duration = response.result.duration_s
        except grpc.RpcError as exc:
            # A finished workflow may refuse to be executed again; its status still tells all.
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
        status = self.status(workflow_id)
        if not duration and status.HasField("started_at") and status.HasField("finished_at"):
            duration = _seconds(status.finished_at) - _seconds(status.started_at)
        return Outcome(status, critical_path, duration)

    # -- the examples -----------------------------------------------------------------------------

    def pipeline(self) -> Outcome:
        code = self.corral_run(EXAMPLES / "pipeline.yaml")
        outcome = self.outcome(self.workflow_id("pipeline"))
        _expect(code == 0, f"corral run pipeline.yaml exited {code}, expected 0")
        _expect_state(outcome, types_pb2.WORKFLOW_STATE_COMPLETED)
        combined = outcome.result("combine")
        _expect(
            combined == {"parts": 4, "count": 40, "sum_squares": EXPECTED_SUM_SQUARES},
            f"combine returned {combined!r}",
        )
        report = outcome.result("report")
        _expect(report == {"combine": combined}, f"report did not receive combine's result: {report!r}")
        return outcome

    def retry(self) -> Outcome:
        code = self.corral_run(EXAMPLES / "retry.yaml")
        outcome = self.outcome(self.workflow_id("retry"))
        _expect(code == 0, f"corral run retry.yaml exited {code}, expected 0")
        _expect_state(outcome, types_pb2.WORKFLOW_STATE_COMPLETED)
        flaky = outcome.task("flaky")
        _expect(flaky.attempts == 2, f"flaky took {flaky.attempts} attempts, expected 2 (fail, then succeed)")
        recovered = outcome.result("flaky")
        _expect(recovered == {"key": "retry-example", "recovered": True}, f"flaky returned {recovered!r}")
        return outcome

    def priority(self) -> tuple[Outcome, Outcome]:
        print("\n$ (submitting priority-low.yaml in the background: 16 tasks at priority 10)", flush=True)
        low_id = self.submit(EXAMPLES / "priority-low.yaml")
        self._wait_until_running(low_id)
        code = self.corral_run(EXAMPLES / "priority-high.yaml")
        high = self.outcome(self.workflow_id("priority-high"))
        low = self.outcome(low_id)
        _expect(code == 0, f"corral run priority-high.yaml exited {code}, expected 0")
        _expect_state(high, types_pb2.WORKFLOW_STATE_COMPLETED)
        _expect_state(low, types_pb2.WORKFLOW_STATE_COMPLETED)
        # Jumping the queue: every urgent task started before the last queued batch task did.
        urgent = [_seconds(t.started_at) for t in high.status.tasks if t.name.startswith("urgent")]
        last_batch_start = max(_seconds(t.started_at) for t in low.status.tasks)
        _expect(max(urgent) < last_batch_start, "the urgent tasks did not overtake the queued batch tasks")
        _expect(
            _seconds(high.status.finished_at) < _seconds(low.status.finished_at),
            "priority-high did not finish before priority-low",
        )
        return low, high

    def _wait_until_running(self, workflow_id: str, deadline_s: float = 30.0) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            status = self.status(workflow_id)
            if any(t.state == types_pb2.TASK_STATE_RUNNING for t in status.tasks):
                return
            time.sleep(0.1)
        raise DemoFailure(f"no task of {workflow_id} started within {deadline_s:g}s")

    # -- reporting --------------------------------------------------------------------------------

    def summary(self, outcome: Outcome) -> None:
        status = outcome.status
        state = types_pb2.WorkflowState.Name(status.state).removeprefix("WORKFLOW_STATE_")
        print(f"\n{status.name} ({status.workflow_id}): {state} in {outcome.duration_s:.2f}s")
        if outcome.critical_path:
            print(f"  critical path: {' -> '.join(outcome.critical_path)}")
        origin = _seconds(status.started_at) if status.HasField("started_at") else 0.0
        print(f"  {'task':<14} {'state':<10} {'agent':<14} {'tries':>5} {'start':>7} {'took':>6}")
        for task in sorted(status.tasks, key=lambda t: (_seconds(t.started_at), t.name)):
            task_state = types_pb2.TaskState.Name(task.state).removeprefix("TASK_STATE_")
            agent = self.agent_names.get(task.agent_id, task.agent_id[:12])
            start = _seconds(task.started_at) - origin if task.HasField("started_at") else float("nan")
            took = (
                _seconds(task.finished_at) - _seconds(task.started_at)
                if task.HasField("finished_at") and task.HasField("started_at")
                else float("nan")
            )
            row = f"{task.name:<14} {task_state:<10} {agent:<14} {task.attempts:>5}"
            print(f"  {row} {start:>6.2f}s {took:>5.2f}s")


def _seconds(stamp: Any) -> float:
    return float(stamp.seconds) + float(stamp.nanos) / 1e9


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise DemoFailure(message)


def _expect_state(outcome: Outcome, state: int) -> None:
    got = outcome.status.state
    _expect(
        got == state,
        f"{outcome.status.name} ended {types_pb2.WorkflowState.Name(got)}, expected "
        f"{types_pb2.WorkflowState.Name(state)}: {outcome.status.error}",
    )


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM to the demo behaves like Ctrl-C: unwind through the finally that stops the cluster.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-dir", type=Path, help="where the database, logs and work dirs go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the base dir (logs, database) afterwards")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)

    base_dir: Path = args.base_dir or Path(tempfile.mkdtemp(prefix="corral-demo-"))
    base_dir.mkdir(parents=True, exist_ok=True)
    # The retry example keeps its marker here; agents inherit it through the environment.
    os.environ[STATE_ENV] = str(base_dir / "state")
    # The demo's cluster is plaintext on loopback: credentials exported for another cluster would
    # make its agents and `corral run` try TLS or send tokens meant for somebody else.
    for name in ("CORRAL_CA", "CORRAL_CERT", "CORRAL_KEY", "CORRAL_TOKEN", "CORRAL_JOIN_TOKEN"):
        os.environ.pop(name, None)
    cluster = LocalCluster(base_dir, agents=2, slots=2, python_path=[EXAMPLES], dashboard=True)
    failed = True
    try:
        print(f"corral demo: controller and 2 agents under {base_dir}", flush=True)
        address = cluster.start()
        with grpc.insecure_channel(address) as channel:
            demo = Demo(cluster, channel)
            demo.wait_for_agents(2)
            names = ", ".join(sorted(demo.agent_names.values()))
            print(f"controller at {address}; agents: {names}", flush=True)
            print(f"dashboard at {cluster.dashboard_url} (open it while the demo runs)", flush=True)
            outcomes = [demo.pipeline(), demo.retry(), *demo.priority()]
            print("\n=== summary ===")
            for outcome in outcomes:
                demo.summary(outcome)
        failed = False
        print("\nevery example behaved as expected")
    except DemoFailure as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
    except Exception as exc:
        print(f"\ndemo FAILED with an error: {exc!r}", file=sys.stderr)
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave daemons behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.stop()
        if failed or args.keep:
            print(f"logs and database kept in {base_dir}", file=sys.stderr)
        elif args.base_dir is None:
            shutil.rmtree(base_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
