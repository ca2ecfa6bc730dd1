"""The python worker template's rehearsal of the task path (``pyworker._rehearse``).

It runs in the template before the first fork, so it must run the real path (every rehearsed task
answers a success) and leave nothing behind: no output on the worker's streams, the environment,
folder, import path and task state as they were. Each case runs in a fresh interpreter: the path
reaps and kills leftover child processes, which a test process must not do to its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from corral.agent import pyworker

_SCRIPT = r"""
import json, os, sys
from corral import task as corral_task
from corral.agent import pyworker

home, report_fd, switch = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "switch"
os.chdir(home)
before = {"env": dict(os.environ), "path": list(sys.path)}
env = pyworker.TaskEnv()
stdout, stderr = sys.stdout, sys.stderr
if switch:
    answered = pyworker._rehearse(env, home, stdout, stderr)
else:
    answered = pyworker._rehearse(env, home, stdout, stderr, count=pyworker.WARM_UPS, switch=False)
after = {"env": dict(os.environ), "path": list(sys.path)}
report = {
    "answered": answered,
    "same_env": before["env"] == after["env"],
    "same_path": before["path"] == after["path"],
    "cwd": os.getcwd(),
    "streams_kept": sys.stdout is stdout and sys.stderr is stderr,
    "task_inactive": corral_task._active is False,
    "home_entries": sorted(os.listdir(home)),
}
os.write(report_fd, json.dumps(report).encode())
"""


def _rehearse_in_a_fresh_interpreter(home: Path, switch: bool = True) -> tuple[dict[str, object], bytes, bytes]:
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _SCRIPT, str(home), str(write_end), "switch" if switch else "warm"],
            capture_output=True,
            pass_fds=(write_end,),
            timeout=60,
        )
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as report:
        raw = report.read()
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(raw), proc.stdout, proc.stderr


def test_the_rehearsal_runs_the_whole_task_path_and_leaves_nothing_behind(tmp_path: Path) -> None:
    report, stdout, stderr = _rehearse_in_a_fresh_interpreter(tmp_path)
    assert report["answered"] == pyworker.REHEARSALS  # every rehearsed task went the success path
    assert report["same_env"] and report["same_path"] and report["streams_kept"] and report["task_inactive"]
    assert report["cwd"] == str(tmp_path.resolve())
    assert report["home_entries"] == []  # nothing written in the worker's folder
    assert stdout == b"" and stderr == b""  # nothing the agent would take for a task's output


def test_a_standby_childs_warm_up_leaves_the_folder_the_active_child_uses(tmp_path: Path) -> None:
    # A standby warms up while the active child's task may be writing in the same folder: its
    # rehearsal must not take the switch path, which empties the folder.
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "in-use.txt").write_text("the active task's file")
    (tmp_path / "result.json").write_text("{}")
    report, stdout, stderr = _rehearse_in_a_fresh_interpreter(tmp_path, switch=False)
    assert report["answered"] == pyworker.WARM_UPS
    assert report["home_entries"] == ["result.json", "tmp"]
    assert (tmp_path / "tmp" / "in-use.txt").read_text() == "the active task's file"
    assert report["same_env"] and report["same_path"] and report["task_inactive"]
    assert stdout == b"" and stderr == b""
