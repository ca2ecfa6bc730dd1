"""The harness's own detectors: the ledger analysis and the process scanner, on real shells.

If these could not see an overlap, a rerun or an escaped grandchild, every scenario would pass
vacuously; so they are checked against processes that really do those things.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.chaos.ledger import AttemptRun, analyse, ledger_body, read_ledger
from tests.chaos.observe import MARK, ProcScanner, boottime


def _run_body(ledger: Path, attempt: str, work: str, task: str = "t", run_id: str = "r") -> subprocess.Popen[bytes]:
    env = {
        "PATH": "/usr/bin:/bin",
        "CORRAL_WORKFLOW_ID": "wf",
        "CORRAL_TASK_NAME": task,
        "CORRAL_ATTEMPT_ID": attempt,
        MARK: run_id,
    }
    return subprocess.Popen(["/bin/sh", "-c", ledger_body(ledger, work)], env=env, start_new_session=True)


def test_the_ledger_body_writes_start_and_end_on_the_boot_clock(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    before = boottime()
    assert _run_body(ledger, "a1", "sleep 0.2").wait(timeout=30) == 0
    (run,) = read_ledger(ledger).values()
    assert (run.workflow_id, run.task, run.attempt_id) == ("wf", "t", "a1")
    assert run.end is not None
    # /proc/uptime has 10 ms resolution: allow that much either side.
    assert before - 0.02 <= run.start <= run.end <= boottime() + 0.02
    assert run.end - run.start >= 0.15


def test_overlapping_copies_and_double_completions_are_counted(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    first = _run_body(ledger, "old", "sleep 0.6")
    time.sleep(0.2)  # the second copy starts while the first is still running
    second = _run_body(ledger, "new", "sleep 0.2")
    assert first.wait(timeout=30) == 0 and second.wait(timeout=30) == 0
    third = _run_body(ledger, "x", "sleep 0.1", task="other")
    assert third.wait(timeout=30) == 0

    report = analyse(read_ledger(ledger), {})
    (overlap,) = report.overlaps
    assert (overlap.task, overlap.first, overlap.second) == ("t", "old", "new")
    assert 0.1 <= overlap.seconds <= 0.5
    assert report.reruns() == {("wf", "t"): 1}
    assert report.completions[("wf", "other")] == 1


def test_a_killed_copy_overlaps_until_it_was_last_seen_alive() -> None:
    runs = {
        "old": AttemptRun("old", "wf", "t", 1, start=10.0),  # killed: no end line
        "new": AttemptRun("new", "wf", "t", 2, start=20.0, end=25.0),
    }
    assert analyse(runs, {}).overlaps == []  # without a sighting it stopped at its start
    (overlap,) = analyse(runs, {"old": 22.0}).overlaps
    assert abs(overlap.seconds - 2.0) < 1e-9
    assert analyse(runs, {"old": 19.9}).overlaps == []
    assert analyse(runs, {"old": 19.9}).reruns() == {}


def test_the_scanner_finds_a_double_forked_setsid_grandchild(tmp_path: Path) -> None:
    run_id = f"scan-{os.getpid()}"
    scanner = ProcScanner(run_id)
    pid_file = tmp_path / "grandchild"
    work = f"sh -c '(setsid sh -c \"echo \\$\\$ > {pid_file}; exec sleep 60\" &)'"
    shell = _run_body(tmp_path / "ledger", "esc", work, run_id=run_id)
    assert shell.wait(timeout=30) == 0  # the task itself is done; its grandchild is not
    deadline = time.monotonic() + 10
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the grandchild never started"
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    try:
        found = scanner.scan()
        assert grandchild in found.get("esc", set())
        assert os.getsid(grandchild) != os.getsid(0), "the grandchild should have its own session"
    finally:
        os.kill(grandchild, 9)
    deadline = time.monotonic() + 10
    while "esc" in scanner.alive():
        assert time.monotonic() < deadline, "the killed grandchild is still seen alive"
        time.sleep(0.05)
    assert scanner.last_alive()["esc"] <= boottime()
