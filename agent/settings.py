"""The agent's settings: one pydantic-settings class, layered flags > env > file > defaults.

Environment variables are ``CORRAL_AGENT_<FIELD>`` (``CORRAL_AGENT_CONTROLLER``,
``CORRAL_AGENT_SLOTS`` ...); the older ``CORRAL_CA``, ``CORRAL_CERT``, ``CORRAL_KEY``,
``CORRAL_JOIN_TOKEN`` and ``CORRAL_LOG_FORMAT`` still work, below the prefixed names. Lists in
the environment are comma-separated (``CORRAL_AGENT_PYTHON_ALLOW=pkg,other``; paths are
``:``-separated), tables are JSON (``CORRAL_AGENT_LABELS='{"zone": "eu"}'``). The file is
``--config FILE``, else ``$CORRAL_AGENT_CONFIG``, else ``<config dir>/agent.toml`` (or ``.yaml``)
when present: the flags' names as keys, ``labels`` a table, and ``[agent_types.NAME] command =
[...]`` tables. The flags are parsed in :mod:`corral.agent.cli`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from corral.agent.config import DEFAULT_CONTROLLER, KNOWN_AGENT_TYPES
from corral.agent.metrics import split_listen
from corral.layers import LayeredSettings

__all__ = ["AgentSettings", "check_label", "check_name"]

# What the controller accepts for agent names and label keys (controller/spec.py NAME_PATTERN);
# checked here too so a bad one fails at start with a clear message, not at every Hello.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_MAX_NAME = 128
_MAX_LABEL_VALUE = 256


def check_name(text: str, what: str) -> str:
    """``text`` if the controller would accept it as a name, else ValueError naming ``what``."""
    if len(text) > _MAX_NAME or not _NAME.match(text):
        raise ValueError(
            f"{what} {text!r} is not a valid name: letters, digits, '_', '.' and '-', "
            f"starting with a letter or digit, at most {_MAX_NAME} characters"
        )
    return text


def check_label(key: str, value: str) -> None:
    """ValueError unless ``key=value`` is a label the controller accepts."""
    check_name(key, "label key")
    if len(value) > _MAX_LABEL_VALUE or not value.isprintable():
        raise ValueError(f"label value of {key!r} must be printable and at most {_MAX_LABEL_VALUE} characters")


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class AgentSettings(LayeredSettings):
    """Everything ``corral agent`` is told; field names are the flags' (``--drain-grace``: ``drain_grace``).

    ``labels`` is ``--label`` (repeatable ``KEY=VALUE``) and ``agent_types`` is ``--agent-type``
    (repeatable ``NAME=COMMAND``); both are tables that merge key by key across the layers.
    """

    model_config = SettingsConfigDict(env_prefix="CORRAL_AGENT_")
    legacy_env = {
        "ca": "CORRAL_CA",
        "cert": "CORRAL_CERT",
        "key": "CORRAL_KEY",
        "join_token": "CORRAL_JOIN_TOKEN",
        "log_format": "CORRAL_LOG_FORMAT",
    }

    controller: str = DEFAULT_CONTROLLER
    name: str | None = None
    slots: int | None = None
    gpus: int | None = None
    labels: dict[str, str] = {}
    types: Annotated[tuple[str, ...], NoDecode] = KNOWN_AGENT_TYPES
    agent_types: dict[str, tuple[str, ...]] = {}
    work_dir: Path | None = None
    python_workers: int | None = None
    drain_grace: float = 30.0
    kill_grace: float = 10.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    http: str | None = None
    http_address_file: Path | None = None
    no_shell: bool = False
    python_allow: Annotated[tuple[str, ...], NoDecode] = ()
    python_path: Annotated[tuple[Path, ...], NoDecode] = ()
    env_allow: Annotated[tuple[str, ...], NoDecode] = ()
    pass_env: Annotated[tuple[str, ...], NoDecode] = ()
    run_as: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    join_token: str | None = None

    @field_validator("types", "python_allow", "env_allow", "pass_env", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        # A repeated flag gives a list of "a,b" strings; the environment one "a,b" string.
        if isinstance(value, list | tuple):
            return [part for item in value for part in (_comma_list(item) if isinstance(item, str) else [item])]
        return _comma_list(value)

    @field_validator("python_path", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part]
        return value

    @model_validator(mode="after")
    def _check(self) -> AgentSettings:
        if self.slots is not None and self.slots < 1:
            raise ValueError("--slots must be at least 1")
        for name in ("gpus", "python_workers"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"--{name.replace('_', '-')} must not be negative")
        if self.drain_grace < 0 or self.kill_grace < 0:
            raise ValueError("--drain-grace and --kill-grace must not be negative")
        if not self.types:
            raise ValueError("--types: at least one agent type")
        if self.http is not None:
            try:
                split_listen(self.http)
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        for key, value in self.labels.items():
            check_label(key, value)
        return self
