"""``corral controller``: run the controller until SIGTERM/SIGINT; SIGHUP reloads the TLS files.

corral controller --listen 127.0.0.1:7070 --db /var/lib/corral/corral.db
corral controller --listen 0.0.0.0:7070 --tls-cert pki/controller.pem --tls-key pki/controller-key.pem \
    --client-ca pki/ca.pem        # mutual TLS for certificate holders on 0.0.0.0:7071
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from pathlib import Path

from corral import eventloop
from corral.agent.logsetup import configure as configure_logging
from corral.controller import heaptrim
from corral.controller.access_boot import bootstrap_admin_token, prune_audit_forever, use_secret_box
from corral.controller.address_file import write_address
from corral.controller.core.machine import MachineConfig
from corral.controller.flags import EXIT_USAGE, parse_args
from corral.controller.lifecycle import Lifecycle
from corral.controller.metrics import attach as attach_metrics
from corral.controller.rpc.gateway import deliver
from corral.controller.rpc.tls import ServerTls, TlsError, TlsFiles, is_loopback, listen_host
from corral.controller.runtime import Runtime
from corral.controller.secretbox import SecretBox
from corral.controller.server import build_server
from corral.controller.settings import ControllerSettings
from corral.controller.store.backup import StoreBusy, hold_shared
from corral.controller.store.base import Store
from corral.controller.store.factory import open_store
from corral.dirs import controller_db, state_dir

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

log = logging.getLogger("corral.controller")


def default_db_path() -> Path:
    """The controller's default SQLite file (in the user's state directory: :mod:`corral.dirs`)."""
    return controller_db()


def tls_enabled(args: ControllerSettings) -> bool:
    """Whether the flags ask for TLS (then auth is on: nobody is trusted for being on the network)."""
    return args.tls_cert is not None


def server_tls(args: ControllerSettings) -> ServerTls | None:
    """The TLS credentials the flags ask for (None: plaintext); TlsError when the files are unusable."""
    if args.tls_cert is None or args.tls_key is None:  # the settings check that both or neither are given
        return None
    return ServerTls(TlsFiles(args.tls_cert, args.tls_key, args.client_ca))


def mtls_listen(args: ControllerSettings) -> str | None:
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


def _exposure_error(args: ControllerSettings) -> str | None:
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


def _config(args: ControllerSettings) -> MachineConfig:
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
        lookahead_s=args.lookahead,
        reservation_expiry_factor=args.reservation_expiry_factor,
        cordon_after=args.cordon_after,
        cordon_cooldown_s=args.cordon_cooldown,
        evict_after_s=args.evict_after_s,
        cache_max_entries=args.cache_max_entries,
        cache_max_bytes=args.cache_max_bytes,
        max_heartbeats_per_s=args.max_heartbeats_per_s,
    )
    return config


def _store(args: ControllerSettings) -> tuple[Store, str]:
    parsed = args.parsed_store
    if parsed.path is not None:
        private_dir(parsed.path.parent)
        # Held for the process's life: `corral restore` refuses to replace a file in use.
        _held.append(hold_shared(parsed.path))
    return open_store(args.store_url, synchronous=args.synchronous), parsed.display()


_held: list[object] = []  # the store's lock, kept open until the process exits


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


async def serve(args: ControllerSettings, tls: ServerTls | None = None) -> int:
    """Run the controller until SIGTERM/SIGINT (or a failed state loop); returns the exit code.

    ``tls`` is what :func:`main` already loaded; when left out it is loaded from the flags here.
    """
    if tls is None:
        tls = server_tls(args)
    if args.parsed_store.kind == "postgresql":  # one of several controllers, leading by a fenced lease
        from corral.controller.ha.node import serve_ha

        return await serve_ha(args, tls, _config(args))
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
        # Imported here: aiohttp and the web modules cost ~14 MiB of RSS that a controller without
        # --http never uses (DECISIONS.md, memory per task).
        from corral.controller.web import HttpServer, WebContext
        from corral.controller.web import installers as web_installers

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


def _default_token_file(args: ControllerSettings, where: str) -> Path:
    """``admin.token`` next to the SQLite file (in the state directory for the other stores)."""
    path = args.parsed_store.path
    return (path.parent if path is not None else state_dir()) / "admin.token"


async def _wait_failure(runtime: Runtime) -> None:
    while runtime.failure is None:
        await asyncio.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The controller holds many long-lived records and allocates in bursts (a 20k-task submission);
    # the default thresholds would rescan the whole heap many times per burst.
    gc.set_threshold(100_000, 50, 1000)
    # Before the first big allocation: memory freed after a big workflow must be able to leave the
    # process (heaptrim.py; docs/DECISIONS.md "Memory after idle").
    heaptrim.fix_thresholds()
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
        return eventloop.run(serve(args, tls))
    except StoreBusy as exc:
        print(f"corral controller: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"corral controller: {exc}", file=sys.stderr)
        return 1
