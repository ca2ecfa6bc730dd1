"""The agent's settings, resolved once from the command line (and ``--config FILE``) into a frozen object."""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.agent.policy import ExecPolicy, ModuleRule
from corral.dirs import agent_work_dir

__all__ = [
    "DEFAULT_CONTROLLER",
    "DEFAULT_OUTPUT_CAP",
    "KNOWN_AGENT_TYPES",
    "AgentConfig",
    "check_declared_types",
    "declared_from_tables",
    "default_work_dir",
    "read_config_file",
]

DEFAULT_CONTROLLER = "127.0.0.1:7070"
DEFAULT_OUTPUT_CAP = 1 << 20
KNOWN_AGENT_TYPES = ("shell", "python")
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# An agent type is a name the controller matches tasks against (controller/spec.py NAME_PATTERN).
_TYPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


def check_declared_types(declared: Mapping[str, Any], where: str) -> dict[str, tuple[str, ...]]:
    """Operator-declared agent types (name -> command argv prefix), checked; ValueError names ``where``."""
    checked: dict[str, tuple[str, ...]] = {}
    for name, command in declared.items():
        if not isinstance(name, str) or not _TYPE_NAME.fullmatch(name):
            raise ValueError(
                f"{where}: agent type {name!r} is not a valid name: letters, digits, '_', '.' and '-', "
                "starting with a letter or digit, at most 128 characters"
            )
        if name in KNOWN_AGENT_TYPES:
            raise ValueError(f"{where}: {name!r} is a built-in agent type and cannot be declared")
        if not (isinstance(command, list | tuple) and command and all(isinstance(a, str) and a for a in command)):
            raise ValueError(f"{where}: the command of agent type {name!r} must be a non-empty list of strings")
        if any("\x00" in a for a in command):
            raise ValueError(f"{where}: the command of agent type {name!r} contains a NUL character")
        checked[name] = tuple(command)
    return checked


def read_config_file(path: Path) -> dict[str, tuple[str, ...]]:
    """The agent types declared in a TOML config file: ``[agent_types.NAME] command = ["argv", ...]``.

    Raises ValueError naming the file and the key for anything it does not understand.
    """
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ValueError(f"--config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"--config {path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"agent_types"})
    if unknown:
        raise ValueError(f"--config {path}: unknown key {unknown[0]!r} (known: agent_types)")
    return declared_from_tables(data.get("agent_types", {}), f"--config {path}")


def declared_from_tables(types: Any, where: str) -> dict[str, tuple[str, ...]]:
    """A config file's ``agent_types`` table (``{NAME: {command: [...]}}``), checked; ValueError names ``where``."""
    if not isinstance(types, dict):
        raise ValueError(f"{where}: agent_types must be a table of [agent_types.NAME] tables")
    commands: dict[str, Any] = {}
    for name, table in types.items():
        if not isinstance(table, dict):
            raise ValueError(f"{where}: agent_types.{name} must be a table with a command")
        extra = sorted(set(table) - {"command"})
        if extra:
            raise ValueError(f"{where}: agent_types.{name}: unknown key {extra[0]!r} (known: command)")
        if "command" not in table:
            raise ValueError(f"{where}: agent_types.{name} needs a command")
        commands[name] = table["command"]
    return check_declared_types(commands, where)


def default_work_dir(name: str) -> Path:
    """The per-agent state folder: ``$XDG_STATE_HOME/corral/agents/NAME`` (:func:`corral.dirs.agent_work_dir`)."""
    return agent_work_dir(name)


@dataclass(frozen=True)
class AgentConfig:
    """Everything the daemon needs to know; built by the CLI or directly by tests.

    ``gpus`` is ``None`` to probe NVML, or a number to declare GPUs by hand (ids ``0..N-1``).
    """

    controller: str = DEFAULT_CONTROLLER
    name: str = field(default_factory=socket.gethostname)
    slots: int = field(default_factory=lambda: os.cpu_count() or 1)
    gpus: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    agent_types: tuple[str, ...] = KNOWN_AGENT_TYPES
    #: Operator-declared agent types: name -> command; the payload's ``args`` are appended.
    declared_types: dict[str, tuple[str, ...]] = field(default_factory=dict)
    work_dir: Path | None = None
    python_workers: int | None = None
    drain_grace_s: float = 30.0
    kill_grace_s: float = 10.0
    output_cap: int = DEFAULT_OUTPUT_CAP
    log_level: str = "info"
    # Execution policy (see corral.agent.policy).
    no_shell: bool = False
    python_allow: tuple[str, ...] = ()
    python_paths: tuple[Path, ...] = ()
    env_allow: tuple[str, ...] = ()
    pass_env: tuple[str, ...] = ()
    run_as: str | None = None
    #: TLS: the controller's CA; the agent's certificate and key (mutual TLS)
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    #: exchanged once for a stored credential when there is no certificate
    join_token: str | None = field(default=None, repr=False)
    #: the agent's HTTP port for Prometheus /metrics (None: none), and where to write its address
    http: str | None = None
    http_address_file: Path | None = None

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError("slots must be at least 1")
        if self.gpus is not None and self.gpus < 0:
            raise ValueError("gpus must not be negative")
        if self.python_workers is not None and self.python_workers < 0:
            raise ValueError("python_workers must not be negative")
        if self.drain_grace_s < 0 or self.kill_grace_s < 0:
            raise ValueError("grace periods must not be negative")
        for prefix in self.python_allow:
            if not _MODULE.fullmatch(prefix):
                raise ValueError(f"--python-allow: {prefix!r} is not a module name")
        for name in (*self.env_allow, *self.pass_env):
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        object.__setattr__(self, "declared_types", check_declared_types(self.declared_types, "declared agent types"))
        if self.no_shell and not self.offered_types:
            raise ValueError("--no-shell leaves no agent type to offer")
        paths = []
        for path in self.python_paths:
            resolved = Path(path).expanduser().resolve()
            if not resolved.is_dir():
                raise ValueError(f"--python-path {path}: not a directory")
            paths.append(resolved)
        # Absolute once, at start: a worker's cwd is not the agent's.
        object.__setattr__(self, "python_paths", tuple(paths))

    @property
    def resolved_work_dir(self) -> Path:
        """The work dir, defaulting to the per-name state folder."""
        return self.work_dir if self.work_dir is not None else default_work_dir(self.name)

    @property
    def offered_types(self) -> tuple[str, ...]:
        """The agent types announced in Hello (``shell`` dropped by --no-shell), then every declared one."""
        offered = [t for t in self.agent_types if not (self.no_shell and t == "shell")]
        offered.extend(t for t in self.declared_types if t not in offered)
        return tuple(offered)

    @property
    def uses_tls(self) -> bool:
        """Whether the agent talks TLS (a CA file given with --ca): python then allows no module until listed."""
        return self.ca is not None

    @property
    def policy(self) -> ExecPolicy:
        """The execution policy these settings describe."""
        return ExecPolicy(
            allow_shell=not self.no_shell,
            modules=ModuleRule(self.python_allow, open_default=not self.uses_tls),
            env_allow=frozenset(self.env_allow),
        )

    def passed_env(self) -> dict[str, str]:
        """The variables of the agent's own environment that --pass-env hands to every task."""
        return {name: os.environ[name] for name in self.pass_env if name in os.environ}

    @property
    def worker_count(self) -> int:
        """How many warm python workers to keep (0 when the agent offers no python type)."""
        if "python" not in self.agent_types:
            return 0
        return self.slots if self.python_workers is None else self.python_workers
