"""Both daemons (typer) started from the environment and config files alone, as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral.controller.address_file import wait_for_address
from corral.controller.sdk import SyncClient
from tests.procs import _child_env, require_server, stop

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


def test_controller_and_agent_take_their_settings_from_env_and_files(tmp_path: Path) -> None:
    require_server()
    db = tmp_path / "from-file.db"
    controller_file = tmp_path / "controller.yaml"
    controller_file.write_text(f"listen: 127.0.0.1:0\nstore: sqlite://{db}\naddress_file: {tmp_path / 'addr'}\n")
    agent_file = tmp_path / "agent.toml"
    agent_file.write_text(f'name = "filed"\nslots = 1\nwork_dir = "{tmp_path / "work"}"\n[labels]\nzone = "eu"\n')
    env = _child_env({"CORRAL_CONTROLLER_CONFIG": str(controller_file), "CORRAL_CONTROLLER_LOG_FORMAT": "json"})
    log = (tmp_path / "controller.log").open("wb")
    controller = subprocess.Popen(
        [sys.executable, "-m", "corral.controller"], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    agent: subprocess.Popen[bytes] | None = None
    try:
        address = wait_for_address(tmp_path / "addr", exited=controller.poll, timeout=60)
        assert db.is_file(), "the store URL of the config file was used"
        agent_env = _child_env({"CORRAL_AGENT_CONTROLLER": address, "CORRAL_AGENT_CONFIG": str(agent_file)})
        with (tmp_path / "agent.log").open("wb") as agent_log:
            agent = subprocess.Popen(
                [sys.executable, "-m", "corral.agent", "--label", "rack=7"],
                stdout=agent_log,
                stderr=subprocess.STDOUT,
                env=agent_env,
            )
        with SyncClient(address) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                connected = [a for a in client.list_agents() if a.state == "connected"]
                if connected:
                    break
                time.sleep(0.2)
            (info,) = connected
            assert info.name == "filed"
            assert info.labels == {"zone": "eu", "rack": "7"}
    finally:
        if agent is not None:
            stop(agent)
        stop(controller)
        log.close()
    lines = [line for line in (tmp_path / "controller.log").read_text().splitlines() if line.strip()]
    assert lines and all(json.loads(line) for line in lines), "log format from the environment (json)"


def test_daemons_refuse_bad_settings_with_exit_2(tmp_path: Path) -> None:
    require_server()
    bad = tmp_path / "controller.toml"
    bad.write_text("lease = 40\n")
    env = _child_env({"CORRAL_CONTROLLER_CONFIG": str(bad)})
    done = subprocess.run(
        [sys.executable, "-m", "corral.controller"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 2 and "--fence-after (30 s) must be longer than --lease (40 s)" in done.stderr
    env = _child_env({"CORRAL_AGENT_SLOTS": "zero"})
    done = subprocess.run([sys.executable, "-m", "corral.agent"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and "$CORRAL_AGENT_SLOTS" in done.stderr, done.stderr
