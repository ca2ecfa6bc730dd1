"""Where corral keeps its files on this machine: the one place every program asks (platformdirs).

State (databases, agent work folders, the dev cluster) goes under the user's state directory,
``$XDG_STATE_HOME/corral`` or ``~/.local/state/corral`` on Linux; configuration files under the
user's config directory, ``$XDG_CONFIG_HOME/corral`` or ``~/.config/corral``. Both follow the
environment at call time, so a test (or an operator) that sets ``XDG_STATE_HOME`` moves everything.
Lives in ``corral`` (not ``corral.controller``) because the agent, which never imports the
controller, needs it too.
"""

from __future__ import annotations

from pathlib import Path

import platformdirs

__all__ = ["agent_work_dir", "config_dir", "controller_db", "dev_dir", "state_dir"]

_APP = "corral"


def state_dir() -> Path:
    """The user's corral state directory (``$XDG_STATE_HOME/corral``, else ``~/.local/state/corral``)."""
    return Path(platformdirs.user_state_dir(_APP))


def config_dir() -> Path:
    """The user's corral config directory (``$XDG_CONFIG_HOME/corral``, else ``~/.config/corral``)."""
    return Path(platformdirs.user_config_dir(_APP))


def controller_db() -> Path:
    """The controller's default SQLite file."""
    return state_dir() / "controller.db"


def agent_work_dir(name: str) -> Path:
    """An agent's default work folder (attempts, workers, its stored credential)."""
    return state_dir() / "agents" / name


def dev_dir() -> Path:
    """Where ``corral dev`` keeps its database, address file and agents' work folders."""
    return state_dir()
