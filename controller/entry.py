"""The ``corral`` console script: the daemons start lean, every other command loads the CLI.

``corral controller ...`` and ``corral agent ...`` hand their arguments to the daemons' own
parsers, as the CLI's commands of those names do, but without importing the CLI first: its
command modules, and ``rich`` with ``pygments`` behind them, are ~7 MiB of a controller's RSS for
its whole life (the deployed images start both daemons this way). Global options before the
command (``corral --ca X controller``) take the CLI's path, which ends in the same daemon.
"""

from __future__ import annotations

import sys

__all__ = ["keep_rich_out", "main"]

_DAEMONS = ("controller", "agent")


def keep_rich_out() -> None:
    """Have ``import rich`` fail in a daemon (unless something loaded it already).

    structlog and typer import rich when it is installed, only for pretty console output that a
    daemon never prints (its logs are lines, its help is plain). Both fall back without it.
    Measured: 4 MiB less RSS at boot (docs/DECISIONS.md, "Memory, ninth wave").
    """
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]  # None: the import system's "absent"


def main() -> None:
    """Entry point of the ``corral`` console script."""
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command in _DAEMONS:
        keep_rich_out()
        args = sys.argv[2:]
        if command == "controller":
            from corral.controller.daemon import main as run_controller

            sys.exit(run_controller(args))
        from corral.agent.cli import main as run_agent

        sys.exit(run_agent(args))
    from corral.controller.cli.main import main as run_cli

    run_cli()
