"""The fault scenarios. Each is a function ``(directory, timings) -> Row`` listed in :data:`SCENARIOS`.

The agent faults share one shape (:func:`_agent_fault`): a DAG of short tasks plus a few long
ones, a fault on the agent running the first long task, held for a time scaled to the run's
fence-after (the issue's figures are for fence-after 30 s), then healed or not. The rest are
written out. Every scenario ends with :func:`tests.chaos.invariants.check`.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from corral.v1 import types_pb2
from tests.chaos.harness import FAST, AgentProc, ChaosCluster, Timings, tmpfs
from tests.chaos.invariants import Row, check
from tests.chaos.ledger import LedgerReport, read_ledger
from tests.chaos.observe import boottime
from tests.chaos.workloads import dag, ledger_task, pipe_holder, poison

__all__ = ["SCENARIOS", "Scenario"]

COMPLETED = types_pb2.TASK_STATE_COMPLETED
RUNNING = types_pb2.TASK_STATE_RUNNING
FAILED = types_pb2.TASK_STATE_FAILED


@dataclass(frozen=True)
class Scenario:
    """A named scenario; ``needs`` lists "netns", "root" or "freezer"; ``fast`` ones run in make test."""

    name: str
    run: Callable[[Path, Timings], Row]
    needs: tuple[str, ...] = ()
    fast: bool = False
    timings: Timings = field(default_factory=Timings)


def _scale(timings: Timings) -> float:
    return timings.fence_after / 30.0


def _row(name: str) -> Row:
    return Row(name)


# -- agent faults ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentFault:
    """Hold ``hold`` seconds (at fence-after 30 s; None: never healed) of ``kind`` on one agent."""

    kind: str  # partition | oneway | sigstop | freeze | kill9
    hold: float | None
    netns: bool = False


def _apply(cluster: ChaosCluster, victim: AgentProc, kind: str) -> Callable[[], None]:
    """Start the fault; returns what ends it."""
    if kind == "partition":
        cluster.partition(victim)
        return lambda: cluster.heal(victim)
    if kind == "oneway":
        cluster.partition(victim, "in")
        return lambda: cluster.heal(victim)
    if kind == "sigstop":
        victim.signal(signal.SIGSTOP)
        return lambda: victim.signal(signal.SIGCONT)
    if kind == "freeze":
        cgroup = cluster.freeze(victim)
        return lambda: cluster.thaw(cgroup)
    if kind == "kill9":
        victim.kill9()
        return lambda: None
    raise ValueError(f"unknown fault {kind!r}")


def _agent_fault(fault: AgentFault, name: str) -> Callable[[Path, Timings], Row]:
    def run(directory: Path, timings: Timings) -> Row:
        row = _row(name)
        fenced = fault.hold is None or fault.hold * _scale(timings) > timings.fence_after
        hold = None if fault.hold is None else fault.hold * _scale(timings)
        window = timings.fence_after + timings.kill_grace
        long_s = round(window * 1.5 + 5)
        with ChaosCluster(directory, timings, netns=fault.netns) as cluster:
            longs = [ledger_task(f"long{i}", cluster.ledger, cluster.run_id, f"sleep {long_s}") for i in range(3)]
            tasks = longs + dag(cluster.ledger, cluster.run_id, 60, 6, (2, 3, 4, 5))
            workflow_id = cluster.submit({"name": name, "tasks": tasks})
            started = cluster.wait(lambda: cluster.running_on(workflow_id, ["long0", "long1", "long2"]), 60, "longs")
            victim_id = started["long0"].agent_id
            victim = next(a for a in cluster.agents.values() if a.name == victim_id)
            # As in production, the fault comes after the controller's adoption grace (no agent is
            # declared lost in the first adopt_grace seconds after a start): detection is then the lease.
            settle = cluster.controller.started_at + timings.adopt_grace - boottime()
            if settle > 0:
                time.sleep(settle)  # not an assert: the fault waits until the grace is over
            time.sleep(1.0)  # some short tasks are now mid-run on the victim too
            at_fault = [t for t in cluster.status(workflow_id).tasks if t.agent_id == victim_id]
            on_victim = {t.attempt_id for t in at_fault if t.state in (RUNNING, types_pb2.TASK_STATE_ASSIGNED)}
            # Detection and requeue times are about running attempts: an assigned one not started
            # is taken back by the assignment lease (seconds), which is not the fault's detection.
            running = {t.attempt_id for t in at_fault if t.state == RUNNING}
            t0 = boottime()
            heal = _apply(cluster, victim, fault.kind)
            if hold is not None:
                time.sleep(hold)  # the fault itself: its length is the scenario's parameter
                heal()
            finished = cluster.wait_terminal([workflow_id], timeout=long_s * 2 + window + 120 * _scale(timings))
            report = check(cluster, row, [workflow_id], finished)
            lost_at = cluster.monitor.agent_lost_at(victim.name, t0)
            requeued = cluster.monitor.requeued_at(running, t0)
            detected = [t for t in (lost_at, requeued) if t is not None]
            row.detect_s = min(detected) - t0 if detected else None
            replacement = _first_replacement_start(report, running, t0)
            row.recover_s = replacement - t0 if replacement is not None else None
            old_runs = [r for r in report.runs.values() if r.attempt_id in on_victim]
            killed = [r for r in old_runs if r.end is None]
            if fenced:
                # Every copy running on the victim at the fault stopped (ended or killed) by then.
                old_dead = max((r.stop - t0 for r in old_runs), default=None)
                row.figures["old_copy_dead_s"] = old_dead
                row.figures["requeued_s"] = None if requeued is None else requeued - t0
                row.expect(
                    old_dead is None or old_dead <= window + 1.0,
                    f"an old copy was alive {old_dead} s after the fault (fence-after + grace = {window:g} s)",
                )
                # The bound is fence-after + grace + 2 s. One heartbeat more: in a one-way
                # partition (controller -> agent dropped) the agent's next heartbeat still arrives
                # (its TCP stalls only after that segment goes unacknowledged), and the controller,
                # which must assume its echo of it may yet renew the supervisors, counts from there.
                limit = window + 2.0 + timings.heartbeat
                row.expect(
                    requeued is not None and requeued - t0 <= limit,
                    f"requeued {row.figures['requeued_s']} s after the fault (limit {limit:g} s)",
                )
            else:
                # Counted on the ledger: taking back an assignment the agent never got is no rerun.
                reran = sorted(task for (_, task), n in report.starts.items() if n > 1)
                row.expect(not reran, f"a fault shorter than fence-after re-ran tasks: {reran}")
                row.expect(not killed, f"a fault shorter than fence-after killed {len(killed)} attempt(s)")
            row.expect_clean()
        return row

    return run


def _first_replacement_start(report: LedgerReport, old: set[str], after: float) -> float | None:
    tasks = {report.runs[a].key for a in old if a in report.runs}
    starts = [r.start for r in report.runs.values() if r.key in tasks and r.attempt_id not in old and r.start >= after]
    return min(starts, default=None)


# -- controller faults ----------------------------------------------------------------------------


def _controller_down(hold_at_30: float, name: str) -> Callable[[Path, Timings], Row]:
    def run(directory: Path, timings: Timings) -> Row:
        row = _row(name)
        hold = hold_at_30 * _scale(timings)
        fenced = hold > timings.fence_after
        long_s = round(hold + timings.fence_after + 15)
        with ChaosCluster(directory, timings) as cluster:
            tasks = [ledger_task(f"stop{i}", cluster.ledger, cluster.run_id, f"sleep {long_s}") for i in range(3)]
            tasks.append(ledger_task("keep", cluster.ledger, cluster.run_id, f"sleep {long_s}", on_disconnect="keep"))
            tasks += dag(cluster.ledger, cluster.run_id, 18, 6, (2, 3, 4, 5))
            workflow_id = cluster.submit({"name": name, "tasks": tasks})
            names = ["stop0", "stop1", "stop2", "keep"]
            cluster.wait(lambda: cluster.running_on(workflow_id, names), 60, "the long tasks to run")
            time.sleep(1.0)
            t0 = boottime()
            cluster.controller.kill9()
            time.sleep(hold)  # the outage is the scenario's parameter
            cluster.controller.start()
            cluster.reset_channel()
            cluster.wait(lambda: cluster.status(workflow_id), 10, "the controller to serve", interval=0.02)
            row.figures["serving_after_restart_s"] = boottime() - cluster.controller.recovery_started()
            finished = cluster.wait_terminal([workflow_id], timeout=long_s * 2 + 120)
            report = check(cluster, row, [workflow_id], finished)
            final = cluster.tasks(workflow_id)
            keep = final["keep"]
            row.expect(keep.attempts == 1 and keep.state == COMPLETED, "the keep task did not run through")
            if fenced:
                for n in names[:3]:
                    row.expect(final[n].attempts == 2, f"{n}: {final[n].attempts} attempts, expected 2 (fenced once)")
                replacement = _first_replacement_start(report, {r.attempt_id for r in report.by_task("stop0")[:1]}, t0)
                row.recover_s = None if replacement is None else replacement - t0
            else:
                reran = sorted(task for (_, task), n in report.starts.items() if n > 1)
                row.expect(not reran, f"an outage shorter than fence-after re-ran tasks: {reran}")
                row.recover_s = row.figures["serving_after_restart_s"] + hold
            row.expect_clean()
        return row

    return run


def _controller_kill9(
    kills: int, count: int, width: int, seconds: tuple[float, ...], name: str
) -> Callable[[Path, Timings], Row]:
    def run(directory: Path, timings: Timings) -> Row:
        row = _row(name)
        with ChaosCluster(directory, timings) as cluster:
            tasks = dag(cluster.ledger, cluster.run_id, count, width, seconds)
            workflow_id = cluster.submit({"name": name, "tasks": tasks})
            serving, from_spawn, agents_back = [], [], []
            for _ in range(kills):
                time.sleep(max(seconds) * 1.5)  # let a few layers complete between kills
                cluster.controller.kill9()
                cluster.controller.start()
                cluster.reset_channel()
                cluster.wait(lambda: cluster.status(workflow_id), 10, "the controller to serve", interval=0.02)
                # Recovery is timed from the database's opening: the interpreter's start-up and
                # imports before it (1.5-5 s on a loaded 2-core machine) are not the controller's.
                serving.append(boottime() - cluster.controller.recovery_started())
                from_spawn.append(boottime() - cluster.controller.started_at)
                cluster.wait_connected(list(cluster.agents), 30, "the agents to come back")
                agents_back.append(boottime() - cluster.controller.started_at)
            finished = cluster.wait_terminal([workflow_id], timeout=count * max(seconds) / 4 + 60)
            report = check(cluster, row, [workflow_id], finished)
            row.recover_s = max(serving)
            row.figures["serving_s_max"] = max(serving)
            row.figures["serving_from_spawn_s_max"] = max(from_spawn)
            row.figures["agents_back_s_max"] = max(agents_back)
            row.figures["restarted_bodies"] = sum(n - 1 for n in report.starts.values() if n > 1)
            final = cluster.status(workflow_id).tasks
            row.expect(all(t.state == COMPLETED for t in final), "not every task COMPLETED")
            row.expect(not report.reruns(), f"completed bodies ran again: {sorted(report.reruns())[:5]}")
            # From spawn: the interpreter's own start (imports) is not the controller's recovery.
            row.expect(max(serving) <= 1, f"serving {max(serving):.2f} s after a restart opened its database")
            row.expect_clean("lost", "overlaps", "orphans")
        return row

    return run


# -- agent restarts, poison -----------------------------------------------------------------------


def agent_restart_x10(directory: Path, timings: Timings) -> Row:
    row = _row("agent-restart-x10")
    with ChaosCluster(directory, timings, agents=1, slots=1) as cluster:
        task = ledger_task("sixty", cluster.ledger, cluster.run_id, "sleep 60")
        workflow_id = cluster.submit({"name": "restarts", "tasks": [task]})
        cluster.wait(lambda: cluster.running_on(workflow_id, ["sixty"]), 30, "the task to run")
        agent = cluster.agents["a1"]
        pids_alive = []
        for _ in range(10):
            runs = read_ledger(cluster.ledger)
            pids_alive.append(all(Path(f"/proc/{r.pid}").exists() for r in runs.values()))
            agent.kill9()
            time.sleep(2.0)  # systemd's RestartSec
            agent.restart()
            cluster.wait_connected(["a1"], 30, "the agent to reconnect")
            time.sleep(0.5)
        finished = cluster.wait_terminal([workflow_id], timeout=150)
        report = check(cluster, row, [workflow_id], finished)
        final = cluster.tasks(workflow_id)["sixty"]
        row.figures["attempts"] = final.attempts
        row.figures["ledger_starts"] = len(report.runs)
        row.expect(final.state == COMPLETED, f"the task ended {types_pb2.TaskState.Name(final.state)}")
        row.expect(final.attempts == 1 and len(report.runs) == 1, "the task was restarted")
        row.expect(all(pids_alive), "the task's pid died during a restart cycle")
        row.expect_clean()
    return row


def poison_task(directory: Path, timings: Timings) -> Row:
    row = _row("poison")
    with ChaosCluster(directory, timings) as cluster:
        for agent in cluster.agents.values():
            agent.auto_restart = True
        tasks = [poison("poison", cluster.ledger, cluster.run_id, retries=5)]
        tasks += [ledger_task(f"n{i}", cluster.ledger, cluster.run_id, f"sleep {2 + i % 4}") for i in range(20)]
        t0 = boottime()
        workflow_id = cluster.submit({"name": "poison", "tasks": tasks})
        finished = cluster.wait_terminal([workflow_id], timeout=30 + 150 * _scale(timings))
        deaths = sum(a.deaths for a in cluster.agents.values())
        for agent in cluster.agents.values():
            agent.auto_restart = False
        check(cluster, row, [workflow_id], finished)
        final = cluster.tasks(workflow_id)
        bad = final["poison"]
        row.detect_s = boottime() - t0 if finished else None
        row.figures.update(agent_deaths=deaths, agent_losses=bad.agent_losses, attempts=bad.attempts)
        row.expect(bad.state == FAILED and bad.failure_reason == "poison", f"poison ended {bad.failure_reason!r}")
        row.expect(deaths == 3, f"{deaths} agent deaths, expected 3")
        done = sum(1 for n, t in final.items() if n != "poison" and t.state == COMPLETED)
        row.expect(done == 20, f"{done} of the 20 normal tasks completed")
        row.expect_clean("double", "overlaps", "orphans")
    return row


# -- timeouts, disk full --------------------------------------------------------------------------


def timeout_pipe(directory: Path, timings: Timings) -> Row:
    row = _row("timeout-pipe")
    grace = timings.kill_grace
    with ChaosCluster(directory, timings, agents=1, slots=2) as cluster:
        holder = pipe_holder("holder", cluster.ledger, cluster.run_id, timeout_s=2)
        workflow_id = cluster.submit({"name": "pipes", "tasks": [holder]})
        finished = cluster.wait_terminal([workflow_id], timeout=60)
        report = check(cluster, row, [workflow_id], finished)
        task = cluster.tasks(workflow_id)["holder"]
        run = report.runs.get(task.attempt_id)
        ended = cluster.monitor.ended_at().get(task.attempt_id)
        took = None if run is None or ended is None else ended - run.start
        tree_gone = None if run is None or run.last_alive is None or ended is None else run.last_alive - ended
        row.recover_s = took
        row.figures.update(ended_after_s=took, tree_alive_after_end_s=tree_gone)
        row.expect(task.state == FAILED and "timed out" in task.error, f"the task ended {task.error!r}")
        row.expect(took is not None and abs(took - (2 + grace)) <= 1.0, f"ended after {took} s, not 2 + {grace:g} ± 1")
        row.expect(tree_gone is not None and tree_gone <= 1.0, f"its tree outlived the attempt by {tree_gone} s")
        row.expect_clean("lost", "orphans")
    return row


def disk_full(directory: Path, timings: Timings) -> Row:
    row = _row("disk-full")
    with tmpfs(directory / "dbfs", 48) as dbfs, ChaosCluster(directory, timings, db_dir=dbfs) as cluster:
        acked: list[str] = []
        outcomes: list[tuple[float, str]] = []  # (time, "ok" or the status code) of each submit
        read_failures: list[str] = []
        stop = threading.Event()

        def small(i: int) -> dict[str, Any]:
            return {"name": f"w{i}", "tasks": [ledger_task("a", cluster.ledger, cluster.run_id, "sleep 0.5")]}

        def submitter() -> None:
            i = 0
            while not stop.wait(0.2):
                i += 1
                try:
                    acked.append(cluster.submit(small(i), timeout=5))
                    outcomes.append((boottime(), "ok"))
                except grpc.RpcError as exc:
                    outcomes.append((boottime(), f"{exc.code().name}: {exc.details()}"))
                if acked:
                    try:
                        cluster.status(acked[0], timeout=5)
                    except grpc.RpcError as exc:
                        read_failures.append(exc.code().name)

        thread = threading.Thread(target=submitter, daemon=True)
        thread.start()
        cluster.wait(lambda: len(acked) >= 3, 30, "a few acknowledged workflows")
        filler = dbfs / "filler"
        t_fill = boottime()
        _fill(filler)
        try:
            cluster.wait(lambda: any(t > t_fill and o != "ok" for t, o in outcomes), 15, "a refused write")
        except TimeoutError:
            row.failures.append("no write was refused with the disk full")
        time.sleep(3.0)  # keep it full a while: reads must go on answering
        t_free = boottime()
        filler.unlink()
        try:
            cluster.wait(lambda: any(t > t_free and o == "ok" for t, o in outcomes), 15, "a write after freeing space")
        except TimeoutError:
            row.failures.append("writes did not resume within 15 s of freeing space")
        stop.set()
        thread.join(timeout=20)
        resumed = min((t for t, o in outcomes if t > t_free and o == "ok"), default=None)
        row.recover_s = None if resumed is None else resumed - t_free
        refusals = sorted({o for t, o in outcomes if t_fill < t and o != "ok"})
        row.figures.update(acked=len(acked), refusals=refusals[:3], read_failures=len(read_failures))
        row.expect(cluster.controller.starts == 1 and cluster.controller.alive(), "the controller died")
        row.expect(
            bool(refusals) and all(o.startswith("RESOURCE_EXHAUSTED") for o in refusals), f"refused with {refusals}"
        )
        row.expect(not read_failures, f"reads failed while the disk was full: {sorted(set(read_failures))}")
        row.expect(row.recover_s is not None and row.recover_s <= 5.0, f"resumed {row.recover_s} s after freeing")
        if cluster.controller.alive():
            finished = cluster.wait_terminal(acked, timeout=60)
            check(cluster, row, acked, finished)
            row.expect_clean()
    return row


def _fill(path: Path) -> None:
    """Write zeros to ``path`` until the file system is full (tmpfs: ENOSPC). Unbuffered: nothing is
    left to flush (and fail) at close."""
    chunk = b"\0" * (1 << 20)
    with path.open("wb", buffering=0) as handle:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
            try:
                while True:
                    handle.write(chunk[:size])
            except OSError:
                continue


I8 = "issue8"  # the scenario tests a feature of issue 8 (pytest skips it on a tree without them)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("partition-45", _agent_fault(AgentFault("partition", 45, netns=True), "partition-45"), ("netns", I8)),
    Scenario("oneway-45", _agent_fault(AgentFault("oneway", 45, netns=True), "oneway-45"), ("netns", I8)),
    Scenario("sigstop-50", _agent_fault(AgentFault("sigstop", 50), "sigstop-50"), (I8,)),
    Scenario("freezer-50", _agent_fault(AgentFault("freeze", 50), "freezer-50"), ("freezer", I8)),
    # Not in make test's fast subset (its 25 minutes): tests/e2e/test_recovery.py covers an agent's
    # and a controller's kill -9 there; make chaos runs these with the timings.
    Scenario("agent-kill9", _agent_fault(AgentFault("kill9", None), "agent-kill9"), (I8,)),
    Scenario("partition-20", _agent_fault(AgentFault("partition", 20, netns=True), "partition-20"), ("netns", I8)),
    Scenario("controller-down-20", _controller_down(20, "controller-down-20"), (I8,)),
    Scenario("controller-down-45", _controller_down(45, "controller-down-45"), (I8,)),
    Scenario("agent-restart-x10", agent_restart_x10, (I8,)),
    Scenario("controller-kill9-x5", _controller_kill9(5, 200, 20, (2, 3, 4, 5), "controller-kill9-x5")),
    Scenario("controller-kill9-x3", _controller_kill9(3, 60, 10, (0.5, 1, 1.5, 2), "controller-kill9-x3")),
    Scenario("poison", poison_task, (I8,), fast=True),
    Scenario("timeout-pipe", timeout_pipe, (I8,), fast=True, timings=Timings(kill_grace=2.0)),
    Scenario("disk-full", disk_full, ("root", I8), fast=True),
)

#: The timings the fast subset runs with inside ``make test``.
FAST_TIMINGS = FAST
