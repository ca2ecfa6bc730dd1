"""``corral controller``: run the controller until SIGTERM/SIGINT; SIGHUP reloads the TLS files.

corral controller --listen 127.0.0.1:7070 --db /var/lib/corral/corral.db
corral controller --listen 0.0.0.0:7070 --tls-cert pki/controller.pem --tls-key pki/controller-key.pem \
    --client-ca pki/ca.pem        # mutual TLS for certificate holders on 0.0.0.0:7071
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import os
import signal
import sys
from pathlib import Path

from corral.agent.logsetup import LOG_FORMATS, default_format
from corral.agent.logsetup import configure as configure_logging
from corral.controller.access_boot import bootstrap_admin_token, prune_audit_forever, use_secret_box
from corral.controller.address_file import write_address
from corral.controller.core.machine import MachineConfig
from corral.controller.durations import parse_duration
from corral.controller.lifecycle import Lifecycle
from corral.controller.metrics import attach as attach_metrics
from corral.controller.rpc.gateway import deliver
from corral.controller.rpc.tls import ServerTls, TlsError, TlsFiles, is_loopback, listen_host
from corral.controller.runtime import Runtime
from corral.controller.secretbox import SecretBox
from corral.controller.server import build_server
from corral.controller.store.base import Store
from corral.controller.store.memory import MemoryStore
from corral.controller.store.sqlite import SqliteStore
from corral.controller.web import HttpServer, WebContext
from corral.controller.web import installers as web_installers

__all__ = [
    "EXIT_USAGE",
    "default_db_path",
    "main",
    "mtls_listen",
    "parse_args",
    "private_dir",
    "serve",
    "server_tls",
    "tls_enabled",
]

EXIT_USAGE = 2  # argparse's code for bad flags; also for unusable TLS files and a refused exposure

log = logging.getLogger("corral.controller")


def default_db_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "corral" / "controller.db"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="corral controller", description="Run the corral controller (gRPC API + SQLite state)."
    )
    parser.add_argument("--listen", default="127.0.0.1:7070", help="host:port to serve on (port 0: any free port)")
    parser.add_argument("--db", type=Path, default=None, help=f"SQLite state file (default {default_db_path()})")
    parser.add_argument("--memory", action="store_true", help="keep state in memory only (nothing survives)")
    parser.add_argument("--address-file", type=Path, help="write the bound host:port here once serving")
    parser.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="also serve HTTP here: /healthz, /readyz, Prometheus /metrics, the dashboard (port 0: any free port)",
    )
    parser.add_argument("--http-address-file", type=Path, help="write the bound HTTP host:port here")
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"], help="SQLite durability")
    parser.add_argument("--heartbeat-interval", type=float, default=2.0, help="seconds between agent heartbeats")
    parser.add_argument("--lease", type=float, default=15.0, help="an agent silent this long is lost")
    parser.add_argument(
        "--fence-after",
        type=float,
        default=30.0,
        help="seconds without the controller after which an agent's attempts stop themselves (fenced) "
        "and are requeued; must be longer than --lease",
    )
    parser.add_argument(
        "--adopt-grace", type=float, default=30.0, help="after a start: seconds agents have to reconnect"
    )
    parser.add_argument("--reconnect-grace", type=float, default=5.0, help="seconds for unreported attempts")
    parser.add_argument("--kill-grace", type=float, default=10.0, help="SIGTERM to SIGKILL grace for cancels")
    parser.add_argument(
        "--max-preemptions", type=int, default=3, help="a preemptible task is preempted at most this often (default)"
    )
    parser.add_argument("--prefetch", type=int, default=1, help="attempts queued per agent beyond its slots")
    parser.add_argument("--cache-max-entries", type=int, default=10_000, help="task results cached (LRU evicted)")
    parser.add_argument("--cache-max-bytes", type=int, default=256 << 20, help="bytes of cached task results")
    parser.add_argument(
        "--assignment-lease",
        type=float,
        default=3.0,
        help="seconds an agent has to acknowledge an assignment before it is taken back (0: never)",
    )
    parser.add_argument(
        "--agent-ttl",
        type=float,
        default=3600.0,
        help="seconds after which a disconnected or lost agent holding nothing is forgotten",
    )
    parser.add_argument("--max-agents", type=int, default=10_000, help="agents the controller keeps track of at most")
    parser.add_argument(
        "--no-deadline-scheduling",
        dest="deadline_scheduling",
        action="store_false",
        help="keep deadlines and report them, but neither judge them at submit nor order the queue by slack",
    )
    parser.add_argument(
        "--reserve-after",
        type=float,
        default=60.0,
        help="seconds a task that fits nowhere waits before it reserves the agent that frees room first (0: never)",
    )
    parser.add_argument(
        "--cordon-after",
        type=int,
        default=5,
        help="failed attempts in a row (from 3+ workflows succeeding elsewhere) that cordon an agent (0: never)",
    )
    parser.add_argument(
        "--cordon-cooldown", type=float, default=300.0, help="seconds a cordoned agent gets no new work"
    )
    parser.add_argument(
        "--reservation-expiry-factor",
        type=float,
        default=2.0,
        help="an unused reservation expires after this many times its expected wait (at least --reserve-after)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=default_format(),
        help="text (key=value) or json (one object per line); default $CORRAL_LOG_FORMAT or text",
    )
    parser.add_argument(
        "--auth", action="store_true", help="authenticate every call (bearer tokens); always on with TLS"
    )
    parser.add_argument(
        "--admin-token-file",
        type=Path,
        default=None,
        help="where the first admin token is written on a first start with auth (default: admin.token next to --db)",
    )
    parser.add_argument(
        "--secret-key-file", type=Path, default=None, help="Fernet key for task secrets (created 0600 if missing)"
    )
    parser.add_argument("--audit-retain", default="90d", help="keep audit records this long (e.g. 90d, 12h)")
    parser.add_argument(
        "--evict-after", default="30s", help="finished workflows idle this long leave memory (0: never)"
    )
    parser.add_argument("--retain", default="0", help="delete finished workflows this old, e.g. 30d (0: keep forever)")
    tls = parser.add_argument_group("TLS (SIGHUP reloads these files)")
    tls.add_argument("--tls-cert", type=Path, help="the controller's certificate (PEM); serve TLS")
    tls.add_argument("--tls-key", type=Path, help="the key of --tls-cert (PEM)")
    tls.add_argument(
        "--client-ca",
        type=Path,
        help="CA of client certificates: also serve mutual TLS (certificate required) on --mtls-listen",
    )
    tls.add_argument(
        "--mtls-listen",
        default=None,
        metavar="HOST:PORT",
        help="the mutual-TLS port (default: the --listen host, port + 1; port 0: any free port)",
    )
    tls.add_argument("--mtls-address-file", type=Path, help="write the bound mutual-TLS host:port here")
    tls.add_argument(
        "--health-listen",
        default=None,
        metavar="HOST:PORT",
        help="also serve grpc.health.v1 alone, in plaintext, here (for probes that cannot speak TLS)",
    )
    tls.add_argument(
        "--insecure",
        action="store_true",
        help="allow plaintext on a non-loopback address (anyone who reaches the port may do anything)",
    )
    args = parser.parse_args(argv)
    try:
        args.audit_retain_s = parse_duration(args.audit_retain)
    except ValueError as exc:
        parser.error(f"--audit-retain: {exc}")
    for flag in ("evict_after", "retain"):  # issue 12
        try:
            setattr(args, f"{flag}_s", parse_duration(getattr(args, flag)))
        except ValueError as exc:
            parser.error(f"--{flag.replace('_', '-')}: {exc}")
    for name in (
        "heartbeat_interval",
        "lease",
        "fence_after",
        "adopt_grace",
        "reconnect_grace",
        "kill_grace",
        "assignment_lease",
        "reserve_after",
        "reservation_expiry_factor",
        "cordon_after",
        "cordon_cooldown",
    ):
        value = getattr(args, name)
        if not math.isfinite(value) or value < 0:
            parser.error(f"--{name.replace('_', '-')} must be a finite number >= 0")
    if not math.isfinite(args.agent_ttl) or args.agent_ttl <= 0:
        parser.error("--agent-ttl must be a finite number of seconds > 0")
    if not 0 <= args.max_preemptions <= 1000:
        parser.error("--max-preemptions must be between 0 and 1000")
    if args.max_agents < 1:
        parser.error("--max-agents must be at least 1")
    if args.cache_max_entries < 0 or args.cache_max_bytes < 0:
        parser.error("--cache-max-entries and --cache-max-bytes must be >= 0 (0: no caching)")
    if args.heartbeat_interval <= 0 or args.lease <= args.heartbeat_interval:
        parser.error("--lease must be longer than --heartbeat-interval, which must be > 0")
    if args.fence_after <= args.lease:
        # Lost (nothing new placed) must come before fenced (attempts stop themselves): a partition
        # shorter than the lease must never kill anything.
        parser.error(f"--fence-after ({args.fence_after:g} s) must be longer than --lease ({args.lease:g} s)")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_cert is None and (args.client_ca is not None or args.mtls_listen or args.mtls_address_file):
        parser.error("--client-ca, --mtls-listen and --mtls-address-file need --tls-cert and --tls-key")
    if args.client_ca is None and (args.mtls_listen or args.mtls_address_file):
        parser.error("--mtls-listen and --mtls-address-file need --client-ca")
    if args.http is not None and not _is_host_port(args.http):
        parser.error(f"--http wants host:port (port 0: any free port), got {args.http!r}")
    if args.http_address_file is not None and args.http is None:
        parser.error("--http-address-file needs --http")
    return args


def _is_host_port(value: str) -> bool:
    host, colon, port = value.rpartition(":")
    return bool(colon) and port.isdigit() and int(port) < 65536 and (not host.startswith("[") or host.endswith("]"))


def tls_enabled(args: argparse.Namespace) -> bool:
    """Whether the flags ask for TLS (then auth is on: nobody is trusted for being on the network)."""
    return args.tls_cert is not None


def server_tls(args: argparse.Namespace) -> ServerTls | None:
    """The TLS credentials the flags ask for (None: plaintext); TlsError when the files are unusable."""
    if not tls_enabled(args):
        return None
    return ServerTls(TlsFiles(args.tls_cert, args.tls_key, args.client_ca))


def mtls_listen(args: argparse.Namespace) -> str | None:
    """Where the mutual-TLS port binds: ``--mtls-listen``, else the ``--listen`` host at port + 1."""
    if args.client_ca is None:
        return None
    if args.mtls_listen:
        return str(args.mtls_listen)
    host, _, port = str(args.listen).rpartition(":")
    try:
        number = int(port)
    except ValueError:
        return None  # build_server reports the bad --listen
    return f"{host}:{number + 1 if number else 0}"


def _exposure_error(args: argparse.Namespace) -> str | None:
    """Why the flags must not be served as given, or None."""
    if args.tls_cert is not None or is_loopback(args.listen):
        return None
    if args.insecure:
        return None
    return (
        f"refusing to listen on {args.listen} without TLS: anyone who reaches it could run anything. "
        "Give --tls-cert and --tls-key (make them with `corral certs init`), listen on 127.0.0.1, "
        "or pass --insecure to serve plaintext anyway"
    )


def _config(args: argparse.Namespace) -> MachineConfig:
    config = MachineConfig(
        heartbeat_interval_s=args.heartbeat_interval,
        lease_s=args.lease,
        adopt_grace_s=args.adopt_grace,
        reconnect_grace_s=args.reconnect_grace,
        kill_grace_s=args.kill_grace,
        prefetch=max(0, args.prefetch),
        assignment_lease_s=args.assignment_lease,
        agent_ttl_s=args.agent_ttl,
        max_agents=args.max_agents,
        fence_after_s=args.fence_after,
        deadline_scheduling=args.deadline_scheduling,
        max_preemptions=args.max_preemptions,
        reserve_after_s=args.reserve_after,
        reservation_expiry_factor=args.reservation_expiry_factor,
        cordon_after=args.cordon_after,
        cordon_cooldown_s=args.cordon_cooldown,
        cache_max_entries=args.cache_max_entries,
        cache_max_bytes=args.cache_max_bytes,
        evict_after_s=args.evict_after_s,
    )
    return config


def _store(args: argparse.Namespace) -> tuple[Store, str]:
    if args.memory:
        return MemoryStore(), "memory"
    path: Path = args.db or default_db_path()
    private_dir(path.parent)
    return SqliteStore(path, synchronous=args.synchronous), str(path)


def private_dir(directory: Path) -> None:
    """Create the state directory mode 0700 (only the controller's user may list or read it).

    A directory that already exists is left as it is: it may be shared (``--db /tmp/c.db``), and
    the database file itself is 0600 either way.
    """
    if directory.is_dir():
        return
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        return  # created meanwhile by someone else: theirs to set
    directory.chmod(0o700)  # mkdir's mode is filtered by the umask; 0700 must hold regardless


def _bound(listen: str, port: int) -> str:
    host = listen_host(listen)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reload(tls: ServerTls | None) -> None:
    if tls is None:
        log.info("SIGHUP: no TLS files to reload (the controller serves plaintext)")
        return
    try:
        summary = tls.reload()
    except TlsError as exc:
        log.error("SIGHUP: TLS files not reloaded, the previous certificate stays in use: %s", exc)
        return
    log.info("SIGHUP: TLS files reloaded; new connections use %s", summary)


async def serve(args: argparse.Namespace, tls: ServerTls | None = None) -> int:
    """Run the controller until SIGTERM/SIGINT (or a failed state loop); returns the exit code.

    ``tls`` is what :func:`main` already loaded; when left out it is loaded from the flags here.
    """
    if tls is None:
        tls = server_tls(args)
    store, where = _store(args)
    runtime = Runtime(store, _config(args), encode_actions=deliver)
    box = SecretBox.from_key_file(args.secret_key_file) if args.secret_key_file else None
    await runtime.start()
    attach_metrics(runtime)
    use_secret_box(runtime, box)
    # Auth is on whenever the controller serves TLS, and with --auth without it.
    auth = bool(args.auth) or tls is not None
    if auth:
        token_file = args.admin_token_file or _default_token_file(args, where)
        await bootstrap_admin_token(runtime, token_file)
    pruner = asyncio.ensure_future(prune_audit_forever(runtime, args.audit_retain_s))
    runtime.lifecycle = Lifecycle(runtime, args.retain_s)
    retention = asyncio.ensure_future(runtime.lifecycle.run())
    server = await build_server(
        runtime,
        args.listen,
        auth=auth,
        secret_box=box,
        tls=tls,
        mtls_listen=mtls_listen(args),
        health_listen=args.health_listen,
    )
    address = _bound(args.listen, server.port)
    if tls is None and not is_loopback(args.listen):
        # Logged on every start, so nobody forgets that this controller trusts its whole network.
        log.warning(
            "--insecure: serving PLAINTEXT on %s, a non-loopback address; anyone who reaches it may do anything",
            args.listen,
        )
    if server.mtls_port is not None:
        mtls_address = _bound(str(mtls_listen(args)), server.mtls_port)
        if args.mtls_address_file:
            write_address(args.mtls_address_file, mtls_address)
        log.info("mutual TLS (client certificate required) on %s", mtls_address)
    if server.health_port is not None:
        log.info("grpc health (plaintext, health only) on %s", _bound(str(args.health_listen), server.health_port))
    if args.address_file:
        write_address(args.address_file, address)
    http = None
    if args.http:
        http = HttpServer(WebContext(runtime, auth=auth, tls=tls is not None), installers=web_installers())
        http_address = await http.start(args.http)
        if args.http_address_file:
            write_address(args.http_address_file, http_address)
    security = f"TLS with {tls.summary}" if tls is not None else "plaintext"
    log.info("corral controller listening on %s, %s (state: %s)", address, security, where)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, tls)
    failed = asyncio.ensure_future(_wait_failure(runtime))
    await asyncio.wait([asyncio.ensure_future(stop.wait()), failed], return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down")
    pruner.cancel()
    retention.cancel()
    if http is not None:
        await http.stop()
    await server.stop(1.0)
    await runtime.stop()
    return 1 if runtime.failure is not None else 0


def _default_token_file(args: argparse.Namespace, where: str) -> Path:
    """``admin.token`` next to the database (in the state directory for --memory)."""
    if args.memory:
        return default_db_path().parent / "admin.token"
    return Path(where).parent / "admin.token"


async def _wait_failure(runtime: Runtime) -> None:
    while runtime.failure is None:
        await asyncio.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The controller holds many long-lived records and allocates in bursts (a 20k-task submission);
    # the default thresholds would rescan the whole heap many times per burst.
    gc.set_threshold(100_000, 50, 1000)
    configure_logging(args.log_level, args.log_format)
    problem = _exposure_error(args)
    if problem is not None:
        print(f"corral controller: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        tls = server_tls(args)
    except TlsError as exc:
        print(f"corral controller: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(serve(args, tls))
    except OSError as exc:
        print(f"corral controller: {exc}", file=sys.stderr)
        return 1
