"""Start and stop a throw-away local cluster: one controller and a few agents as child processes.

Used by ``examples/demo.py``. Every process is started in its own session so that a Ctrl-C in the
terminal reaches only the demo, which then stops its children in order (agents drain first) with
SIGTERM, a grace period and SIGKILL, including any process they left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from corral.controller.address_file import AddressTimeout, ControllerExited, wait_for_address

__all__ = ["LocalCluster", "ManagedProcess", "corral_command", "wait_for_address_file"]


def corral_command() -> list[str]:
    """The ``corral`` CLI of the running interpreter's environment (the venv's script when present)."""
    script = Path(sys.executable).with_name("corral")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from corral.controller.cli.main import main; main()"]


@dataclass
class ManagedProcess:
    """A child process we own: started in a new session, stopped with SIGTERM then SIGKILL."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(self.env) if self.env is not None else None,
                cwd=self.cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    def exited(self) -> int | None:
        """The exit code once the process has exited, else None."""
        return None if self.popen is None else self.popen.poll()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def signal_stop(self) -> list[psutil.Process]:
        """Send SIGTERM; return the descendants seen just before, to sweep up after the exit."""
        if self.popen is None or self.popen.poll() is not None:
            return []
        try:
            descendants = psutil.Process(self.popen.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        self.popen.send_signal(signal.SIGTERM)
        return descendants

    def wait_or_kill(self, grace: float, descendants: Sequence[psutil.Process] = ()) -> int | None:
        """Wait up to ``grace`` seconds, then SIGKILL the session; finally kill leftover descendants."""
        if self.popen is None:
            return None
        try:
            code: int | None = self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _kill_group(self.popen.pid)
            code = self.popen.wait()
        _kill_group(self.popen.pid)
        for proc in descendants:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(list(descendants), timeout=5)
        return code

    def stop(self, grace: float = 15.0) -> int | None:
        return self.wait_or_kill(grace, self.signal_stop())


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def wait_for_address_file(path: Path, process: ManagedProcess, deadline_s: float = 30.0) -> str:
    """Wait until the controller wrote its bound ``host:port``; fail early if it exited."""
    try:
        return wait_for_address(path, exited=process.exited, timeout=deadline_s)
    except (ControllerExited, AddressTimeout) as exc:
        raise RuntimeError(f"{process.name}: {exc}:\n{process.log_tail()}") from None


@dataclass
class LocalCluster:
    """A controller on a fresh SQLite file under ``base_dir`` and ``agents`` agent processes."""

    base_dir: Path
    agents: int = 2
    slots: int = 2
    python_path: Sequence[Path] = ()
    processes: list[ManagedProcess] = field(default_factory=list)
    address: str = ""
    dashboard: bool = False  # serve the HTTP port (probes, metrics, the web dashboard) too
    dashboard_url: str = ""  # http://HOST:PORT/ui/ once started with dashboard=True

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        extra = [str(p) for p in self.python_path]
        if env.get("PYTHONPATH"):
            extra.append(env["PYTHONPATH"])
        if extra:
            env["PYTHONPATH"] = os.pathsep.join(extra)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self) -> str:
        """Start the controller and the agents; return the controller address."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        address_file = self.base_dir / "controller.addr"
        http_file = self.base_dir / "http.addr"
        env = self._env()
        cwd = self.python_path[0] if self.python_path else None
        controller = ManagedProcess(
            "controller",
            [
                sys.executable,
                "-m",
                "corral.controller",
                "--listen",
                "127.0.0.1:0",
                "--db",
                str(self.base_dir / "corral.db"),
                "--address-file",
                str(address_file),
                *(["--http", "127.0.0.1:0", "--http-address-file", str(http_file)] if self.dashboard else []),
            ],
            self.base_dir / "logs" / "controller.log",
            env=env,
            cwd=cwd,
        )
        self.processes.append(controller)
        controller.start()
        self.address = wait_for_address_file(address_file, controller)
        if self.dashboard:
            self.dashboard_url = f"http://{wait_for_address_file(http_file, controller)}/ui/"
        for index in range(1, self.agents + 1):
            agent = ManagedProcess(
                f"agent-{index}",
                [
                    sys.executable,
                    "-m",
                    "corral.agent",
                    "--controller",
                    self.address,
                    "--name",
                    f"demo-agent-{index}",
                    "--slots",
                    str(self.slots),
                    "--types",
                    "shell,python",
                    "--label",
                    f"host=demo-{index}",
                    "--work-dir",
                    str(self.base_dir / f"agent-{index}"),
                    # Execution policy: the examples (and only they) may run; the retry example's
                    # marker folder reaches its tasks through --pass-env.
                    "--python-allow",
                    "corral_examples",
                    *[f"--python-path={Path(p).resolve()}" for p in self.python_path],
                    "--pass-env",
                    "CORRAL_EXAMPLES_STATE",
                ],
                self.base_dir / "logs" / f"agent-{index}.log",
                env=env,
                cwd=cwd,
            )
            self.processes.append(agent)
            agent.start()
        return self.address

    def check_alive(self) -> None:
        """Raise if a daemon died, with the end of its log."""
        for proc in self.processes:
            code = proc.exited()
            if code is not None:
                raise RuntimeError(f"{proc.name} exited with {code}:\n{proc.log_tail()}")

    def stop(self, grace: float = 15.0) -> None:
        """Stop the agents (they drain) and then the controller; never raises."""
        agents = [p for p in self.processes if p.name != "controller"]
        controllers = [p for p in self.processes if p.name == "controller"]
        for group in (agents, controllers):
            pending = [(proc, proc.signal_stop()) for proc in group]
            for proc, descendants in pending:
                try:
                    proc.wait_or_kill(grace, descendants)
                except Exception as exc:  # keep stopping the others whatever happens
                    print(f"error stopping {proc.name}: {exc}", file=sys.stderr)
