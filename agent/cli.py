"""Command line of the agent: ``python -m corral.agent`` (and ``corral agent ...``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shlex
import socket
import sys
from pathlib import Path

from corral.agent.auth import AuthError, certificate_name
from corral.agent.config import (
    DEFAULT_CONTROLLER,
    KNOWN_AGENT_TYPES,
    AgentConfig,
    check_declared_types,
    read_config_file,
)
from corral.agent.daemon import Agent
from corral.agent.importpath import import_path
from corral.agent.logsetup import LOG_FORMATS, configure, default_format
from corral.agent.metrics import split_listen
from corral.agent.policy import split_list
from corral.agent.runas import RunAsError, resolve_run_as

__all__ = ["build_parser", "config_from_args", "configure_logging", "main"]

_LEVELS = ("debug", "info", "warning", "error")
# What the controller accepts for agent names and label keys (controller/spec.py NAME_PATTERN);
# checked here too so a bad one fails at start with a clear message, not at every Hello.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_MAX_NAME = 128
_MAX_LABEL_VALUE = 256


def _check_name(text: str, what: str) -> str:
    if len(text) > _MAX_NAME or not _NAME.match(text):
        raise ValueError(
            f"{what} {text!r} is not a valid name: letters, digits, '_', '.' and '-', "
            f"starting with a letter or digit, at most {_MAX_NAME} characters"
        )
    return text


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, value = key.strip(), value.strip()
    try:
        _check_name(key, "label key")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if len(value) > _MAX_LABEL_VALUE or not value.isprintable():
        raise argparse.ArgumentTypeError(
            f"label value of {key!r} must be printable and at most {_MAX_LABEL_VALUE} characters"
        )
    return key, value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _listen(text: str) -> str:
    try:
        split_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _types(text: str) -> tuple[str, ...]:
    types = tuple(t.strip() for t in text.split(",") if t.strip())
    if not types:
        raise argparse.ArgumentTypeError("at least one agent type")
    return types


def _agent_type(text: str) -> tuple[str, tuple[str, ...]]:
    name, sep, command = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=COMMAND, got {text!r}")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"the command of {name.strip()!r}: {exc}") from None
    if not argv:
        raise argparse.ArgumentTypeError(f"agent type {name.strip()!r} needs a command")
    return name.strip(), tuple(argv)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (shared with ``corral agent``)."""
    parser = argparse.ArgumentParser(
        prog="corral agent",
        description="Run the corral agent: report this machine to a controller and run its tasks.",
    )
    parser.add_argument(
        "--controller",
        default=DEFAULT_CONTROLLER,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="controller address, or a comma-separated list of controllers (the agent follows the leader)",
    )
    parser.add_argument("--name", default=None, help="agent name and id (default: the hostname)")
    parser.add_argument(
        "--slots", type=_positive, default=None, help="attempts run at once (default: number of CPU cores)"
    )
    parser.add_argument("--gpus", type=_non_negative, default=None, help="declare N GPUs (default: probe NVML)")
    parser.add_argument(
        "--label", type=_label, action="append", default=[], metavar="KEY=VALUE", help="a label (repeatable)"
    )
    parser.add_argument(
        "--types",
        type=_types,
        default=KNOWN_AGENT_TYPES,
        metavar="TYPE[,TYPE]",
        help="agent types offered (default: shell,python); declared types are always offered",
    )
    parser.add_argument(
        "--agent-type",
        type=_agent_type,
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="declare an agent type: its tasks run COMMAND (split like a shell would) plus the payload's "
        "args, like a shell task (repeatable; overrides the same name in --config)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help='TOML file declaring agent types: [agent_types.NAME] command = ["argv", ...]',
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="attempt and worker folders, disk inventory (default: $XDG_STATE_HOME/corral/agents/NAME)",
    )
    parser.add_argument(
        "--python-workers", type=_non_negative, default=None, help="warm python workers (default: slots)"
    )
    parser.add_argument("--drain-grace", type=_seconds, default=30.0, metavar="SECONDS", help="default 30")
    parser.add_argument(
        "--kill-grace", type=_seconds, default=10.0, metavar="SECONDS", help="SIGTERM to SIGKILL grace, default 10"
    )
    parser.add_argument("--log-level", choices=_LEVELS, default="info")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=default_format(),
        help="text (key=value) or json (one object per line); default $CORRAL_LOG_FORMAT or text",
    )
    parser.add_argument(
        "--http",
        type=_listen,
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus /metrics and /healthz here (port 0: any)",
    )
    parser.add_argument("--http-address-file", type=Path, default=None, help="write the bound HTTP host:port here")
    policy = parser.add_argument_group("execution policy")
    policy.add_argument("--no-shell", action="store_true", help="refuse shell tasks (and do not offer the type)")
    policy.add_argument(
        "--python-allow",
        action="append",
        default=[],
        metavar="PREFIX[,PREFIX]",
        help="python modules tasks may call (pkg allows pkg and pkg.sub); repeatable",
    )
    policy.add_argument(
        "--python-path",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="add DIR to the python workers' import path (repeatable; the only way to add one)",
    )
    policy.add_argument(
        "--env-allow",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help="let payload env set these otherwise refused variables (LD_*, PYTHON*, PATH...)",
    )
    policy.add_argument(
        "--pass-env",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help="pass these variables of the agent's own environment to every task",
    )
    policy.add_argument("--run-as", default=None, metavar="USER", help="run tasks as USER (the agent must be root)")
    tls = parser.add_argument_group("TLS and identity")
    tls.add_argument(
        "--ca", type=Path, default=_env_path("CORRAL_CA"), help="CA of the controller's certificate: connect with TLS"
    )
    tls.add_argument(
        "--cert",
        type=Path,
        default=_env_path("CORRAL_CERT"),
        help="this agent's certificate (mutual TLS; its common name is the agent's name)",
    )
    tls.add_argument("--key", type=Path, default=_env_path("CORRAL_KEY"), help="the key of --cert")
    tls.add_argument(
        "--join-token",
        default=os.environ.get("CORRAL_JOIN_TOKEN") or None,
        metavar="TOKEN",
        help="without a certificate: join with this token once, keep the credential in the work dir "
        "(env CORRAL_JOIN_TOKEN, which keeps it out of the process list)",
    )
    return parser


def _env_path(variable: str) -> Path | None:
    value = os.environ.get(variable)
    return Path(value) if value else None


def _name(args: argparse.Namespace) -> str:
    """--name, else the common name of --cert, else the hostname."""
    if args.name:
        return str(args.name)
    if args.cert is not None:
        try:
            return certificate_name(args.cert.expanduser().read_bytes())
        except OSError as exc:
            raise AuthError(f"--cert {args.cert}: {exc.strerror or exc}") from None
    return socket.gethostname()


def _declared(args: argparse.Namespace) -> dict[str, tuple[str, ...]]:
    """Agent types of --config, then of --agent-type (a flag wins over the file)."""
    declared = read_config_file(args.config) if args.config is not None else {}
    declared.update(check_declared_types(dict(args.agent_type), "--agent-type"))
    return declared


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """Turn parsed arguments into the agent's settings (ValueError for a bad --config or --agent-type)."""
    return AgentConfig(
        controller=args.controller,
        name=_check_name(_name(args), "--name" if args.name else "the certificate's name or the hostname (use --name)"),
        slots=args.slots or os.cpu_count() or 1,
        gpus=args.gpus,
        labels=dict(args.label),
        agent_types=args.types,
        declared_types=_declared(args),
        work_dir=args.work_dir,
        python_workers=args.python_workers,
        drain_grace_s=args.drain_grace,
        kill_grace_s=args.kill_grace,
        log_level=args.log_level,
        no_shell=args.no_shell,
        python_allow=split_list(args.python_allow),
        python_paths=import_path(args.python_path, os.environ, Path.cwd())[0],  # + $PYTHONPATH (issue 11)
        env_allow=split_list(args.env_allow),
        pass_env=split_list(args.pass_env),
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
    args = build_parser().parse_args(argv)
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
        return asyncio.run(agent.run(install_signals=True))
    except RunAsError as exc:
        print(f"corral agent: {exc}", file=sys.stderr)
        return 2
