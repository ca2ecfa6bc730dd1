"""Command line of the agent (typer): ``python -m corral.agent`` and ``corral agent ...``.

Every option defaults to "not given"; what the user did give becomes the top layer of
:class:`~corral.agent.settings.AgentSettings`, above the environment, the config file and the
defaults (see that module for the variable names and the file format).
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from corral import eventloop
from corral.agent.auth import AuthError, certificate_name
from corral.agent.config import KNOWN_AGENT_TYPES, AgentConfig, check_declared_types, declared_from_tables
from corral.agent.daemon import Agent
from corral.agent.importpath import import_path
from corral.agent.logsetup import configure
from corral.agent.metrics import split_listen
from corral.agent.runas import RunAsError, resolve_run_as
from corral.agent.settings import AgentSettings, check_label, check_name
from corral.layers import ConfigError, LogFormat, LogLevel, config_file, given_flags, load, parse_command, read_file

__all__ = ["build_parser", "config_from_args", "configure_logging", "main", "parse_args"]

PROG = "corral agent"
EXIT_USAGE = 2

app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)


def _labels(values: list[str] | None) -> list[str] | None:
    for text in values or []:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {text!r}")
        try:
            check_label(key.strip(), value.strip())
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return values


def _agent_types(values: list[str] | None) -> list[str] | None:
    for text in values or []:
        _split_agent_type(text)
    return values


def _split_agent_type(text: str) -> tuple[str, tuple[str, ...]]:
    name, sep, command = text.partition("=")
    if not sep or not name.strip():
        raise typer.BadParameter(f"expected NAME=COMMAND, got {text!r}")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise typer.BadParameter(f"the command of {name.strip()!r}: {exc}") from None
    if not argv:
        raise typer.BadParameter(f"agent type {name.strip()!r} needs a command")
    return name.strip(), tuple(argv)


def _listen(value: str | None) -> str | None:
    if value is not None:
        try:
            split_listen(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _settings_from(ctx: typer.Context, config: Path | None) -> AgentSettings:
    given = given_flags(ctx)
    if "label" in given:
        pairs = (text.partition("=") for text in given.pop("label"))
        given["labels"] = {key.strip(): value.strip() for key, _, value in pairs}
    path = config_file("agent", config)
    data: dict[str, Any] = {}
    try:
        if "agent_type" in given:
            flags = dict(_split_agent_type(text) for text in given.pop("agent_type"))
            given["agent_types"] = check_declared_types(flags, "--agent-type")
        if path is not None:
            data = read_file(path)
            if "agent_types" in data:
                data["agent_types"] = declared_from_tables(data["agent_types"], f"--config {path}")
        return load(AgentSettings, given, path, data)
    except (ConfigError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_USAGE) from None


@app.command(
    help="Run the corral agent: report this machine to a controller and run its tasks.\n\n"
    "Every flag may also come from $CORRAL_AGENT_<FLAG> (e.g. CORRAL_AGENT_CONTROLLER) or from the "
    "config file (--config; keys are the flag names with underscores); flags win over the "
    "environment, which wins over the file.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
)
def agent(
    ctx: typer.Context,
    controller: Annotated[
        str | None,
        typer.Option(
            "--controller",
            metavar="HOST:PORT[,HOST:PORT...]",
            help="controller address, or a comma-separated list of controllers (the agent follows the leader) "
            "[127.0.0.1:7070]",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="agent name and id (default: the hostname)")] = None,
    slots: Annotated[
        int | None, typer.Option("--slots", min=1, help="attempts run at once (default: number of CPU cores)")
    ] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", min=0, help="declare N GPUs (default: probe NVML)")] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", metavar="KEY=VALUE", callback=_labels, help="a label (repeatable)"),
    ] = None,
    types: Annotated[
        list[str] | None,
        typer.Option(
            "--types",
            metavar="TYPE[,TYPE]",
            help="agent types offered (default: shell,python); declared types are always offered",
        ),
    ] = None,
    agent_type: Annotated[
        list[str] | None,
        typer.Option(
            "--agent-type",
            metavar="NAME=COMMAND",
            callback=_agent_types,
            help="declare an agent type: its tasks run COMMAND (split like a shell would) plus the payload's "
            "args, like a shell task (repeatable; overrides the same name in --config)",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="TOML or YAML settings file: any flag by name, and agent types as "
            '[agent_types.NAME] command = ["argv", ...] (default: $CORRAL_AGENT_CONFIG, else agent.toml in '
            "the user's config directory when present)",
        ),
    ] = None,
    work_dir: Annotated[
        Path | None,
        typer.Option(
            "--work-dir",
            help="attempt and worker folders, disk inventory (default: $XDG_STATE_HOME/corral/agents/NAME)",
        ),
    ] = None,
    python_workers: Annotated[
        int | None, typer.Option("--python-workers", min=0, help="warm python workers (default: slots)")
    ] = None,
    drain_grace: Annotated[
        float | None, typer.Option("--drain-grace", min=0, metavar="SECONDS", help="default 30")
    ] = None,
    kill_grace: Annotated[
        float | None,
        typer.Option("--kill-grace", min=0, metavar="SECONDS", help="SIGTERM to SIGKILL grace, default 10"),
    ] = None,
    log_level: Annotated[LogLevel | None, typer.Option("--log-level", help="[info]")] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option(
            "--log-format",
            help="text (key=value) or json (one object per line); default $CORRAL_LOG_FORMAT or text",
        ),
    ] = None,
    http: Annotated[
        str | None,
        typer.Option(
            "--http",
            metavar="HOST:PORT",
            callback=_listen,
            help="serve Prometheus /metrics and /healthz here (port 0: any)",
        ),
    ] = None,
    http_address_file: Annotated[
        Path | None, typer.Option("--http-address-file", help="write the bound HTTP host:port here")
    ] = None,
    no_shell: Annotated[
        bool, typer.Option("--no-shell", help="refuse shell tasks (and do not offer the type)")
    ] = False,
    python_allow: Annotated[
        list[str] | None,
        typer.Option(
            "--python-allow",
            metavar="PREFIX[,PREFIX]",
            help="python modules tasks may call (pkg allows pkg and pkg.sub); repeatable",
        ),
    ] = None,
    python_path: Annotated[
        list[Path] | None,
        typer.Option(
            "--python-path",
            metavar="DIR",
            help="add DIR to the python workers' import path (repeatable; the only way to add one)",
        ),
    ] = None,
    env_allow: Annotated[
        list[str] | None,
        typer.Option(
            "--env-allow",
            metavar="NAME[,NAME]",
            help="let payload env set these otherwise refused variables (LD_*, PYTHON*, PATH...)",
        ),
    ] = None,
    pass_env: Annotated[
        list[str] | None,
        typer.Option(
            "--pass-env",
            metavar="NAME[,NAME]",
            help="pass these variables of the agent's own environment to every task",
        ),
    ] = None,
    run_as: Annotated[
        str | None, typer.Option("--run-as", metavar="USER", help="run tasks as USER (the agent must be root)")
    ] = None,
    ca: Annotated[
        Path | None, typer.Option("--ca", help="CA of the controller's certificate: connect with TLS (env CORRAL_CA)")
    ] = None,
    cert: Annotated[
        Path | None,
        typer.Option(
            "--cert", help="this agent's certificate (mutual TLS; its common name is the agent's name; env CORRAL_CERT)"
        ),
    ] = None,
    key: Annotated[Path | None, typer.Option("--key", help="the key of --cert (env CORRAL_KEY)")] = None,
    join_token: Annotated[
        str | None,
        typer.Option(
            "--join-token",
            metavar="TOKEN",
            help="without a certificate: join with this token once, keep the credential in the work dir "
            "(env CORRAL_JOIN_TOKEN, which keeps it out of the process list)",
        ),
    ] = None,
) -> None:
    """Parse only: the settings are handed to :func:`parse_args` (:func:`main` runs them)."""
    ctx.obj.append(_settings_from(ctx, config))


def parse_args(argv: list[str] | None = None) -> AgentSettings:
    """The settings of a command line (None: ``sys.argv[1:]``), layered over env and file.

    Like argparse: bad flags print one message on stderr and raise SystemExit(2).
    """
    settings: AgentSettings = parse_command(app, PROG, argv)
    return settings


class _Parser:
    """What :func:`build_parser` returns: ``.parse_args(argv)`` as with the argparse parser of old."""

    def parse_args(self, argv: list[str] | None = None) -> AgentSettings:
        return parse_args(argv)


def build_parser() -> _Parser:
    """The command line's parser (kept for callers of the argparse era): ``build_parser().parse_args(argv)``."""
    return _Parser()


def _name(args: AgentSettings) -> str:
    """--name, else the common name of --cert, else the hostname."""
    if args.name:
        return str(args.name)
    if args.cert is not None:
        try:
            return certificate_name(args.cert.expanduser().read_bytes())
        except OSError as exc:
            raise AuthError(f"--cert {args.cert}: {exc.strerror or exc}") from None
    return socket.gethostname()


def config_from_args(args: AgentSettings) -> AgentConfig:
    """Turn the settings into the agent's frozen config (ValueError for a bad name)."""
    return AgentConfig(
        controller=args.controller,
        name=check_name(_name(args), "--name" if args.name else "the certificate's name or the hostname (use --name)"),
        slots=args.slots or os.cpu_count() or 1,
        gpus=args.gpus,
        labels=dict(args.labels),
        agent_types=args.types,
        declared_types=dict(args.agent_types),
        work_dir=args.work_dir,
        python_workers=args.python_workers,
        drain_grace_s=args.drain_grace,
        kill_grace_s=args.kill_grace,
        log_level=args.log_level,
        no_shell=args.no_shell,
        python_allow=args.python_allow,
        python_paths=import_path(args.python_path, os.environ, Path.cwd())[0],  # + $PYTHONPATH (issue 11)
        env_allow=args.env_allow,
        pass_env=args.pass_env,
        run_as=args.run_as,
        ca=args.ca,
        cert=args.cert,
        key=args.key,
        join_token=args.join_token,
        http=args.http,
        http_address_file=args.http_address_file,
    )


def configure_logging(level: str, fmt: str = "text") -> None:
    """structlog to stderr, one line per event, as text or JSON (:mod:`corral.agent.logsetup`)."""
    configure(level, fmt)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the agent until it is drained or killed; returns the exit code."""
    args = parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        config = config_from_args(args)
        unknown = [t for t in config.agent_types if t not in KNOWN_AGENT_TYPES and t not in config.declared_types]
        if unknown:
            raise ValueError(
                f"unknown agent types: {', '.join(unknown)} (built in: shell, python; "
                "declare others with --agent-type or --config)"
            )
        agent = Agent(config)
    except ValueError as exc:  # AuthError included
        print(f"corral agent: {exc}", file=sys.stderr)
        return 2
    if config.run_as is not None:
        try:
            resolve_run_as(config.run_as, config.resolved_work_dir)
        except RunAsError as exc:
            print(f"corral agent: {exc}", file=sys.stderr)
            return 2
    try:
        return eventloop.run(agent.run(install_signals=True))
    except RunAsError as exc:
        print(f"corral agent: {exc}", file=sys.stderr)
        return 2
