"""Issue 10 on the command line: ``corral cache clear``, and the ``-p NAME=VALUE`` / ``--no-cache``
options of ``corral run`` and ``corral submit``.

::

    corral run etl.yaml -p day=2024-05-01 -p parts=8
    corral run etl.yaml --no-cache          # run everything; successes refresh the cache
    corral cache clear [--namespace team-a]
"""

from __future__ import annotations

from typing import Annotated

import typer

from corral.controller.cli.common import DEFAULT, EXIT_INVALID, AddressOption, call, die
from corral.controller.sdk.client import Client

__all__ = ["NoCacheOption", "ParamOption", "app", "parse_params"]

app = typer.Typer(help="The task result cache: tasks with `cache:` reuse results of the same work.")

ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        metavar="NAME=VALUE",
        help="A value for one of the workflow's `params` (repeatable); read as its default's type.",
    ),
]
NoCacheOption = Annotated[
    bool, typer.Option("--no-cache", help="Run every task: cached results are not used (successes refresh them).")
]


def parse_params(values: list[str] | None) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` -> ``{"a": "1", "b": "x=y"}``; exit 2 for an item without ``=``."""
    params: dict[str, str] = {}
    for item in values or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            die(f"error: -p {item!r}: give NAME=VALUE", EXIT_INVALID)
        params[name] = value
    return params


@app.command("clear")
def clear(
    namespace: Annotated[
        str, typer.Option("--namespace", "-n", help="Only this namespace (default: every one your credential covers).")
    ] = "",
    address: AddressOption = DEFAULT,
) -> None:
    """Drop cached task results: tasks with `cache:` run again next time."""

    async def action(client: Client) -> tuple[int, int]:
        return await client.clear_cache(namespace)

    cleared, remaining = call(address, action)
    print(
        f"cleared {cleared} cached result{'s' if cleared != 1 else ''}" + (f" ({remaining} left)" if remaining else "")
    )
