"""Layered settings for corral's programs: flags > environment > config file > defaults.

Each program (controller, agent, CLI) declares one pydantic-settings class; :func:`load` builds
it from the flags actually given on the command line, the ``CORRAL_<PROGRAM>_<FIELD>``
environment variables (plus a few older names kept for compatibility), and a TOML or YAML file
(``--config FILE``, ``$CORRAL_<PROGRAM>_CONFIG``, else ``<config dir>/<program>.toml`` or
``.yaml`` when present). Tables (mappings) merge key by key across layers; anything else is
replaced by the higher layer. Unknown keys in a file are refused, with the file and key named.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import typer
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from corral.dirs import config_dir

__all__ = [
    "ConfigError",
    "LayeredSettings",
    "LogFormat",
    "LogLevel",
    "config_file",
    "given_flags",
    "load",
    "parse_command",
    "read_file",
]

_MAX_FILE = 1 << 20  # a config file larger than this is not ours
_FILE_LAYER: ContextVar[Mapping[str, Any] | None] = ContextVar("corral_config_file_layer", default=None)

S = TypeVar("S", bound="LayeredSettings")


class LogLevel(StrEnum):
    """``--log-level`` of both daemons."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormat(StrEnum):
    """``--log-format`` of both daemons: text (key=value) or json (one object per line)."""

    text = "text"
    json = "json"


class ConfigError(ValueError):
    """Unusable configuration: the message names the flag, variable or file key at fault."""


class _FileSource(PydanticBaseSettingsSource):
    """The config file's values (read before the settings are built, handed over in a ContextVar)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole layer

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_LAYER.get() or {})


class _LegacyEnvSource(PydanticBaseSettingsSource):
    """Environment variables of older releases (``CORRAL_CA``...), below the prefixed names."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        legacy: Mapping[str, str] = getattr(self.settings_cls, "legacy_env", {})
        return {field: os.environ[name] for field, name in legacy.items() if os.environ.get(name)}


class LayeredSettings(BaseSettings):
    """Base of the programs' settings classes: the layer order and strictness live here.

    Subclasses set ``model_config = SettingsConfigDict(env_prefix="CORRAL_<PROGRAM>_", ...)``
    and may map field names to older environment variable names in ``legacy_env``.
    """

    model_config = SettingsConfigDict(extra="forbid", env_ignore_empty=True, validate_default=True)
    legacy_env: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init = the flags given; no .env files and no secrets dirs: one file, named explicitly.
        return (init_settings, env_settings, _LegacyEnvSource(settings_cls), _FileSource(settings_cls))


def config_file(program: str, explicit: Path | None) -> Path | None:
    """The config file of ``program``: ``explicit``, else ``$CORRAL_<PROGRAM>_CONFIG``, else the default if present."""
    if explicit is not None:
        return explicit
    named = os.environ.get(f"CORRAL_{program.upper()}_CONFIG")
    if named:
        return Path(named)
    for suffix in (".toml", ".yaml", ".yml"):
        candidate = config_dir() / f"{program}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_file(path: Path) -> dict[str, Any]:
    """A TOML (``.toml``) or YAML (anything else) config file as a mapping; ConfigError naming the file."""
    try:
        if path.stat().st_size > _MAX_FILE:
            raise ConfigError(f"{path}: over {_MAX_FILE} bytes; not a corral config file")
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(raw.decode("utf-8"))
        else:
            import yaml  # only for a YAML file: ~1 MiB a daemon started without one never needs

            try:
                data = yaml.safe_load(raw.decode("utf-8"))
            except yaml.YAMLError as exc:
                raise ConfigError(f"config file {path}: not valid {_kind(path)}: {exc}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: not valid {_kind(path)}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"config file {path}: expected a mapping of setting names to values")
    return {key.replace("-", "_"): value for key, value in data.items()}


def _kind(path: Path) -> str:
    return "TOML" if path.suffix.lower() == ".toml" else "YAML"


def load(cls: type[S], flags: Mapping[str, Any], file: Path | None, file_data: Mapping[str, Any] | None = None) -> S:
    """Build ``cls`` from the given flags, the environment and ``file`` (already read: ``file_data``).

    ConfigError says which layer gave the bad value: ``--flag``, ``$VARIABLE`` or ``key in FILE``.
    """
    data = dict(file_data) if file_data is not None else (read_file(file) if file is not None else {})
    token = _FILE_LAYER.set(data)
    try:
        return cls(**flags)
    except ValidationError as exc:
        raise ConfigError(_describe(cls, exc, flags, file, data)) from None
    finally:
        _FILE_LAYER.reset(token)


def _describe(
    cls: type[LayeredSettings],
    exc: ValidationError,
    flags: Mapping[str, Any],
    file: Path | None,
    data: Mapping[str, Any],
) -> str:
    prefix = str(cls.model_config.get("env_prefix", ""))
    lines: list[str] = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        loc = [str(part) for part in error["loc"]]
        if not loc:
            lines.append(message)  # a check across fields: its message names the flags
            continue
        field = loc[0]
        where = _where(cls, field, prefix, flags, file, data)
        inner = ".".join(loc[1:])
        lines.append(f"{where}{'.' + inner if inner else ''}: {message}")
    return "; ".join(lines)


def _where(
    cls: type[LayeredSettings],
    field: str,
    prefix: str,
    flags: Mapping[str, Any],
    file: Path | None,
    data: Mapping[str, Any],
) -> str:
    flag = f"--{field.replace('_', '-')}"
    if field in flags:
        return flag
    variable = f"{prefix}{field}".upper()
    if os.environ.get(variable):
        return f"${variable} ({flag})"
    legacy = cls.legacy_env.get(field)
    if legacy and os.environ.get(legacy):
        return f"${legacy} ({flag})"
    if field in data and file is not None:
        return f"{field} in {file} ({flag})"
    if field not in cls.model_fields and file is not None:
        return f"{file}: unknown setting {field!r}"
    return flag


def parse_command(app: typer.Typer, prog: str, argv: list[str] | None) -> Any:
    """Run a daemon's parse-only typer command on ``argv`` (None: ``sys.argv[1:]``); its settings.

    The command appends the settings it built to ``ctx.obj``. Like argparse: bad flags or settings
    print one message on stderr and raise SystemExit(2); ``--help`` prints the help and raises
    SystemExit(0).
    """
    parsed: list[Any] = []
    command = typer.main.get_command(app)
    try:
        args = sys.argv[1:] if argv is None else list(argv)
        command.main(args=args, prog_name=prog, standalone_mode=True, obj=parsed)
    except SystemExit as exc:
        if exc.code in (0, None) and parsed:
            return parsed[0]
        raise
    raise SystemExit(0)  # not reached: standalone mode always exits


def given_flags(ctx: typer.Context) -> dict[str, Any]:
    """The options the user gave on the command line (not their defaults), minus ``--config``:
    the flags layer. Choices come back as their plain values."""
    given: dict[str, Any] = {}
    for name, value in ctx.params.items():
        source = ctx.get_parameter_source(name)
        if name != "config" and source is not None and source.name == "COMMANDLINE":
            given[name] = value.value if isinstance(value, StrEnum) else value
    return given
