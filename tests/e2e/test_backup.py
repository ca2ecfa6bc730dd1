"""``corral backup`` while a real controller runs, ``corral restore`` into a fresh file, restart there.

The restored controller knows what the backup knew (a finished workflow), not what came after (a
workflow whose task is still running on the agent). It hands out epochs above every earlier one,
and the agent's attempt it does not know is killed as an orphan when the agent reconnects.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.controller.sdk import SyncClient
from corral.controller.sdk.errors import NotFoundError
from tests.procs import corral, start_agent, start_controller, stop

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def _epoch(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = 'session_epoch'").fetchone()
    return int(row[0]) if row else 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by the agent's supervisor) counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_backup_while_running_then_restore_kills_what_the_backup_did_not_know(tmp_path: Path) -> None:
    port = _free_port()
    # Attempts must not stop themselves (fence) while the controller is away: only the restored
    # controller's verdict at the agent's Hello may kill the orphan.
    listen = ["--listen", f"127.0.0.1:{port}", "--fence-after", "600"]
    db = tmp_path / "c.db"
    controller, address = start_controller(tmp_path, extra=listen)
    agent = start_agent(tmp_path, address, "a1", slots=2)
    restarted = None
    pid_file = tmp_path / "orphan.pid"
    try:
        with SyncClient(address) as client:
            done = client.execute(
                {"name": "before", "tasks": [{"name": "t", "agent_type": "shell", "payload": {"shell": "echo 7"}}]},
                timeout=60,
            )
            assert done.state == "completed"

            backup = tmp_path / "backup.db"
            made = corral("backup", str(backup), "--db", str(db))
            assert made.returncode == 0, made.stderr
            assert backup.is_file() and not Path(f"{backup}-wal").exists(), "one self-contained file"

            # After the backup: a task that keeps running; the restored state will not know it.
            shell = f'echo $$ > "{pid_file}"; exec sleep 300'
            later = client.submit(
                {"name": "after", "tasks": [{"name": "long", "agent_type": "shell", "payload": {"shell": shell}}]}
            ).workflow_id
            _eventually(lambda: pid_file.exists() and pid_file.read_text().strip() != "", 30, "the task started")
            orphan = int(pid_file.read_text())
            assert _alive(orphan)

        # The live file cannot be restored over while its controller runs.
        busy = corral("restore", str(backup), "--db", str(db))
        assert busy.returncode == 1 and "in use" in busy.stderr, busy.stderr

        old_epoch = _epoch(db)
        stop(controller)
        assert _alive(orphan), "the agent keeps its attempt while the controller is away"

        fresh = tmp_path / "restored" / "c.db"
        restored = corral("restore", str(backup), "--db", str(fresh))
        assert restored.returncode == 0, restored.stderr
        assert _epoch(fresh) > old_epoch, "the restored store's epoch is above every epoch handed out before"

        restarted, again = start_controller(tmp_path, extra=[*listen, "--db", str(fresh)])
        assert again == address
        with SyncClient(again) as client:

            def attached() -> bool:
                return [a.name for a in client.list_agents() if a.state == "connected"] == ["a1"]

            _eventually(attached, 60, "the agent re-attached")
            _eventually(lambda: not _alive(orphan), 30, "the attempt the restored state does not know was killed")
            assert client.status(done.workflow_id).state == "completed", "the backup's state is there"
            with pytest.raises(NotFoundError):
                client.status(later)
        assert _epoch(fresh) > old_epoch
    finally:
        stop(agent)
        if restarted is not None:
            stop(restarted)
        stop(controller)


def test_restore_refuses_what_is_not_a_corral_backup(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    with sqlite3.connect(junk) as conn:
        conn.execute("CREATE TABLE t (x)")
    target = tmp_path / "c.db"
    done = corral("restore", str(junk), "--db", str(target))
    assert done.returncode == 1 and "not a corral database" in done.stderr, done.stderr
    assert not target.exists(), "nothing changes"
    missing = corral("backup", str(tmp_path / "b.db"), "--db", str(tmp_path / "none.db"))
    assert missing.returncode == 1 and "no database" in missing.stderr
    pg = corral("backup", str(tmp_path / "b.db"), "--store", "postgresql://u@h:5432/db")
    assert pg.returncode == 2 and "pg_dump" in pg.stderr
