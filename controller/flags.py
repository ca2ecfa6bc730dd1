"""The controller's command line (typer): ``corral controller ...`` and ``python -m corral.controller``.

Every option defaults to "not given"; what the user did give becomes the top layer of
:class:`~corral.controller.settings.ControllerSettings`, above the environment, the config file
and the defaults. ``--db PATH`` and ``--memory`` are short for ``--store sqlite:///PATH`` and
``--store memory://``.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from corral.controller.settings import ControllerSettings
from corral.controller.store.factory import sqlite_url
from corral.dirs import controller_db
from corral.layers import ConfigError, LogFormat, LogLevel, config_file, given_flags, load, parse_command

__all__ = ["EXIT_USAGE", "PROG", "app", "parse_args"]

EXIT_USAGE = 2  # click's (and argparse's) code for bad flags; also unusable TLS files and a refused exposure
PROG = "corral controller"

app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)


class Synchronous(StrEnum):
    """SQLite's durability (``PRAGMA synchronous``)."""

    FULL = "FULL"
    NORMAL = "NORMAL"


_STORE_ALIASES = ("store", "db", "memory")


def _db_url(value: str) -> str:
    """``--db``: a SQLite path, or (as the PostgreSQL store's branch had it) a postgresql:// URL."""
    if value.startswith(("postgresql://", "postgres://")):
        return value
    return sqlite_url(Path(value))


def _settings_from(ctx: typer.Context, config: Path | None) -> ControllerSettings:
    given = given_flags(ctx)
    if given.pop("no_deadline_scheduling", False):
        given["deadline_scheduling"] = False
    try:
        if len([name for name in _STORE_ALIASES if name in given]) > 1:
            raise ConfigError("--store, --db and --memory are alternatives: give one")
        if "db" in given:
            given["store"] = _db_url(given.pop("db"))
        if given.pop("memory", False):
            given["store"] = "memory://"
        return load(ControllerSettings, given, config_file("controller", config))
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_USAGE) from None


@app.command(
    help="Run the corral controller (gRPC API + SQLite state).\n\n"
    "Every flag may also come from $CORRAL_CONTROLLER_<FLAG> (e.g. CORRAL_CONTROLLER_LISTEN) or from "
    "the config file (--config; keys are the flag names with underscores); flags win over the "
    "environment, which wins over the file.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
)
def controller(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="TOML or YAML settings file (default: $CORRAL_CONTROLLER_CONFIG, else controller.toml "
            "in the user's config directory when present)",
        ),
    ] = None,
    listen: Annotated[
        str | None, typer.Option("--listen", help="host:port to serve on (port 0: any free port) [127.0.0.1:7070]")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            metavar="URL",
            help="where state lives: sqlite:///ABS/PATH, sqlite:REL/PATH, memory:// or postgresql://USER@HOST:PORT/DB",
        ),
    ] = None,
    db: Annotated[
        str | None, typer.Option("--db", help=f"SQLite state file (default {controller_db()}); = --store sqlite:///DB")
    ] = None,
    memory: Annotated[
        bool, typer.Option("--memory", help="keep state in memory only (nothing survives); = --store memory://")
    ] = False,
    address_file: Annotated[
        Path | None, typer.Option("--address-file", help="write the bound host:port here once serving")
    ] = None,
    http: Annotated[
        str | None,
        typer.Option(
            "--http",
            metavar="HOST:PORT",
            help="also serve HTTP here: /healthz, /readyz, Prometheus /metrics, the dashboard (port 0: any free port)",
        ),
    ] = None,
    http_address_file: Annotated[
        Path | None, typer.Option("--http-address-file", help="write the bound HTTP host:port here")
    ] = None,
    synchronous: Annotated[Synchronous | None, typer.Option("--synchronous", help="SQLite durability [FULL]")] = None,
    heartbeat_interval: Annotated[
        float | None, typer.Option("--heartbeat-interval", help="seconds between agent heartbeats [2]")
    ] = None,
    lease: Annotated[float | None, typer.Option("--lease", help="an agent silent this long is lost [15]")] = None,
    fence_after: Annotated[
        float | None,
        typer.Option(
            "--fence-after",
            help="seconds without the controller after which an agent's attempts stop themselves (fenced) "
            "and are requeued; must be longer than --lease [30]",
        ),
    ] = None,
    adopt_grace: Annotated[
        float | None, typer.Option("--adopt-grace", help="after a start: seconds agents have to reconnect [30]")
    ] = None,
    reconnect_grace: Annotated[
        float | None, typer.Option("--reconnect-grace", help="seconds for unreported attempts [5]")
    ] = None,
    kill_grace: Annotated[
        float | None, typer.Option("--kill-grace", help="SIGTERM to SIGKILL grace for cancels [10]")
    ] = None,
    max_preemptions: Annotated[
        int | None,
        typer.Option("--max-preemptions", help="a preemptible task is preempted at most this often (default) [3]"),
    ] = None,
    prefetch: Annotated[
        int | None, typer.Option("--prefetch", help="attempts queued per agent beyond its slots [1]")
    ] = None,
    cache_max_entries: Annotated[
        int | None, typer.Option("--cache-max-entries", help="task results cached (LRU evicted) [10000]")
    ] = None,
    cache_max_bytes: Annotated[
        int | None, typer.Option("--cache-max-bytes", help="bytes of cached task results [268435456]")
    ] = None,
    assignment_lease: Annotated[
        float | None,
        typer.Option(
            "--assignment-lease",
            help="seconds an agent has to acknowledge an assignment before it is taken back (0: never) [3]",
        ),
    ] = None,
    agent_ttl: Annotated[
        float | None,
        typer.Option(
            "--agent-ttl", help="seconds after which a disconnected or lost agent holding nothing is forgotten [3600]"
        ),
    ] = None,
    max_agents: Annotated[
        int | None, typer.Option("--max-agents", help="agents the controller keeps track of at most [10000]")
    ] = None,
    no_deadline_scheduling: Annotated[
        bool,
        typer.Option(
            "--no-deadline-scheduling",
            help="keep deadlines and report them, but neither judge them at submit nor order the queue by slack",
        ),
    ] = False,
    lookahead: Annotated[
        float | None,
        typer.Option(
            "--lookahead",
            help="at most this many seconds before a running task's expected end (twice the measured dispatch "
            "latency), a longer task may be sent to wait for its slot on the agent (0: free slots only) [0.05]",
        ),
    ] = None,
    reserve_after: Annotated[
        float | None,
        typer.Option(
            "--reserve-after",
            help="seconds a task that fits nowhere waits before it reserves the agent that frees room first "
            "(0: never) [60]",
        ),
    ] = None,
    cordon_after: Annotated[
        int | None,
        typer.Option(
            "--cordon-after",
            help="failed attempts in a row (from 3+ workflows succeeding elsewhere) that cordon an agent "
            "(0: never) [5]",
        ),
    ] = None,
    cordon_cooldown: Annotated[
        float | None, typer.Option("--cordon-cooldown", help="seconds a cordoned agent gets no new work [300]")
    ] = None,
    reservation_expiry_factor: Annotated[
        float | None,
        typer.Option(
            "--reservation-expiry-factor",
            help="an unused reservation expires after this many times its expected wait (at least --reserve-after) [2]",
        ),
    ] = None,
    log_level: Annotated[LogLevel | None, typer.Option("--log-level", help="[info]")] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option(
            "--log-format",
            help="text (key=value) or json (one object per line); default $CORRAL_LOG_FORMAT or text",
        ),
    ] = None,
    auth: Annotated[
        bool, typer.Option("--auth", help="authenticate every call (bearer tokens); always on with TLS")
    ] = False,
    admin_token_file: Annotated[
        Path | None,
        typer.Option(
            "--admin-token-file",
            help="where the first admin token is written on a first start with auth "
            "(default: admin.token next to --db)",
        ),
    ] = None,
    secret_key_file: Annotated[
        Path | None, typer.Option("--secret-key-file", help="Fernet key for task secrets (created 0600 if missing)")
    ] = None,
    audit_retain: Annotated[
        str | None, typer.Option("--audit-retain", help="keep audit records this long (e.g. 90d, 12h) [90d]")
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", help="the controller's certificate (PEM); serve TLS (SIGHUP reloads the TLS files)"),
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="the key of --tls-cert (PEM)")] = None,
    client_ca: Annotated[
        Path | None,
        typer.Option(
            "--client-ca",
            help="CA of client certificates: also serve mutual TLS (certificate required) on --mtls-listen",
        ),
    ] = None,
    mtls_listen: Annotated[
        str | None,
        typer.Option(
            "--mtls-listen",
            metavar="HOST:PORT",
            help="the mutual-TLS port (default: the --listen host, port + 1; port 0: any free port)",
        ),
    ] = None,
    mtls_address_file: Annotated[
        Path | None, typer.Option("--mtls-address-file", help="write the bound mutual-TLS host:port here")
    ] = None,
    health_listen: Annotated[
        str | None,
        typer.Option(
            "--health-listen",
            metavar="HOST:PORT",
            help="also serve grpc.health.v1 alone, in plaintext, here (for probes that cannot speak TLS)",
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="allow plaintext on a non-loopback address (anyone who reaches the port may do anything)",
        ),
    ] = False,
    evict_after: Annotated[
        str | None,
        typer.Option("--evict-after", help="finished workflows idle this long leave memory (0: never) [30s]"),
    ] = None,
    retain: Annotated[
        str | None,
        typer.Option("--retain", help="delete finished workflows this old, e.g. 30d (0: keep forever) [0]"),
    ] = None,
    advertise: Annotated[
        str | None,
        typer.Option(
            "--advertise",
            metavar="HOST:PORT",
            help="PostgreSQL store: the address written into the leader lease (default: --listen)",
        ),
    ] = None,
    lease_ttl: Annotated[
        float | None,
        typer.Option("--lease-ttl", help="PostgreSQL store: seconds a leader's lease lasts unrenewed [5]"),
    ] = None,
    max_heartbeats_per_s: Annotated[
        float | None,
        typer.Option(
            "--max-heartbeats-per-s",
            help="pace the fleet's heartbeats to about this many a second: a big fleet beats less often "
            "than --heartbeat-interval, down to a third of --lease (0: never) [100]",
        ),
    ] = None,
) -> None:
    """Parse only: the settings are handed to :func:`parse_args` (the daemon runs them)."""
    ctx.obj.append(_settings_from(ctx, config))


def parse_args(argv: list[str] | None) -> ControllerSettings:
    """The settings of a command line (None: ``sys.argv[1:]``), layered over env and file.

    Like argparse: bad flags or settings print one message on stderr and raise SystemExit(2);
    ``--help`` prints the help and raises SystemExit(0).
    """
    settings: ControllerSettings = parse_command(app, PROG, argv)
    return settings
