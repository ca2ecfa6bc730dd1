"""One controller of an active/standby group: standby until it wins the lease, leader for one term.

The process alternates between two shapes on the same ports:

- **standby**: no state loaded; :mod:`~corral.controller.ha.standby` answers every call UNAVAILABLE
  naming the leader, health NOT_SERVING. The lease keeper campaigns in the background.
- **leader (one term)**: the lease is ours at epoch N. The term opens its store with
  ``fence_epoch = N`` (every write transaction checks the epoch in the database), loads the
  snapshot, and builds the runtime and the full gRPC server. Restoring a snapshot already gives
  agents the restart grace: nobody is declared lost for ``--adopt-grace``, and attempts no agent
  reports are requeued only after fence-after + kill grace + margin (their supervisors have
  fenced themselves by then), so a new leader never runs a second copy of a live attempt.

A term ends when the lease is about to end locally (a renewal failed past the margin), when the
store refuses a commit as ``Fenced`` or ``CommitUnknown``, or on SIGTERM. Then, in this order:
health says NOT_SERVING, every agent stream is closed (agents go looking for the leader), the
server and the runtime stop, and the lease is released (a no-op unless it is still ours). The
process goes back to standby with nothing of the old term in memory: a controller that leads
again rebuilds from the store under a new epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from corral.controller.access_boot import bootstrap_admin_token, prune_audit_forever, use_secret_box
from corral.controller.address_file import write_address
from corral.controller.core.machine import MachineConfig
from corral.controller.errors import StorageUnavailable
from corral.controller.ha.guard import GuardedStore
from corral.controller.ha.lease import LeaseKeeper, LeaseTimings, connector
from corral.controller.ha.standby import build_standby_server
from corral.controller.lifecycle import Lifecycle
from corral.controller.metrics import attach as attach_metrics
from corral.controller.rpc.gateway import deliver
from corral.controller.rpc.tls import ServerTls, listen_host
from corral.controller.runtime import Runtime
from corral.controller.secretbox import SecretBox
from corral.controller.server import Server, build_server
from corral.controller.settings import ControllerSettings
from corral.controller.store.base import Store

__all__ = ["HaNode", "NodeOptions", "instance_id", "open_postgres_store"]

log = logging.getLogger("corral.controller.ha")
_POLL_S = 0.05  # how often the term checks its lease between wake-ups (a flag check)
_REFUSE_BEFORE_STOP_S = 0.2  # at a step-down: calls already received are refused, not cancelled


def instance_id() -> str:
    """This controller process's name in the lease row: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def open_postgres_store(dsn: str) -> Store:
    """The PostgreSQL store of one term (imported lazily: only HA controllers need psycopg)."""
    from corral.controller.store.postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]

    return cast(Store, PostgresStore(dsn))


@dataclass
class NodeOptions:
    """What a node needs beyond the daemon's flags: where the store and lease live, and timings."""

    open_store: Callable[[], Store]
    connect: Callable[[], Any]  # a new autocommit psycopg connection for the lease
    timings: LeaseTimings
    config: MachineConfig
    advertise: str | None = None  # host:port in the lease row (default: the bound listen address)
    holder: str = ""  # default: instance_id()


class HaNode:
    """Runs standby and leader terms until :meth:`request_stop`; see the module docstring.

    ``args`` are the controller daemon's flags (listen, TLS, auth, http, address files); ``tls``
    the loaded credentials. ``terms`` counts the terms led, ``epoch`` is the current one (None as
    a standby), ``step_downs`` lists why each term ended (for logs and tests); ``runtime`` is set
    while a term serves and ``standby`` while the standby server does (never both).
    """

    def __init__(self, args: ControllerSettings, tls: ServerTls | None, options: NodeOptions) -> None:
        self.args = args
        self.tls = tls
        self.options = options
        self.holder = options.holder or instance_id()
        self.keeper: LeaseKeeper | None = None
        self.epoch: int | None = None
        self.terms = 0
        self.step_downs: list[str] = []
        self.runtime_failures = 0  # terms in a row that failed to start (backoff before campaigning)
        self.runtime: Runtime | None = None  # the term's, while leading
        self.standby: Server | None = None  # the standby server, while serving as one
        self.address = ""
        self._listen = str(args.listen)
        self._mtls_listen: str | None = None
        self._health_listen: str | None = args.health_listen
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- control --------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop after the current term (SIGTERM/SIGINT): the lease is released on the way out."""
        self._stopping = True
        self._poke()

    def _poke(self) -> None:
        """Wake the node's waits; callable from any thread (the lease keeper, a commit thread)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(wake.set)

    async def _wait_for(self, seconds: float) -> None:
        """Sleep ``seconds`` unless asked to stop meanwhile."""
        deadline = asyncio.get_running_loop().time() + seconds
        await self._wait(lambda: asyncio.get_running_loop().time() >= deadline)

    async def _wait(self, done: Callable[[], bool]) -> None:
        assert self._wake is not None
        while not (self._stopping or done()):
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_POLL_S):
                    await self._wake.wait()

    # --- the lifecycle --------------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until stopped; returns the exit code."""
        from corral.controller.daemon import mtls_listen  # the daemon imports this module lazily

        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._mtls_listen = mtls_listen(self.args)
        self.standby = await self._bind_standby(first=True)
        advertise = self.options.advertise or self.address
        keeper = LeaseKeeper(self.options.connect, self.holder, advertise, self.options.timings, on_change=self._poke)
        self.keeper = keeper
        keeper.start()
        log.info("corral controller %s: standby on %s (advertised as %s)", self.holder, self.address, advertise)
        try:
            while not self._stopping:
                keeper.campaign()
                await self._wait(lambda: keeper.view.epoch is not None)
                epoch = keeper.view.epoch
                if self._stopping or epoch is None:
                    break
                if self.standby is not None:
                    await self.standby.stop(0)
                    self.standby = None
                reason = await self._lead(keeper, epoch)
                self.step_downs.append(reason)
                # After the term's writes stopped: free the row at once (a no-op unless still ours).
                await asyncio.to_thread(keeper.resign, release=True)
                if self._stopping:
                    break
                self.standby = await self._bind_standby(first=False)
                # Only now: "standby again" is what a caller may rely on once this line is out.
                log.warning("stepped down from epoch %d (%s): standby again", epoch, reason)
                if self.runtime_failures:
                    # A term that could not even start (store unreachable, state unreadable): let
                    # another controller try before this one campaigns again (1x, 2x, 4x ttl).
                    delay = self.options.timings.ttl_s * min(4, 2 ** (self.runtime_failures - 1))
                    await self._wait_for(delay)
        finally:
            if self.standby is not None:
                await self.standby.stop(0)
                self.standby = None
            await asyncio.to_thread(keeper.stop, release=True)
        return 0

    async def _bind_standby(self, *, first: bool) -> Server:
        standby = await build_standby_server(
            self._listen,
            self._leader_address,
            tls=self.tls,
            mtls_listen=self._mtls_listen,
            health_listen=self._health_listen,
        )
        if first:
            # Port 0 picks a port once: every later server of this process binds the same one.
            self._listen = _with_port(self._listen, standby.port)
            self.address = self._listen
            if standby.mtls_port is not None and self._mtls_listen is not None:
                self._mtls_listen = _with_port(self._mtls_listen, standby.mtls_port)
                if self.args.mtls_address_file:
                    write_address(self.args.mtls_address_file, self._mtls_listen)
            if standby.health_port is not None and self._health_listen is not None:
                self._health_listen = _with_port(self._health_listen, standby.health_port)
            if self.args.address_file:
                write_address(self.args.address_file, self.address)
        return standby

    def _leader_address(self) -> str:
        keeper = self.keeper  # None only before the first bind
        return keeper.view.leader_address() if keeper is not None else ""

    async def _lead(self, keeper: LeaseKeeper, epoch: int) -> str:
        """One term as leader; returns why it ended."""
        self.epoch = epoch
        self.terms += 1
        args = self.args
        try:
            inner = await asyncio.to_thread(self.options.open_store)
        except Exception as exc:
            log.error("epoch %d: cannot open the store (%s); giving the term up", epoch, exc)
            self.runtime_failures += 1
            return f"store unavailable: {exc}"
        if hasattr(inner, "fence_epoch"):
            inner.fence_epoch = epoch  # every write transaction checks this epoch in the database
        else:
            log.warning("the store %s has no epoch fence: only the local lease gate protects it", type(inner).__name__)
        store = GuardedStore(inner, lambda: keeper.may_write(epoch), on_deposed=self._poke)
        runtime = Runtime(cast(Store, store), self.options.config, encode_actions=deliver)
        try:
            await runtime.start()
        except Exception as exc:
            log.error("epoch %d: cannot load the state (%s); giving the term up", epoch, exc)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(inner.close)
            self.runtime_failures += 1
            return f"load failed: {exc}"
        attach_metrics(runtime)
        box = SecretBox.from_key_file(args.secret_key_file) if args.secret_key_file else None
        use_secret_box(runtime, box)
        auth = bool(args.auth) or self.tls is not None
        server: Server | None = None
        http: Any = None
        pruner = asyncio.ensure_future(prune_audit_forever(runtime, args.audit_retain_s))
        runtime.lifecycle = Lifecycle(runtime, args.retain_s)
        retention = asyncio.ensure_future(runtime.lifecycle.run())
        failure = ""
        try:
            if auth:
                from corral.controller.daemon import default_db_path

                token_file = args.admin_token_file or default_db_path().parent / "admin.token"
                await bootstrap_admin_token(runtime, Path(token_file))
            server = await build_server(
                runtime,
                self._listen,
                auth=auth,
                secret_box=box,
                tls=self.tls,
                mtls_listen=self._mtls_listen,
                health_listen=self._health_listen,
            )
            if args.http:
                from corral.controller.web import HttpServer, WebContext
                from corral.controller.web import installers as web_installers

                http = HttpServer(WebContext(runtime, auth=auth, tls=self.tls is not None), installers=web_installers())
                http_address = await http.start(args.http)
                if args.http_address_file:
                    write_address(args.http_address_file, http_address)
            self.runtime = runtime  # serving from here on
            self.runtime_failures = 0
            log.info("leading as epoch %d on %s", epoch, self.address)
            await self._wait(lambda: store.deposed is not None or not keeper.may_write(epoch))
        except Exception as exc:  # e.g. the port cannot be bound again: give the term to another
            log.error("epoch %d: the term failed (%s)", epoch, exc)
            self.runtime_failures += 1
            failure = f"term failed: {exc}"
        reason = failure or _why(store, self._stopping)
        # Every request still queued, or arriving until the server is down, is told to go elsewhere
        # (UNAVAILABLE) rather than cancelled by the server's stop.
        runtime.refuse_all(
            StorageUnavailable(f"this controller is no longer the leader (epoch {epoch} ended: {reason})")
        )
        # Quiet first: no new write can commit (the gate refuses once the lease is not ours or
        # the store deposed us); health turns NOT_SERVING and every agent stream closes at once,
        # so the agents go looking for the next leader instead of waiting on this one.
        if server is not None:
            await server.health.enter_graceful_shutdown()
        for session in list(runtime.sessions.values()):
            session.close()
        pruner.cancel()
        retention.cancel()
        if http is not None:
            with contextlib.suppress(Exception):
                await http.stop()
        if server is not None:
            # A call that reached this process but no handler yet would be cancelled by the stop:
            # one more moment lets it reach its handler, which refuses it (UNAVAILABLE).
            await asyncio.sleep(_REFUSE_BEFORE_STOP_S)
            await server.stop(1.0)
        await runtime.stop()
        self.runtime = None
        self.epoch = None
        return reason


def _why(store: GuardedStore, stopping: bool) -> str:
    if store.deposed is not None:
        return f"{type(store.deposed).__name__}: {store.deposed}"
    if stopping:
        return "stopped"
    return "lease lost"


def _with_port(listen: str, port: int) -> str:
    host = listen_host(listen)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_ha(args: ControllerSettings, tls: ServerTls | None, config: MachineConfig) -> int:
    """The daemon's entry for ``--store postgresql://...``: run a node until SIGTERM/SIGINT."""
    import signal

    timings = LeaseTimings(args.lease_ttl)
    options = NodeOptions(
        open_store=lambda: open_postgres_store(args.parsed_store.dsn),
        connect=connector(args.parsed_store.dsn, timings),
        timings=timings,
        config=config,
        advertise=args.advertise,
    )
    node = HaNode(args, tls, options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.request_stop)
    return await node.run()
