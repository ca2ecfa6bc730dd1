"""The CLI's connection settings: flags > environment > the selected context > defaults.

One pydantic-settings class over the same layers as the daemons': the global ``--address``,
``--ca``, ``--cert``, ``--key``, ``--token`` options, then ``$CORRAL_ADDRESS``, ``$CORRAL_CA``,
``$CORRAL_CERT``, ``$CORRAL_KEY``, ``$CORRAL_TOKEN``, then the current context of the CLI's config
file (``corral context ...``, :mod:`corral.controller.cli.contexts`), then the defaults. Each field
is resolved on its own: a context's token is used with an address from the environment.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from pydantic_settings import SettingsConfigDict

from corral.controller.sdk.client import DEFAULT_ADDRESS
from corral.layers import LayeredSettings, load

__all__ = ["CliSettings", "resolve"]


class CliSettings(LayeredSettings):
    """Where and how the CLI connects. "" means unset (the client then reads nothing more)."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_")

    address: str = DEFAULT_ADDRESS
    ca: str = ""
    cert: str = ""
    key: str = ""
    token: str = ""


def resolve(
    address: str = "",
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    token: str | None = None,
) -> CliSettings:
    """The settings of this invocation: the given options over env, context and defaults.

    Exits 2 (via :func:`~corral.controller.cli.contexts.selected`) when a named context is missing.
    """
    # Imported here: the contexts module renders with common's helpers, which import this one.
    from corral.controller.cli.contexts import config_path, selected

    _, context = selected()
    given = {"address": address, "ca": ca, "cert": cert, "key": key, "token": token}
    flags = {name: str(value) for name, value in given.items() if value}
    layer = {name: value for name, value in asdict(context).items() if value}
    return load(CliSettings, flags, config_path(), file_data=layer)
