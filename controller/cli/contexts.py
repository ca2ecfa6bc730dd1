"""CLI contexts (issue 11): named controllers with their TLS files and token, in one config file.

``corral context set prod --address ctl:7070 --ca ca.pem --token-file t`` stores a context,
``corral context use prod`` makes it current, ``corral context list`` shows them. Every command
then connects as the current context says, field by field, unless a flag or environment variable
gives that field (flags > environment > context > defaults). ``--context NAME`` (or
``$CORRAL_CONTEXT``) picks another context for one invocation.

The file is ``$CORRAL_CONFIG``, else ``$XDG_CONFIG_HOME/corral/config.yaml``, else
``~/.config/corral/config.yaml``; it is written with mode 0600 because it may hold tokens::

    current_context: prod
    contexts:
      prod: {address: ctl.example.com:7070, ca: /etc/corral/ca.pem, token: "..."}
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from corral.controller.cli.common import EXIT_INVALID, OutputFormat, OutputOption, die, out_console
from corral.controller.cli.output import emit

__all__ = ["Context", "ContextFile", "ContextOption", "app", "config_path", "load", "selected", "use_for_invocation"]

ENV_CONFIG = "CORRAL_CONFIG"
ENV_CONTEXT = "CORRAL_CONTEXT"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_MAX_FILE = 1 << 20  # a config file larger than this is not ours

app = typer.Typer(help="Named controllers (address, TLS files, token) in the CLI's config file.", no_args_is_help=True)


@dataclass(frozen=True, slots=True)
class Context:
    """One named controller; empty fields fall back to the defaults."""

    address: str = ""
    ca: str = ""
    cert: str = ""
    key: str = ""
    token: str = ""


@dataclass(frozen=True, slots=True)
class ContextFile:
    """The config file: its contexts and the current one."""

    current: str
    contexts: dict[str, Context]


def config_path() -> Path:
    """``$CORRAL_CONFIG``, else ``$XDG_CONFIG_HOME/corral/config.yaml``, else ``~/.config/corral/config.yaml``."""
    explicit = os.environ.get(ENV_CONFIG)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "corral" / "config.yaml"


def _bad(path: Path, why: str) -> typer.Exit:
    die(f"error: {path}: {why}", EXIT_INVALID)


def load(path: Path | None = None) -> ContextFile:
    """The config file's contexts (none when it does not exist); exits 2 on a malformed file."""
    path = path or config_path()
    try:
        if path.stat().st_size > _MAX_FILE:
            raise _bad(path, f"over {_MAX_FILE} bytes; not a corral config file")
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ContextFile("", {})
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise _bad(path, f"cannot read it: {exc}") from None
    data = data or {}
    if not isinstance(data, dict) or not isinstance(data.get("contexts", {}), dict):
        raise _bad(path, "expected a mapping with `current_context` and `contexts`")
    contexts: dict[str, Context] = {}
    for name, fields in (data.get("contexts") or {}).items():
        if not isinstance(fields, dict):
            raise _bad(path, f"contexts.{name}: expected a mapping")
        unknown = set(fields) - set(Context.__slots__)
        if unknown:
            raise _bad(path, f"contexts.{name}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        contexts[str(name)] = Context(**{k: str(v) for k, v in fields.items() if v is not None})
    return ContextFile(str(data.get("current_context") or ""), contexts)


def save(config: ContextFile, path: Path | None = None) -> Path:
    """Write the file atomically with mode 0600 (it may hold tokens)."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "current_context": config.current,
        "contexts": {name: {k: v for k, v in asdict(c).items() if v} for name, c in sorted(config.contexts.items())},
    }
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            yaml.safe_dump(body, stream, sort_keys=False)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


_override = ""


def use_for_invocation(name: str) -> None:
    """``--context NAME`` of this invocation (the app's global option)."""
    global _override
    _override = name


def selected() -> tuple[str, Context]:
    """The context this invocation uses: ``--context``, else ``$CORRAL_CONTEXT``, else the current one.

    ``("", Context())`` when there is none; exits 2 when one is named but not defined.
    """
    config = load()
    name = _override or config.current
    if not name:
        return "", Context()
    context = config.contexts.get(name)
    if context is None:
        die(f"error: no context {name!r} in {config_path()} (see `corral context list`)", EXIT_INVALID)
    return name, context


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise typer.BadParameter(f"{name!r}: letters, digits, '.', '_' and '-', at most 63, starting alphanumeric")
    return name


ContextOption = Annotated[
    str,
    typer.Option(
        "--context",
        envvar=ENV_CONTEXT,
        help="Use this context (`corral context list`) instead of the current one.",
        show_default=False,
    ),
]

NameArgument = Annotated[str, typer.Argument(help="The context's name.", callback=_check_name, show_default=False)]


@app.command("list")
def list_(output: OutputOption = OutputFormat.table) -> None:
    """List the contexts; `*` marks the current one. Tokens are never printed (only whether one is set).

    JSON: a list of {name, current, address, ca, cert, key, token_set}.
    """
    config = load()
    rows = [
        {
            "name": name,
            "current": name == config.current,
            "address": context.address,
            "ca": context.ca,
            "cert": context.cert,
            "key": context.key,
            "token_set": bool(context.token),
        }
        for name, context in sorted(config.contexts.items())
    ]

    def view(wide: bool) -> Table:
        table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
        for column in ("CURRENT", "NAME", "ADDRESS", "TLS", "TOKEN", *(["CA", "CERT"] if wide else [])):
            table.add_column(column)
        for row in rows:
            tls = "mutual" if row["cert"] else ("yes" if row["ca"] else "no")
            cells: list[str] = ["*" if row["current"] else "", str(row["name"]), str(row["address"] or "-"), tls]
            cells.append("set" if row["token_set"] else "-")
            if wide:
                cells += [str(row["ca"]) or "-", str(row["cert"]) or "-"]
            table.add_row(*cells)
        return table

    if not rows and not output.structured:
        out_console().print(f"no contexts in {config_path()}; add one with `corral context set NAME --address ...`")
        return
    emit(rows, output, view)


@app.command("use")
def use(name: NameArgument) -> None:
    """Make a context the current one: later commands connect as it says."""
    config = load()
    if name not in config.contexts:
        die(f"error: no context {name!r} in {config_path()} (see `corral context list`)", EXIT_INVALID)
    save(replace(config, current=name))
    out_console().print(f"current context: {name}", markup=False)


def _file(value: Path | None, what: str) -> str | None:
    if value is None:
        return None
    if str(value) == "":
        return ""
    resolved = value.expanduser().resolve()
    if not resolved.is_file():
        raise typer.BadParameter(f"{value}: no such file", param_hint=what)
    return str(resolved)  # absolute: the context works from any directory


@app.command("set")
def set_(
    name: NameArgument,
    address: Annotated[
        str | None, typer.Option("--address", "-a", help="Controller address HOST:PORT (or a comma-separated list).")
    ] = None,
    ca: Annotated[Path | None, typer.Option("--ca", help="CA of the controller's certificate (TLS).")] = None,
    cert: Annotated[Path | None, typer.Option("--cert", help="Client certificate (mutual TLS).")] = None,
    key: Annotated[Path | None, typer.Option("--key", help="Private key of --cert.")] = None,
    token: Annotated[str | None, typer.Option("--token", help="Bearer token (prefer --token-file).")] = None,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="Read the bearer token from this file.", dir_okay=False)
    ] = None,
    use_it: Annotated[bool, typer.Option("--use", help="Also make it the current context.")] = False,
) -> None:
    """Create or update a context; only the fields given change. File paths are stored absolute."""
    if token is not None and token_file is not None:
        raise typer.BadParameter("give --token or --token-file, not both")
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise typer.BadParameter(f"{token_file}: {exc.strerror}", param_hint="--token-file") from None
    config = load()
    old = config.contexts.get(name, Context())
    changes = {
        "address": address,
        "ca": _file(ca, "--ca"),
        "cert": _file(cert, "--cert"),
        "key": _file(key, "--key"),
        "token": token,
    }
    new = replace(old, **{k: v for k, v in changes.items() if v is not None})
    if bool(new.cert) != bool(new.key):
        raise typer.BadParameter("--cert and --key go together")
    contexts = {**config.contexts, name: new}
    current = name if use_it or not config.current else config.current
    path = save(ContextFile(current, contexts))
    verb = "updated" if name in config.contexts else "created"
    suffix = " (current)" if current == name else ""
    out_console().print(f"context {name} {verb} in {path}{suffix}", markup=False)


@app.command("rm")
def remove(name: NameArgument) -> None:
    """Delete a context (the current context becomes none if it was this one)."""
    config = load()
    if name not in config.contexts:
        die(f"error: no context {name!r} in {config_path()}", EXIT_INVALID)
    contexts = {k: v for k, v in config.contexts.items() if k != name}
    save(ContextFile("" if config.current == name else config.current, contexts))
    out_console().print(f"context {name} deleted", markup=False)
