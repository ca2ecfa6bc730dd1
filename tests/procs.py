"""Real processes for tests: a controller on port 0, agents, and the ``corral`` executable.

Every process started here is stopped (SIGTERM, then SIGKILL) by the owning fixture, which also
asserts it is gone, so a failing test cannot leave daemons behind.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from corral.controller.address_file import AddressTimeout, ControllerExited, wait_for_address

__all__ = [
    "CORRAL",
    "Cluster",
    "corral",
    "require_server",
    "start_agent",
    "start_controller",
    "stop",
]

#: the installed console script, next to the interpreter running the tests
CORRAL = str(Path(sys.executable).parent / "corral")


def require_server() -> None:
    """Skip (with a clear reason) when the controller daemon is not part of this checkout yet."""
    if importlib.util.find_spec("corral.controller.__main__") is None:
        pytest.skip("needs the controller server (python -m corral.controller), which is not in this checkout")


def _child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CORRAL_ADDRESS", None)
    env["CORRAL_CONFIG"] = os.devnull  # the developer's CLI contexts must not steer the tests
    env["CORRAL_CONTROLLER_CONFIG"] = env["CORRAL_AGENT_CONFIG"] = os.devnull  # nor their daemon config files
    env.update(extra or {})
    return env


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, wait, SIGKILL; then assert the process is gone."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)
    assert proc.poll() is not None, f"process {proc.pid} is still running"


def start_controller(directory: Path, *, extra: Sequence[str] = ()) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``python -m corral.controller`` on 127.0.0.1:0 and return it with its bound address."""
    address_file = directory / "addr"
    address_file.unlink(missing_ok=True)
    log = (directory / "controller.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corral.controller",
            "--listen",
            "127.0.0.1:0",
            # The default store is a SQLite file here, unless the caller names one.
            *([] if {"--store", "--db", "--memory"} & set(extra) else ["--db", str(directory / "c.db")]),
            "--address-file",
            str(address_file),
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_child_env(),
    )
    log.close()
    with contextlib.suppress(ControllerExited, AddressTimeout):
        return proc, wait_for_address(address_file, exited=proc.poll)
    stop(proc)
    output = (directory / "controller.log").read_text(errors="replace")
    raise RuntimeError(f"the controller did not start:\n{output}")


def start_agent(
    directory: Path, address: str, name: str, *, slots: int = 2, extra: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """Start ``python -m corral.agent`` connected to ``address``."""
    work = directory / f"work-{name}"
    work.mkdir(parents=True, exist_ok=True)
    log = (directory / f"agent-{name}.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corral.agent",
            "--controller",
            address,
            "--name",
            name,
            "--slots",
            str(slots),
            "--work-dir",
            str(work),
            # Python tasks of the suites are tests.*:NAME (the repository root is their import path).
            "--python-path",
            str(Path(__file__).resolve().parents[1]),
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_child_env(),
    )
    log.close()
    return proc


@dataclass
class Cluster:
    """A controller and its agents, all real processes in ``directory``."""

    directory: Path
    controller: subprocess.Popen[bytes]
    address: str
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def add_agent(self, name: str, *, slots: int = 2, extra: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        proc = start_agent(self.directory, self.address, name, slots=slots, extra=extra)
        self.agents[name] = proc
        return proc

    def wait_for_agents(self, count: int, timeout: float = 30.0) -> None:
        """Block until the controller lists ``count`` connected agents."""
        from corral.controller.sdk import SyncClient

        with SyncClient(self.address) as client:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if sum(a.state == "connected" for a in client.list_agents()) >= count:
                    return
                time.sleep(0.1)
        raise RuntimeError(f"fewer than {count} agents connected; see {self.directory}")

    def stop(self) -> None:
        for proc in self.agents.values():
            stop(proc)
        stop(self.controller)

    @classmethod
    def running(cls, directory: Path) -> Iterator[Cluster]:
        """Fixture body: yield a started cluster and stop everything afterwards."""
        require_server()
        controller, address = start_controller(directory)
        cluster = cls(directory, controller, address)
        try:
            yield cluster
        finally:
            cluster.stop()


def corral(*args: str, env: Mapping[str, str] | None = None, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    """Run the real ``corral`` executable; capture text output."""
    return subprocess.run(
        [CORRAL, *args],
        capture_output=True,
        text=True,
        env=_child_env({"NO_COLOR": "1", "COLUMNS": "200", **(env or {})}),
        timeout=timeout,
        check=False,
    )
