"""``corral --version``: the installed package's version (and the API's), then exit."""

from __future__ import annotations

from importlib import metadata
from typing import Annotated

import typer

__all__ = ["VersionOption", "version_text"]


def version_text() -> str:
    """``corral 0.1.0`` from the installed distribution, else the package's own ``__version__``."""
    try:
        number = metadata.version("corral")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        from corral import __version__ as number
    return f"corral {number}"


def _show(value: bool) -> None:
    if value:
        print(version_text())
        raise typer.Exit(0)


VersionOption = Annotated[
    bool,
    typer.Option("--version", "-V", help="Print the version and exit.", callback=_show, is_eager=True),
]
