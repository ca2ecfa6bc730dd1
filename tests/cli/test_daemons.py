"""``corral controller`` / ``corral agent`` forward to the daemons; ``corral dev`` runs and stops a cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from corral.controller.address_file import wait_for_address
from tests.procs import CORRAL, corral, require_server, stop

pytestmark = pytest.mark.e2e


def test_controller_and_agent_commands_forward_their_arguments(tmp_path: Path) -> None:
    require_server()
    log = (tmp_path / "log").open("wb")
    controller = subprocess.Popen(
        [
            CORRAL,
            "controller",
            "--listen",
            "127.0.0.1:0",
            "--db",
            str(tmp_path / "c.db"),
            "--address-file",
            str(tmp_path / "addr"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    agent: subprocess.Popen[bytes] | None = None
    try:
        address = wait_for_address(tmp_path / "addr", exited=controller.poll)
        agent = subprocess.Popen(
            [
                CORRAL,
                "agent",
                "--controller",
                address,
                "--name",
                "fwd",
                "--slots",
                "1",
                "--work-dir",
                str(tmp_path / "work"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        names: list[str] = []
        while time.monotonic() < deadline and names != ["fwd"]:
            names = [a["name"] for a in json.loads(corral("agents", "-o", "json", "--address", address).stdout)]
            time.sleep(0.1)
        assert names == ["fwd"]
    finally:
        if agent is not None:
            stop(agent)
        stop(controller)
        log.close()
    assert controller.returncode == 0


def test_dev_starts_a_cluster_and_stops_it_on_sigterm(tmp_path: Path) -> None:
    require_server()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "NO_COLOR": "1"}
    env.pop("CORRAL_ADDRESS", None)
    # Credentials exported for another cluster: the plaintext dev cluster must not pass them on.
    env.update(CORRAL_CA=str(tmp_path / "elsewhere-ca.pem"), CORRAL_JOIN_TOKEN="not-for-dev")
    log = (tmp_path / "dev.log").open("wb")
    dev = subprocess.Popen(
        [CORRAL, "dev", "--agents", "2", "--slots", "1", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
    )
    try:
        assert dev.stdout is not None
        lines: list[str] = []
        while not any("export CORRAL_ADDRESS=" in line for line in lines):
            line = dev.stdout.readline().decode()
            assert line, f"corral dev ended early: {lines}"
            lines.append(line)
        address = next(line for line in lines if "export CORRAL_ADDRESS=" in line).split("=", 1)[1].strip()
        assert (tmp_path / "state" / "corral" / "dev.db").exists()
        children = psutil.Process(dev.pid).children(recursive=True)
        assert len(children) >= 3  # the controller and two agents (plus their helpers)

        deadline = time.monotonic() + 30
        connected: list[str] = []
        while time.monotonic() < deadline and len(connected) < 2:
            agents = json.loads(corral("agents", "-o", "json", "--address", address).stdout or "[]")
            connected = sorted(a["name"] for a in agents if a["state"] == "connected")
            time.sleep(0.1)
        assert connected == ["dev-1", "dev-2"]

        dev.send_signal(signal.SIGTERM)
        assert dev.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left running: {alive}"
    finally:
        stop(dev)
        if dev.stdout is not None:
            dev.stdout.close()
        log.close()
