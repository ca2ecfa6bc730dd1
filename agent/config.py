"""The agent's settings, resolved once from the command line into a frozen object."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_CONTROLLER",
    "DEFAULT_OUTPUT_CAP",
    "KNOWN_AGENT_TYPES",
    "AgentConfig",
    "default_work_dir",
]

DEFAULT_CONTROLLER = "127.0.0.1:7070"
DEFAULT_OUTPUT_CAP = 1 << 20
KNOWN_AGENT_TYPES = ("shell", "python")


def default_work_dir(name: str) -> Path:
    """The per-agent state folder: ``$XDG_STATE_HOME/corral/agents/NAME`` (``~/.local/state`` default)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "corral" / "agents" / name


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
    work_dir: Path | None = None
    python_workers: int | None = None
    drain_grace_s: float = 30.0
    kill_grace_s: float = 10.0
    output_cap: int = DEFAULT_OUTPUT_CAP
    log_level: str = "info"
    #: TLS: the controller's CA; the agent's certificate and key (mutual TLS)
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    #: exchanged once for a stored credential when there is no certificate
    join_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError("slots must be at least 1")
        if self.gpus is not None and self.gpus < 0:
            raise ValueError("gpus must not be negative")
        if self.python_workers is not None and self.python_workers < 0:
            raise ValueError("python_workers must not be negative")
        if self.drain_grace_s < 0 or self.kill_grace_s < 0:
            raise ValueError("grace periods must not be negative")

    @property
    def resolved_work_dir(self) -> Path:
        """The work dir, defaulting to the per-name state folder."""
        return self.work_dir if self.work_dir is not None else default_work_dir(self.name)

    @property
    def worker_count(self) -> int:
        """How many warm python workers to keep (0 when the agent offers no python type)."""
        if "python" not in self.agent_types:
            return 0
        return self.slots if self.python_workers is None else self.python_workers
