"""The agent process: inventory, warm workers, executor and session glued together, plus signals.

Shutdown paths: a Drain from the controller or the first SIGTERM/SIGINT drains (no new work,
running attempts get the grace, then are stopped through their supervisors; reports are flushed
and acknowledged) and the agent exits 0. A second signal kills every attempt at once and exits 1.
A crash (SIGKILL) of the agent leaves the supervisors running: the next agent process re-adopts
them before it connects (same task pid, no restart), reports what finished meanwhile, and tells
the controller, with a new ``incarnation`` in its Hello, that it is a new process. SIGUSR2 only
writes the event loop's tasks and their awaits to standard error (:mod:`corral.agent.taskdump`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
from importlib import metadata

import structlog

from corral.agent import adopt, taskdump
from corral.agent.auth import AgentAuth
from corral.agent.config import AgentConfig
from corral.agent.executor import Executor
from corral.agent.inventory import GpuProbe, collect_inventory, collect_usage, probe_nvml
from corral.agent.lease import LeaseFile
from corral.agent.limits import CgroupLimits, read_limits
from corral.agent.metrics import AgentHttp
from corral.agent.metrics import attach as attach_metrics
from corral.agent.outbox import Outbox
from corral.agent.pypool import WorkerPool
from corral.agent.runas import resolve_run_as
from corral.agent.session import Session
from corral.protocol import PROTOCOL_VERSION, parse_addresses
from corral.v1 import agent_pb2, types_pb2

__all__ = ["ACK_WAIT_S", "Agent", "agent_version"]

log = structlog.get_logger("corral.agent")

ACK_WAIT_S = 5.0


def agent_version() -> str:
    """The installed corral version (reported in Hello)."""
    try:
        return metadata.version("corral")
    except metadata.PackageNotFoundError:
        return "0.0.0"


class Agent:
    """One agent daemon. ``await Agent(config).run()`` returns the process exit code.

    Raises :class:`~corral.agent.auth.AuthError` when the TLS or join settings cannot be used.
    """

    def __init__(self, config: AgentConfig, *, gpu_probe: GpuProbe = probe_nvml) -> None:
        self.config = config
        parse_addresses(config.controller)  # a bad --controller list is refused at start (ValueError)
        self.work_dir = config.resolved_work_dir
        self.auth = AgentAuth(
            name=config.name,
            work_dir=self.work_dir,
            ca=config.ca,
            cert=config.cert,
            key=config.key,
            join_token=config.join_token,
        )
        self._gpu_probe = gpu_probe
        #: Random per agent process: a new one tells the controller the previous process died.
        self.incarnation = secrets.token_hex(8)
        self.lease = LeaseFile(self.work_dir / "lease")
        #: Attempts taken over from a previous agent process at start (running or finished).
        self.adopted: list[str] = []
        self.outbox = Outbox()
        self.inventory = types_pb2.Inventory()
        self.limits = CgroupLimits()  # read at start (run)
        self.pool: WorkerPool | None = None
        self.executor: Executor | None = None
        self.session: Session | None = None
        self.ready = asyncio.Event()
        self._exit: asyncio.Future[int] | None = None
        self._shutdown: asyncio.Task[None] | None = None
        self._signals = 0

    # -- control ---------------------------------------------------------------------------

    def drain(self, grace_s: float | None = None) -> None:
        """Start draining (idempotent): announce it, finish or stop running work, then exit 0."""
        if self._shutdown is None:
            grace = self.config.drain_grace_s if grace_s is None else grace_s
            self._shutdown = asyncio.create_task(self._drain(grace))

    def kill(self) -> None:
        """Stop everything at once (the second signal) and exit 1."""
        task = asyncio.create_task(self._kill())
        task.add_done_callback(lambda _: None)
        self._kill_task = task

    def on_signal(self) -> None:
        """First SIGTERM/SIGINT drains, the next one kills."""
        self._signals += 1
        if self._signals == 1:
            log.info("signal received: draining", grace_s=self.config.drain_grace_s)
            self.drain()
        else:
            log.warning("second signal: killing all attempts")
            self.kill()

    # -- the process -------------------------------------------------------------------------

    async def run(self, *, install_signals: bool = False) -> int:
        """Run until drained or killed; returns the exit code."""
        loop = asyncio.get_running_loop()
        self._exit = loop.create_future()
        config = self.config
        run_as = resolve_run_as(config.run_as, self.work_dir) if config.run_as is not None else None
        self.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.work_dir / "attempts").mkdir(mode=0o700, exist_ok=True)
        if run_as is not None:
            # The run-as user may pass through to its own folders, and list or create nothing else.
            self.work_dir.chmod(0o711)
            (self.work_dir / "attempts").chmod(0o711)
        self.limits = read_limits()  # issue 11: the container's share, not the host's
        self.inventory = collect_inventory(self.work_dir, config.slots, config.gpus, self._gpu_probe, self.limits)
        # Issue 11: what it offers, after its cgroup's limits (a container reports its own share).
        log.info("inventory", cpu_cores=self.inventory.cpu_cores, memory_mb=self.inventory.memory_mb)
        collect_usage(self.work_dir, 0)  # primes psutil's cpu_percent
        policy = config.policy
        passed_env = config.passed_env()
        # Issue 11: where python tasks import from, said once at start.
        log.info("python import path", python_paths=[str(p) for p in config.python_paths], cwd=os.getcwd())
        if config.worker_count:
            self.pool = WorkerPool(
                config.worker_count,
                self.work_dir,
                config.output_cap,
                config.python_paths,
                policy=policy,
                passed_env=passed_env,
                run_as=run_as,
            )
            await self.pool.start()
        self.executor = Executor(
            slots=config.slots,
            agent_types=config.offered_types,
            work_dir=self.work_dir,
            sink=self.outbox,
            pool=self.pool,
            kill_grace_s=config.kill_grace_s,
            output_cap=config.output_cap,
            has_gpus=self.inventory.gpu_count > 0,
            policy=policy,
            passed_env=passed_env,
            run_as=run_as,
            declared_types=config.declared_types,
        )
        # Before connecting: the Hello lists what was adopted (running and finished).
        try:
            found = adopt.scan(self.work_dir, self.executor.registry.shell)
        except OSError:
            # Nothing adopted: the controller counts those attempts lost, and their supervisors,
            # whose lease file goes below, fence themselves.
            log.exception("cannot scan the supervisors of a previous agent process", work_dir=str(self.work_dir))
            found = []
        self.adopted = self.executor.adopt(found)
        self._clean_previous_life(set(self.adopted))
        self.executor.start()
        self.session = Session(
            target=config.controller,
            hello=self._hello,
            usage=self._usage,
            executor=self.executor,
            outbox=self.outbox,
            on_drain=self.drain,
            kill_grace_s=config.kill_grace_s,
            name=config.name,
            auth=self.auth,
            lease=self.lease,
        )
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.on_signal)
            # An operator's (and the chaos harness's) view of a stuck agent: see taskdump.py.
            loop.add_signal_handler(signal.SIGUSR2, self._dump_tasks, loop)
        if config.join_token and config.cert is not None:
            log.warning("--join-token is not used: this agent has a certificate (--cert), which names it")
        self.session.start()
        http = await self._start_http()
        self.ready.set()
        try:
            return await self._exit
        finally:
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
                    loop.remove_signal_handler(sig)
            if http is not None:
                await http.stop()
            await self._teardown()

    def _dump_tasks(self, loop: asyncio.AbstractEventLoop) -> None:
        connected = self.session is not None and self.session.connected.is_set()
        log.warning("SIGUSR2: writing the asyncio tasks to standard error", connected=connected)
        taskdump.write_tasks(loop)

    async def _start_http(self) -> AgentHttp | None:
        """The ``--http`` port (Prometheus /metrics), when asked for."""
        if self.config.http is None:
            return None
        attach_metrics(self)
        http = AgentHttp()
        await http.start(self.config.http, self.config.http_address_file)
        return http

    def _clean_previous_life(self, adopted: set[str]) -> None:
        """Remove what a previous agent process left that nothing adopted (its reports died with it)."""
        attempts = self.work_dir / "attempts"
        for entry in attempts.iterdir():
            if entry.name not in adopted:
                shutil.rmtree(entry, ignore_errors=True)
        if not self.executor or not self.executor.running_count:
            # No supervisor reads the lease: a stale one (maybe from before a reboot, on another
            # CLOCK_BOOTTIME) must not outlive it. The first echoed heartbeat writes a new one.
            with contextlib.suppress(FileNotFoundError):
                self.lease.path.unlink()

    def _hello(self) -> agent_pb2.Hello:
        config = self.config
        inventory = types_pb2.Inventory()
        inventory.CopyFrom(self.inventory)
        return agent_pb2.Hello(
            agent_id=self.auth.agent_id,
            name=config.name,
            hostname=socket.gethostname(),
            agent_types=list(config.offered_types),
            labels=config.labels,
            inventory=inventory,
            version=agent_version(),
            incarnation=self.incarnation,
            protocol_version=PROTOCOL_VERSION,
        )

    def _usage(self) -> types_pb2.Usage:
        running = self.executor.running_count if self.executor is not None else 0
        return collect_usage(self.work_dir, running, self.limits)

    def _finish(self, code: int) -> None:
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(code)

    async def _drain(self, grace_s: float) -> None:
        assert self.executor is not None and self.session is not None
        log.info("draining", grace_s=grace_s, running=self.executor.running_count)
        self.session.draining = True
        self.session.heartbeat_now()
        await self.executor.drain(grace_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ACK_WAIT_S
        while self.outbox.unacked_ids and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.outbox.unacked_ids:
            log.warning("exiting with unacknowledged reports", attempts=len(self.outbox.unacked_ids))
        # Issue 11: the drain's last line; the controller shows the agent as drained once it leaves.
        log.info("drained: every attempt finished or given back; exiting", grace_s=grace_s)
        self._finish(0)

    async def _kill(self) -> None:
        if self.executor is not None:
            await self.executor.kill_all()
        self._finish(1)

    async def _teardown(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.executor is not None:
            if self.executor.running_count:
                await self.executor.kill_all()
            await self.executor.close()
        if self.pool is not None:
            await self.pool.close()
        if self._shutdown is not None and not self._shutdown.done():
            self._shutdown.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._shutdown
