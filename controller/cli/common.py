"""What every command shares: the ``--address`` and ``-o`` options, credentials, consoles, and errors.

Exit codes (documented in ``corral --help``): 0 ok; 1 the workflow failed or was cancelled, or an
error (controller unreachable, not found, refused); 2 invalid input (bad workflow file, bad flag);
3 the workflow cannot be scheduled (``corral run``).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console

from corral.controller.errors import InvalidArgument
from corral.controller.sdk.client import DEFAULT_ADDRESS, Client
from corral.controller.sdk.credentials import ENV_CA, ENV_CERT, ENV_KEY, ENV_TOKEN
from corral.controller.sdk.errors import CorralError, InvalidArgumentError, UnavailableError
from corral.controller.spec import WorkflowSpec, load_workflow_file

__all__ = [
    "EXIT_ERROR",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_UNSCHEDULABLE",
    "AddressOption",
    "CaOption",
    "CertOption",
    "ClientCredentials",
    "KeyOption",
    "OutputFormat",
    "OutputOption",
    "TokenOption",
    "call",
    "die",
    "err_console",
    "load_spec",
    "out_console",
    "use_credentials",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INVALID = 2
EXIT_UNSCHEDULABLE = 3

T = TypeVar("T")


class OutputFormat(StrEnum):
    """How read commands print their data on stdout."""

    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"

    @property
    def structured(self) -> bool:
        return self in (OutputFormat.json, OutputFormat.yaml)


AddressOption = Annotated[
    str,
    typer.Option(
        "--address",
        "-a",
        envvar="CORRAL_ADDRESS",
        help="Controller address HOST:PORT, or a comma-separated list of controllers (the leader is found) "
        "[default: the current context's, else 127.0.0.1:7070].",
        show_default=False,
    ),
]

OutputOption = Annotated[
    OutputFormat,
    typer.Option(
        "--output",
        "-o",
        help="table, wide (more columns), json or yaml (snake_case keys, RFC 3339 times).",
        case_sensitive=False,
    ),
]

#: "" = not given: the current context's address, else DEFAULT_ADDRESS (see :func:`call`).
DEFAULT = ""

CaOption = Annotated[
    Path | None,
    typer.Option("--ca", envvar=ENV_CA, help="CA of the controller's certificate: connect with TLS.", dir_okay=False),
]
CertOption = Annotated[
    Path | None,
    typer.Option("--cert", envvar=ENV_CERT, help="Client certificate to present (mutual TLS).", dir_okay=False),
]
KeyOption = Annotated[Path | None, typer.Option("--key", envvar=ENV_KEY, help="Private key of --cert.", dir_okay=False)]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar=ENV_TOKEN, help="Bearer token sent with every call.", show_default=False),
]


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """The global ``--ca --cert --key --token`` of one invocation (env: CORRAL_CA/CERT/KEY/TOKEN)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    token: str | None = None


_credentials = ClientCredentials()


def use_credentials(credentials: ClientCredentials) -> None:
    """Set the credentials every later :func:`call` connects with (the app's global options)."""
    global _credentials
    _credentials = credentials


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    # Off a terminal, never wrap table rows at 80 columns: scripts read them line by line.
    # rich itself honours NO_COLOR (and FORCE_COLOR / TERM=dumb).
    return Console(
        stderr=stderr,
        highlight=False,
        soft_wrap=not terminal,
        width=None if terminal else 1000,
        no_color="NO_COLOR" in os.environ or None,
    )


def out_console() -> Console:
    """A console on stdout, for data."""
    return _console(stderr=False)


def err_console() -> Console:
    """A console on stderr, for progress, hints and errors."""
    return _console(stderr=True)


def die(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print one line on stderr and exit with ``code``."""
    err_console().print(message, markup=False, highlight=False)
    raise typer.Exit(code)


def _report_invalid(violations: list[tuple[str, str]], header: str) -> NoReturn:
    console = err_console()
    console.print(header, markup=False)
    for field, description in violations:
        console.print(f"  {field}: {description}" if field else f"  {description}", markup=False)
    raise typer.Exit(EXIT_INVALID)


def load_spec(path: Path) -> WorkflowSpec:
    """Read a workflow file; on any problem print every field error (one per line) and exit 2."""
    try:
        return load_workflow_file(path)
    except FileNotFoundError:
        die(f"error: no such file: {path}", EXIT_INVALID)
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        die(f"error: cannot read {path}: {exc}", EXIT_INVALID)
    except InvalidArgument as exc:
        _report_invalid([(v.field, v.description) for v in exc.violations], f"error: {path} is not a valid workflow:")


def call(address: str, action: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``action`` with a connected client; turn SDK errors into one message and an exit code."""
    # Issue 11: what flags and the environment leave unset comes from the selected context. Imported
    # here: the contexts module renders with this one's helpers.
    from corral.controller.cli.contexts import selected

    _, context = selected()
    # "" rather than None: the options already read the environment, the client must not read it again.
    try:
        client = Client(
            address or context.address or DEFAULT_ADDRESS,
            ca=_credentials.ca or context.ca,
            cert=_credentials.cert or context.cert,
            key=_credentials.key or context.key,
            token=_credentials.token or context.token,
        )
    except InvalidArgumentError as exc:
        bad_address = any(v.field == "address" for v in exc.violations)
        header = "error: unusable --address:" if bad_address else "error: unusable --ca/--cert/--key/--token:"
        _report_invalid([(v.field, v.description) for v in exc.violations], header)

    async def main() -> T:
        async with client:
            return await action(client)

    try:
        return asyncio.run(main())
    except UnavailableError as exc:
        die(exc.message)
    except InvalidArgumentError as exc:
        _report_invalid(
            [(v.field, v.description) for v in exc.violations], "error: the controller refused the request:"
        )
    except CorralError as exc:
        die(f"error: {exc.message}")
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
