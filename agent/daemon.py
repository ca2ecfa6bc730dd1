"""The agent process: inventory, warm workers, executor and session glued together, plus signals.

Shutdown paths: a Drain from the controller or the first SIGTERM/SIGINT drains (no new work,
running attempts get the grace, then are stopped; reports are flushed and acknowledged) and the
agent exits 0. A second signal kills every attempt at once and exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
from importlib import metadata

import structlog

from corral.agent.auth import AgentAuth
from corral.agent.config import AgentConfig
from corral.agent.executor import Executor
from corral.agent.inventory import GpuProbe, collect_inventory, collect_usage, probe_nvml
from corral.agent.outbox import Outbox
from corral.agent.pypool import WorkerPool
from corral.agent.runas import resolve_run_as
from corral.agent.session import Session
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
        self.outbox = Outbox()
        self.inventory = types_pb2.Inventory()
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
        # Attempt folders of a previous life: their reports died with it.
        shutil.rmtree(self.work_dir / "attempts", ignore_errors=True)
        (self.work_dir / "attempts").mkdir(mode=0o700)
        if run_as is not None:
            # The run-as user may pass through to its own folders, and list or create nothing else.
            self.work_dir.chmod(0o711)
            (self.work_dir / "attempts").chmod(0o711)
        self.inventory = collect_inventory(self.work_dir, config.slots, config.gpus, self._gpu_probe)
        collect_usage(self.work_dir, 0)  # primes psutil's cpu_percent
        policy = config.policy
        passed_env = config.passed_env()
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
            agent_types=config.agent_types,
            work_dir=self.work_dir,
            sink=self.outbox,
            pool=self.pool,
            kill_grace_s=config.kill_grace_s,
            output_cap=config.output_cap,
            has_gpus=self.inventory.gpu_count > 0,
            policy=policy,
            passed_env=passed_env,
            run_as=run_as,
        )
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
        )
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.on_signal)
        if config.join_token and config.cert is not None:
            log.warning("--join-token is not used: this agent has a certificate (--cert), which names it")
        self.session.start()
        self.ready.set()
        try:
            return await self._exit
        finally:
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            await self._teardown()

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
        )

    def _usage(self) -> types_pb2.Usage:
        running = self.executor.running_count if self.executor is not None else 0
        return collect_usage(self.work_dir, running)

    def _finish(self, code: int) -> None:
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(code)

    async def _drain(self, grace_s: float) -> None:
        assert self.executor is not None and self.session is not None
        log.info("draining", grace_s=grace_s, running=self.executor.running_count)
        self.session.draining = True
        self.executor.accepting = False
        self.session.heartbeat_now()
        await self.executor.drain(grace_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ACK_WAIT_S
        while self.outbox.unacked_ids and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.outbox.unacked_ids:
            log.warning("exiting with unacknowledged reports", attempts=len(self.outbox.unacked_ids))
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
