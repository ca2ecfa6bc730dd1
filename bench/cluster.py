"""A real controller and real agents as subprocesses on loopback, for one benchmark workload.

Every workload gets a fresh controller (``python -m corral.controller``) on port 0 with a fresh
SQLite file in a temporary folder, started with the default durable settings and only
``--listen 127.0.0.1:0 --db FILE --address-file FILE``, plus N agents (``python -m corral.agent``)
whose ``--python-path`` is ``bench/tasks`` so python tasks can be ``bench_tasks:NAME``.

With ``tls=True`` the cluster runs the way a secure deployment does: certificates made with
:mod:`corral.controller.certs` in the temporary folder, the controller serving TLS and mutual TLS
(``--tls-cert --tls-key --client-ca``), agents presenting their own certificates on the
mutual-TLS port, and the bench's client presenting an admin client certificate there too.

Everything started here is stopped on exit, errors included: SIGTERM, then SIGKILL of whatever is
left of each process tree (agents' python workers and task processes included).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import psutil

from corral.controller.address_file import AddressTimeout, ControllerExited, wait_for_address
from corral.controller.certs import agent_grant, client_grant, init_dir, issue_identity
from corral.controller.healthprobe import probe
from corral.controller.sdk.client import Client

__all__ = ["TASKS_DIR", "BenchCluster", "Proc", "tls_default", "use_store", "use_tls"]

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0
BENCH_CLIENT = "bench-admin"


# ``python -m bench.run --store postgresql`` sets this: each controller gets a fresh database URL
# from it instead of a SQLite file (None: SQLite, the default).
_store_url: Callable[[], str] | None = None


def use_store(new_url: Callable[[], str] | None) -> None:
    """Run every following controller on the database URL ``new_url()`` returns (None: a SQLite file)."""
    global _store_url
    _store_url = new_url


# ``python -m bench.run --tls`` (and the TLS column of ``make bench``) sets this: every cluster whose
# workload does not choose runs with TLS, mutual TLS and auth on.
_tls_default = False


def use_tls(on: bool) -> None:
    """Run every following cluster that does not say otherwise with TLS + mutual TLS + auth (``on``)."""
    global _tls_default
    _tls_default = on


def tls_default() -> bool:
    """Whether clusters run with TLS unless told otherwise (see :func:`use_tls`)."""
    return _tls_default


# Agents list the task module the way an operator would (agents with TLS must, and listed modules
# are imported once by each worker rather than once per workflow).
PYTHON_ALLOW = ["--python-allow", "bench_tasks"]


class Proc:
    """One subprocess with its log file."""

    def __init__(self, label: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.label = label
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=REPO_ROOT
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, grace: float = STOP_GRACE_S) -> None:
        """Send ``sig``, wait up to ``grace``, then SIGKILL the process and any descendant left."""
        try:
            family = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            family = []
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        for child in family:
            with contextlib.suppress(psutil.Error):
                child.kill()


class BenchCluster:
    """A controller plus ``agents`` agents of ``slots`` slots each (0 agents: controller only).

    ``tls`` None follows :func:`use_tls` (off unless the run asked for TLS). With TLS the
    controller also turns auth on (it always does when it serves TLS): every call is authenticated.

    Use as ``async with BenchCluster(agents=2, slots=1) as cluster:``; ``cluster.address`` is the
    controller's host:port and ``cluster.controller.pid`` its pid.
    """

    def __init__(
        self,
        *,
        agents: int = 2,
        slots: int = 1,
        keep_dir: bool | None = None,
        tls: bool | None = None,
        controller_flags: Sequence[str] = (),
    ) -> None:
        self.agent_count = agents
        self.controller_flags = list(controller_flags)
        self.slots = slots
        self.tls = _tls_default if tls is None else tls
        # CORRAL_BENCH_KEEP=1 keeps the folder (database and process logs) for a post-mortem.
        self.keep_dir = bool(os.environ.get("CORRAL_BENCH_KEEP")) if keep_dir is None else keep_dir
        self.directory = Path(tempfile.mkdtemp(prefix="corral-bench-"))
        self.address = ""
        self.controller: Proc | None = None
        self.agents: list[Proc] = []
        self.extra: list[Proc] = []
        self.profiler: Proc | None = None
        # CORRAL_BENCH_PYSPY=DIR records the controller with py-spy into DIR/<label>-<pid>.txt.
        self.pyspy_dir = os.environ.get("CORRAL_BENCH_PYSPY", "")
        env = dict(os.environ)
        env.pop("CORRAL_ADDRESS", None)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TASKS_DIR), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self.env = env

    @property
    def agent_names(self) -> list[str]:
        return [f"bench-agent-{i}" for i in range(self.agent_count)]

    async def __aenter__(self) -> BenchCluster:
        try:
            await self.start()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def pki(self) -> Path:
        return self.directory / "pki"

    def client(self, **kwargs: object) -> Client:
        """A public SDK client of this controller (with an admin client certificate under ``tls``)."""
        if self.tls:
            kwargs.setdefault("ca", self.pki / "ca.pem")
            kwargs.setdefault("cert", self.pki / f"{BENCH_CLIENT}.pem")
            kwargs.setdefault("key", self.pki / f"{BENCH_CLIENT}-key.pem")
        kwargs.setdefault("token", "")
        return Client(self.address, **kwargs)  # type: ignore[arg-type]

    def _make_pki(self) -> list[str]:
        """Certificates for the controller, every agent and the bench client; the controller's TLS flags."""
        pki = self.pki
        init_dir(pki)
        for name in self.agent_names:
            issue_identity(pki, name, agent_grant(agent_types=["shell", "python"]))
        issue_identity(pki, BENCH_CLIENT, client_grant("admin"))
        return [
            "--tls-cert",
            str(pki / "controller.pem"),
            "--tls-key",
            str(pki / "controller-key.pem"),
            "--client-ca",
            str(pki / "ca.pem"),
            "--mtls-listen",
            "127.0.0.1:0",
            "--mtls-address-file",
            str(self.directory / "mtls.addr"),
        ]

    def spawn(self, label: str, argv: list[str]) -> Proc:
        """Start another process (e.g. the load generator) that is stopped with the cluster."""
        proc = Proc(label, argv, self.env, self.directory / f"{label}.log")
        self.extra.append(proc)
        return proc

    async def start(self) -> None:
        db = self.directory / "controller.db"
        address_file = self.directory / "controller.addr"
        argv = [
            sys.executable,
            "-m",
            "corral.controller",
            "--listen",
            "127.0.0.1:0",
            "--db",
            str(db) if _store_url is None else _store_url(),
            "--address-file",
            str(address_file),
            *(self._make_pki() if self.tls else []),
            *self.controller_flags,
        ]
        self.controller = controller = Proc("controller", argv, self.env, self.directory / "controller.log")
        try:
            self.address = await asyncio.to_thread(
                wait_for_address, address_file, exited=controller.popen.poll, timeout=START_TIMEOUT_S, poll=0.02
            )
        except (ControllerExited, AddressTimeout) as exc:
            raise RuntimeError(f"{exc}:\n{controller.tail()}") from None
        if _store_url is not None and not self.tls:
            # On PostgreSQL a controller starts as a standby and leads once it holds the lease.
            await asyncio.to_thread(self._wait_leading)
        if self.tls:
            # Written before the main address: certificate holders (agents, this client) use it.
            self.address = (self.directory / "mtls.addr").read_text().strip()
        if self.pyspy_dir:
            self._start_profiler(controller.pid)
        for name in self.agent_names:
            work = self.directory / f"work-{name}"
            work.mkdir()
            argv = [
                sys.executable,
                "-m",
                "corral.agent",
                "--controller",
                self.address,
                "--name",
                name,
                "--slots",
                str(self.slots),
                "--work-dir",
                str(work),
                "--python-path",
                str(TASKS_DIR),
                *PYTHON_ALLOW,
            ]
            if self.tls:
                argv += ["--ca", str(self.pki / "ca.pem"), "--cert", str(self.pki / f"{name}.pem")]
                argv += ["--key", str(self.pki / f"{name}-key.pem")]
            self.agents.append(Proc(name, argv, self.env, self.directory / f"{name}.log"))
        if self.agent_count:
            await self.wait_agents(set(self.agent_names))

    def _start_profiler(self, pid: int) -> None:
        out_dir = Path(self.pyspy_dir).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        out = out_dir / f"controller-{pid}.txt"
        rate = os.environ.get("CORRAL_BENCH_PYSPY_RATE", "100")
        extra = os.environ.get("CORRAL_BENCH_PYSPY_ARGS", "").split()  # e.g. "--threads" or "--native"
        argv = [pyspy, "record", "-p", str(pid), "-o", str(out), "-f", "raw", "--rate", rate, *extra]
        self.profiler = Proc("py-spy", argv, self.env, self.directory / "py-spy.log")
        print(f"py-spy recording the controller into {out}", file=sys.stderr)

    def _wait_leading(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while (why := probe(f"grpc://{self.address}")) is not None:
            if time.monotonic() > deadline:
                tail = self.controller.tail() if self.controller is not None else ""
                raise RuntimeError(f"the controller did not become the leader: {why}\n{tail}")
            time.sleep(0.05)

    async def wait_agents(self, names: set[str], timeout: float = START_TIMEOUT_S) -> None:
        """Wait until every agent in ``names`` is CONNECTED."""
        deadline = time.monotonic() + timeout
        async with self.client() as client:
            while True:
                connected = {a.name for a in await client.list_agents(states=["connected"])}
                if names <= connected:
                    return
                for agent in self.agents:
                    if not agent.alive():
                        raise RuntimeError(f"agent {agent.label} exited:\n{agent.tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"agents {sorted(names - connected)} did not connect within {timeout:g} s")
                await asyncio.sleep(0.05)

    def controller_pid(self) -> int:
        """The pid of the live controller; raises with the tail of its log if it has exited."""
        assert self.controller is not None, "not started"
        if not self.controller.alive():
            code = self.controller.popen.returncode
            raise RuntimeError(f"the controller exited with {code}:\n{self.controller.tail()}")
        return self.controller.pid

    def stop(self) -> None:
        """Stop everything (load processes, agents, then the controller) and remove the folder."""
        for proc in [*self.extra, *self.agents]:
            proc.stop()
        if self.controller is not None:
            self.controller.stop()
        if self.profiler is not None:
            # py-spy writes its output and exits once the controller is gone.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.profiler.popen.wait(timeout=30)
            self.profiler.stop(signal.SIGINT)
            self.profiler = None
        self.extra.clear()
        self.agents.clear()
        if self.keep_dir:
            print(f"kept {self.directory}", file=sys.stderr)
        else:
            shutil.rmtree(self.directory, ignore_errors=True)
