"""Issue 12 on the real ``corral`` executable: ``corral gc`` and ``corral namespace retain``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.procs import Cluster, corral

pytestmark = pytest.mark.e2e

ONE = """
name: one
tasks:
  - {name: only, payload: {shell: "echo hi"}}
"""


def test_gc_and_namespace_retention_from_the_command_line(cluster_with_agent: Cluster, tmp_path: Path) -> None:
    addr = ["--address", cluster_with_agent.address]
    (tmp_path / "one.yaml").write_text(ONE)
    ran = corral("run", str(tmp_path / "one.yaml"), *addr)
    assert ran.returncode == 0, ran.stderr

    dry = corral("gc", "--dry-run", *addr)
    assert dry.returncode == 0, dry.stderr
    assert "would delete 0 workflows (finished workflows kept forever)" in dry.stdout

    bad = corral("namespace", "retain", "default", "5 parsecs", *addr)
    assert bad.returncode == 2 and "not a duration" in bad.stderr

    set_ = corral("namespace", "retain", "default", "1s", *addr)
    assert set_.returncode == 0, set_.stderr
    assert "finished workflows kept forever (default=1s)" in set_.stdout

    deadline = time.monotonic() + 30
    while json.loads(corral("list", "-o", "json", *addr).stdout):
        assert time.monotonic() < deadline, "the finished workflow was not deleted"
        time.sleep(0.2)

    done = corral("gc", "-o", "json", *addr)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["dry_run"] is False and report["workflows"] == [] and report["deleted"] == 0
    back = corral("namespace", "retain", "default", "default", *addr)
    assert back.returncode == 0 and back.stdout.strip() == "finished workflows kept forever"
