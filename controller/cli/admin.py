"""Access commands: tokens, namespaces, secrets, certificate revocation, the audit log and whoami.

corral token create --role submitter --namespace team-a --ttl 30d --description "CI of team A"
corral namespace create team-a && corral namespace set team-a
printf %s "$DB_PASSWORD" | corral secret set team-a db-pass
corral audit --since 1h --principal token:3f2a9c01b2d4 -o json
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import RenderableType
from rich.table import Table

from corral.controller.cli.common import (
    DEFAULT,
    EXIT_INVALID,
    AddressOption,
    OutputFormat,
    OutputOption,
    call,
    die,
    err_console,
    out_console,
)
from corral.controller.cli.output import emit
from corral.controller.durations import parse_duration
from corral.controller.sdk.admin_types import (
    AuditRecord,
    CreatedToken,
    Identity,
    NamespaceInfo,
    SecretInfo,
    TokenInfo,
)
from corral.controller.sdk.client import Client
from corral.controller.spec import NAME_PATTERN

__all__ = [
    "NamespaceOption",
    "audit",
    "certs_revoke",
    "configured_namespace",
    "namespace_app",
    "resolve_namespace",
    "secret_app",
    "token_app",
    "whoami",
]

token_app = typer.Typer(help="Create, list and revoke access tokens (admin).", no_args_is_help=True)
namespace_app = typer.Typer(help="Namespaces: where workflows and secrets live.", no_args_is_help=True)
secret_app = typer.Typer(help="Task secrets, encrypted at rest (admin).", no_args_is_help=True)

_MAX_SECRET_BYTES = 64 * 1024


def _table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column in ("ID", "NAME"))
    return table


def _stamp(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(text: str, flag: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        die(f"error: {flag}: {exc}", EXIT_INVALID)


# --- the CLI's default namespace ---------------------------------------------------------------


def _namespace_file() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "corral" / "namespace"


def configured_namespace() -> str:
    """The namespace `corral namespace set` stored, or "" when none is set."""
    try:
        return _namespace_file().read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return ""


def resolve_namespace(flag: str, from_file: str | None = None) -> str:
    """``--namespace``, else the workflow file's own, else the stored default ("" lets the controller decide)."""
    return flag or from_file or configured_namespace()


NamespaceOption = Annotated[
    str,
    typer.Option(
        "--namespace", "-n", help="Namespace (default: the workflow file's, else `corral namespace set`, else default)."
    ),
]


# --- tokens ------------------------------------------------------------------------------------


def _tokens_view(tokens: Sequence[TokenInfo], wide: bool) -> RenderableType:
    columns = ["ID", "ROLE", "NAMESPACES", "EXPIRES", "USES", "DESCRIPTION"]
    if wide:
        columns += ["CREATED", "CREATED BY", "PATTERN", "LABELS", "REVOKED"]
    table = _table(*columns)
    for t in tokens:
        uses = f"{t.used}/{t.uses or '∞'}" if t.role == "agent" else "-"
        row = [t.token_id, t.role, ",".join(t.namespaces) or "*", _stamp(t.expires_at), uses, t.description]
        if wide:
            labels = ",".join(f"{k}={v}" for k, v in t.labels.items())
            row += [_stamp(t.created_at), t.created_by, t.name_pattern or "-", labels or "-", str(t.revoked).lower()]
        table.add_row(*row)
    return table


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option("--role", "-r", help="admin, operator, submitter, viewer, worker or agent.")],
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Namespace it covers (repeatable; '*' for all). Default: default."),
    ] = None,
    ttl: Annotated[str, typer.Option("--ttl", help="Lifetime, e.g. 1h, 30d (default: never expires).")] = "",
    description: Annotated[str, typer.Option("--description", "-d", help="What it is for.")] = "",
    name_pattern: Annotated[str, typer.Option("--name-pattern", help="Join tokens: glob agent names must match.")] = "",
    uses: Annotated[int, typer.Option("--uses", min=0, help="Join tokens: how many agents may join (0: any).")] = 0,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="Join tokens: label K=V granted to agents (repeatable).")
    ] = None,
    types: Annotated[
        list[str] | None, typer.Option("--types", help="Join tokens: agent types granted (repeatable or a,b).")
    ] = None,
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Create a token and print it (shown only this once; the controller keeps only its hash).

    Role agent makes a join token for `corral agent --join-token`. JSON: {token, info{token_id, role, ...}}.
    """
    labels: dict[str, str] = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            die(f"error: --label {item!r}: expected KEY=VALUE", EXIT_INVALID)
        labels[key] = value
    agent_types = [t for item in types or [] for t in item.split(",") if t]
    ttl_s = _duration(ttl, "--ttl") if ttl else 0.0

    async def action(client: Client) -> CreatedToken:
        return await client.create_token(
            role,
            namespaces=namespace or [],
            ttl=ttl_s,
            description=description,
            name_pattern=name_pattern,
            uses=uses,
            labels=labels,
            agent_types=agent_types,
        )

    created = call(address, action)
    if output.structured:
        emit({"token": created.token, "info": created.info.to_dict()}, output, lambda wide: "")
        return
    info = created.info
    scope = ",".join(info.namespaces) or "every namespace"
    err_console().print(
        f"token {info.token_id} ({info.role}, {scope}); store it now, it is not shown again:", markup=False
    )
    print(created.token)


@token_app.command("list")
def token_list(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked tokens.")] = False,
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """List tokens (never their secrets). JSON: a list of token info objects."""

    async def action(client: Client) -> tuple[TokenInfo, ...]:
        return await client.list_tokens(include_revoked=all_)

    tokens = call(address, action)
    emit([t.to_dict() for t in tokens], output, lambda wide: _tokens_view(tokens, wide))


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="Token id or a unique prefix.", show_default=False)],
    address: AddressOption = DEFAULT,
) -> None:
    """Revoke a token: it stops working at once (agents that joined with a join token too)."""

    async def action(client: Client) -> TokenInfo:
        return await client.revoke_token(token_id)

    print(f"token {call(address, action).token_id} revoked")


# --- namespaces --------------------------------------------------------------------------------


@namespace_app.command("create")
def namespace_create(
    name: Annotated[str, typer.Argument(help="Namespace name.", show_default=False)],
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    address: AddressOption = DEFAULT,
) -> None:
    """Create a namespace (admin)."""

    async def action(client: Client) -> NamespaceInfo:
        return await client.create_namespace(name, description=description)

    print(f"namespace {call(address, action).name} created")


@namespace_app.command("list")
def namespace_list(output: OutputOption = OutputFormat.table, address: AddressOption = DEFAULT) -> None:
    """List the namespaces you may use (the one set with `corral namespace set` is marked *)."""

    async def action(client: Client) -> tuple[NamespaceInfo, ...]:
        return await client.list_namespaces()

    namespaces = call(address, action)
    current = configured_namespace() or "default"

    def view(wide: bool) -> RenderableType:
        table = _table("", "NAME", "CREATED", "DESCRIPTION")
        for n in namespaces:
            table.add_row("*" if n.name == current else "", n.name, _stamp(n.created_at), n.description)
        return table

    emit([n.to_dict() for n in namespaces], output, view)


@namespace_app.command("set")
def namespace_set(name: Annotated[str, typer.Argument(help="Namespace name.", show_default=False)]) -> None:
    """Make NAME the default namespace of `corral submit`, `run` and `list` (stored in $XDG_CONFIG_HOME/corral)."""
    if not re.match(NAME_PATTERN, name) or len(name) > 128:
        die(f"error: {name!r} is not a namespace name", EXIT_INVALID)
    path = _namespace_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(name + "\n")
    print(f"default namespace: {name}")


# --- secrets -----------------------------------------------------------------------------------


@secret_app.command("set")
def secret_set(
    namespace: Annotated[str, typer.Argument(help="Namespace of the secret.", show_default=False)],
    name: Annotated[str, typer.Argument(help="Secret name (refer to it as {secret: NAME}).", show_default=False)],
    address: AddressOption = DEFAULT,
) -> None:
    """Store a secret; its value is read from stdin (one trailing newline is dropped)."""
    if sys.stdin.isatty():
        err_console().print("value (end with Ctrl-D):", markup=False)
    data = sys.stdin.buffer.read(_MAX_SECRET_BYTES + 2)
    if data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        die("error: the secret's value comes on stdin, and it was empty", EXIT_INVALID)

    async def action(client: Client) -> bool:
        return await client.set_secret(namespace, name, data)

    print(f"secret {namespace}/{name} {'created' if call(address, action) else 'replaced'}")


@secret_app.command("list")
def secret_list(
    namespace: Annotated[str, typer.Argument(help="Namespace (default: all).", show_default=False)] = "",
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """List secret names (values are never shown)."""

    async def action(client: Client) -> tuple[SecretInfo, ...]:
        return await client.list_secrets(namespace)

    secrets = call(address, action)

    def view(wide: bool) -> RenderableType:
        table = _table("NAMESPACE", "NAME", "UPDATED")
        for s in secrets:
            table.add_row(s.namespace, s.name, _stamp(s.updated_at))
        return table

    emit([s.to_dict() for s in secrets], output, view)


@secret_app.command("rm")
def secret_rm(
    namespace: Annotated[str, typer.Argument(show_default=False)],
    name: Annotated[str, typer.Argument(show_default=False)],
    address: AddressOption = DEFAULT,
) -> None:
    """Delete a secret (tasks still waiting for it will fail)."""

    async def action(client: Client) -> None:
        await client.delete_secret(namespace, name)

    call(address, action)
    print(f"secret {namespace}/{name} deleted")


# --- certificates, audit, identity -------------------------------------------------------------


def certs_revoke(
    name: Annotated[str, typer.Argument(help="The certificate's common name (agent or client).", show_default=False)],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the deny-list).")] = "",
    address: AddressOption = DEFAULT,
) -> None:
    """Refuse a certificate on every call from now on (a deny-list of common names)."""

    async def action(client: Client) -> None:
        await client.revoke_certificate(name, reason=reason)

    call(address, action)
    print(f"certificate {name} revoked")


def _audit_view(records: Sequence[AuditRecord], wide: bool) -> RenderableType:
    columns = ["TIME", "PRINCIPAL", "ROLE", "METHOD", "TARGET", "CODE"]
    if wide:
        columns += ["NAMESPACE", "DETAIL"]
    table = _table(*columns)
    for r in records:
        row = [_stamp(r.at), r.principal, r.role or "-", r.method.rsplit(".", 1)[-1], r.target or "-", r.code]
        if wide:
            row += [r.namespace or "-", r.detail or "-"]
        table.add_row(*row)
    return table


def audit(
    since: Annotated[str, typer.Option("--since", help="Only records newer than this, e.g. 1h, 7d.")] = "",
    principal: Annotated[
        str, typer.Option("--principal", "-p", help="Only this caller, e.g. token:3f2a9c01b2d4.")
    ] = "",
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many (the newest).")] = 100,
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Show the audit log: who changed what, when, and the outcome (admin).

    JSON: a list of {seq, at, principal, role, method, target, namespace, code, detail}.
    """
    moment = datetime.now(UTC) - timedelta(seconds=_duration(since, "--since")) if since else None

    async def action(client: Client) -> tuple[AuditRecord, ...]:
        return await client.list_audit(since=moment, principal=principal, limit=limit)

    records = call(address, action)
    emit([r.to_dict() for r in records], output, lambda wide: _audit_view(records, wide))


def whoami(output: OutputOption = OutputFormat.table, address: AddressOption = DEFAULT) -> None:
    """Show who the controller takes you for: principal, role and namespaces."""

    async def action(client: Client) -> Identity:
        return await client.whoami()

    identity = call(address, action)
    if output.structured:
        emit(identity.to_dict(), output, lambda wide: "")
        return
    scope = ",".join(identity.namespaces) or "every namespace"
    state = "on" if identity.auth_enabled else "off (dev)"
    out_console().print(f"{identity.principal} role={identity.role} namespaces={scope} auth={state}", markup=False)
