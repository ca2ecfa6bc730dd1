"""Daemon commands: ``corral controller``, ``corral agent`` and the one-machine ``corral dev`` cluster.

``controller`` and ``agent`` hand every argument to the daemons' own parsers (imported lazily,
so ``corral status`` never loads the server). ``dev`` runs a controller and N agents as child
processes and stops them all, agents first, on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from corral.controller.address_file import AddressTimeout, ControllerExited, wait_for_address
from corral.controller.cli.common import EXIT_ERROR, EXIT_INVALID, die, err_console
from corral.dirs import dev_dir

__all__ = ["PASSTHROUGH", "agent", "controller", "dev", "state_dir"]

#: context settings of commands that forward their arguments untouched
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}

_STOP_GRACE_S = 10.0  # SIGTERM, then SIGKILL after this long (as the agent does with tasks)
#: The examples of a source checkout (their task functions are the package corral_examples).
_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: The retry example keeps its marker in this folder (see examples/corral_examples/flaky.py).
_EXAMPLES_STATE_ENV = "CORRAL_EXAMPLES_STATE"
# Credentials in the user's environment are for some other (secure) cluster; the dev cluster is
# plaintext on loopback, and its agents would otherwise read them and try TLS.
_CREDENTIAL_ENV = ("CORRAL_CA", "CORRAL_CERT", "CORRAL_KEY", "CORRAL_TOKEN", "CORRAL_JOIN_TOKEN")


def controller(ctx: typer.Context) -> None:
    """Run the controller daemon (all arguments go to it; `corral controller --help` lists them)."""
    # Imported here: only this command needs the server code.
    daemon = importlib.import_module("corral.controller.daemon")
    raise typer.Exit(int(daemon.main(list(ctx.args))))


def agent(ctx: typer.Context) -> None:
    """Run an agent daemon (all arguments go to it; `corral agent --help` lists them)."""
    cli = importlib.import_module("corral.agent.cli")
    raise typer.Exit(int(cli.main(list(ctx.args))))


def state_dir() -> Path:
    """Where ``corral dev`` keeps its database: ``$XDG_STATE_HOME/corral`` or ``~/.local/state/corral``."""
    return dev_dir()


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    for proc in processes:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _policy_flags(paths: list[Path], allow: list[str]) -> list[str]:
    """The dev agents' execution policy: the examples (and what the user names) may run.

    Issue 11: the current directory and its ``examples/`` go on the agents' python path too, as
    absolute paths (the agents run in their own work dirs), so `corral dev` then `corral run
    examples/pipeline.yaml` works from a checkout whether or not corral is installed from it.
    """
    cwd = Path.cwd()
    folders: list[Path] = []
    for folder in (*(p.resolve() for p in paths), cwd, cwd / "examples", _EXAMPLES):
        if folder.is_dir() and folder not in folders:
            folders.append(folder)
    flags = [f"--python-path={folder}" for folder in folders]
    flags += ["--python-allow", ",".join(["corral_examples", *allow])]
    return [*flags, "--pass-env", _EXAMPLES_STATE_ENV]


def dev(
    agents: Annotated[int, typer.Option("--agents", "-n", min=0, max=64, help="How many agents to start.")] = 2,
    slots: Annotated[int, typer.Option("--slots", min=1, help="Concurrent tasks per agent.")] = 4,
    listen: Annotated[str, typer.Option("--listen", help="Controller address HOST:PORT (port 0: any free).")] = (
        "127.0.0.1:7070"
    ),
    db: Annotated[
        Path | None, typer.Option("--db", help="SQLite file (default: the user's state dir, dev.db).")
    ] = None,
    python_path: Annotated[
        list[Path] | None,
        typer.Option("--python-path", help="A folder python tasks import from (repeatable; the examples are added)."),
    ] = None,
    python_allow: Annotated[
        list[str] | None,
        typer.Option(
            "--python-allow", help="A module prefix python tasks may call (repeatable; corral_examples is added)."
        ),
    ] = None,
) -> None:
    """Run a controller and agents on this machine until Ctrl-C (state survives in the user's state dir)."""
    console = err_console()
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    database = db or directory / "dev.db"
    address_file = directory / "dev.addr"
    address_file.unlink(missing_ok=True)

    stop_requested = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes: list[subprocess.Popen[bytes]] = []
    labels: dict[int, str] = {}  # pid -> what it is, for messages
    env = {key: value for key, value in os.environ.items() if key not in _CREDENTIAL_ENV}
    try:
        # Children get their own sessions: a Ctrl-C reaches only us, and we stop them in order
        # (agents first, so they report their attempts to a controller that is still up).
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "corral.controller",
                "--listen",
                listen,
                "--db",
                str(database),
                "--address-file",
                str(address_file),
            ],
            start_new_session=True,
            env=env,
        )
        processes.append(server)
        labels[server.pid] = "the controller"
        try:
            address: str | None = wait_for_address(address_file, exited=server.poll, timeout=30.0)
        except (ControllerExited, AddressTimeout):
            address = None
        if address is None:
            die(f"error: the controller did not start (exit code {server.poll()}); see its output above", EXIT_ERROR)
        # Tasks start from a clean environment: the retry example's marker folder is passed on by name.
        agent_env = {**env, _EXAMPLES_STATE_ENV: str(directory / "examples-state")}
        for i in range(agents):
            command = [
                sys.executable,
                "-m",
                "corral.agent",
                "--controller",
                address,
                "--name",
                f"dev-{i + 1}",
                "--slots",
                str(slots),
                "--work-dir",
                str(directory / "work" / f"dev-{i + 1}"),
                *_policy_flags(python_path or [], python_allow or []),
            ]
            child = subprocess.Popen(command, start_new_session=True, env=agent_env)
            processes.insert(0, child)
            labels[child.pid] = f"agent dev-{i + 1}"
        print(f"corral dev: controller at {address} (state in {database}), {agents} agent(s)")
        print("submit work with:")
        print(f"  export CORRAL_ADDRESS={address}")
        print("  corral run examples/pipeline.yaml")
        print("press Ctrl-C to stop", flush=True)
        while not stop_requested:
            exited = [p for p in processes if p.poll() is not None]
            if exited:
                for proc in exited:
                    console.print(f"error: {labels[proc.pid]} exited with code {proc.returncode}", markup=False)
                raise typer.Exit(EXIT_ERROR)
            time.sleep(0.2)
        console.print("stopping agents and controller ...", markup=False)
    except FileNotFoundError as exc:
        die(f"error: {exc}", EXIT_INVALID)
    finally:
        _stop(processes)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
