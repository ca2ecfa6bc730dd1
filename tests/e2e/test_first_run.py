"""The first run the README promises (issue 11): ``corral dev``, then ``corral run examples/pipeline.yaml``
from the checkout exits 0; user code in the current directory and in a relative ``$PYTHONPATH`` is
importable by the dev agents, which log their import path at start."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import CORRAL, _child_env, corral

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
_ADDRESS = re.compile(r"controller at (\S+) ")

MINE = """
name: mine
tasks:
  - {name: here, agent_type: python, payload: {function: "inhere:double", kwargs: {x: 21}}}
  - {name: there, agent_type: python, payload: {function: "inlib:shout", kwargs: {word: hi}}}
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A folder laid out like a fresh checkout: examples/, a module at its top, one in lib/."""
    root = tmp_path / "checkout"
    shutil.copytree(EXAMPLES, root / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "inhere.py").write_text("def double(x: int) -> int:\n    return 2 * x\n")
    (root / "lib").mkdir()
    (root / "lib" / "inlib.py").write_text("def shout(word: str) -> str:\n    return word.upper()\n")
    (root / "mine.yaml").write_text(MINE)
    return root


@pytest.fixture
def dev(checkout: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``PYTHONPATH=lib corral dev`` started in the checkout; yields (address, its output file)."""
    log = tmp_path / "dev.log"
    env = _child_env({"XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONPATH": "lib"})
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [CORRAL, "dev", "--listen", "127.0.0.1:0", "--agents", "1", "--python-allow", "inhere,inlib"],
            cwd=checkout,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        address = None
        while address is None and time.monotonic() < deadline and proc.poll() is None:
            match = _ADDRESS.search(log.read_text(errors="replace"))
            address = match.group(1) if match else None
            time.sleep(0.1)
        assert address, f"corral dev did not start:\n{log.read_text(errors='replace')}"
        yield address, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_dev_then_run_the_pipeline_exits_0(dev: tuple[str, Path], checkout: Path) -> None:
    address, log = dev
    ran = subprocess.run(
        [CORRAL, "run", "examples/pipeline.yaml", "--address", address],
        cwd=checkout,
        env=_child_env({"NO_COLOR": "1", "COLUMNS": "200"}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, f"{ran.stdout}\n{ran.stderr}\n{log.read_text(errors='replace')}"
    assert "completed=7" in ran.stdout


def test_user_code_in_the_cwd_and_a_relative_pythonpath(dev: tuple[str, Path], checkout: Path) -> None:
    address, log = dev
    ran = corral("run", str(checkout / "mine.yaml"), "--address", address, "-o", "json")
    assert ran.returncode == 0, f"{ran.stdout}\n{ran.stderr}\n{log.read_text(errors='replace')}"
    results = {t["name"]: t["result"] for t in json.loads(ran.stdout)["tasks"]}
    assert results == {"here": 42, "there": "HI"}
    # The agent said where python tasks import from, with absolute folders.
    text = log.read_text(errors="replace")
    line = next(line for line in text.splitlines() if "python import path" in line)
    assert str(checkout.resolve()) in line and str((checkout / "lib").resolve()) in line
