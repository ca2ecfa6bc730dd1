"""The chaos harness: a controller and agents as real processes, and the faults to inflict on them.

:class:`ChaosCluster` starts ``python -m corral.controller`` and N ``python -m corral.agent``
processes. With ``netns=True`` each agent runs in its own network namespace joined to the root
namespace by a bridge (tests/cluster/netns.py), and the controller listens on the bridge address,
so nftables rules inside an agent's namespace cut it off the way a cable cut would. Otherwise
everything is on loopback.

Every process it starts carries ``CHAOS_RUN=<run id>`` (tasks get it through their payload
env), which is how the teardown finds stragglers and how the scanner tells this run's attempts from
those of a parallel scenario. Faults: ``kill -9``, SIGSTOP, the cgroup v1 freezer, partitions (both
ways or one way), controller outages, and a small tmpfs under the controller's database.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from corral.controller.address_file import AddressTimeout, ControllerExited, wait_for_address
from corral.controller.rpc.wire_spec import spec_to_proto
from corral.controller.spec import parse_workflow
from corral.v1 import agent_pb2, agent_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc, types_pb2
from tests.chaos.observe import MARK, Monitor, ProcScanner, boottime
from tests.cluster.netns import NFT_TABLE, Host, NetnsCluster

__all__ = ["AgentProc", "ChaosCluster", "ControllerProc", "Timings", "supported_flags"]

REPO = Path(__file__).resolve().parents[2]
RPC_TIMEOUT_S = 10.0
FREEZER = Path("/sys/fs/cgroup/freezer")
TERMINAL = frozenset(
    {
        types_pb2.TASK_STATE_COMPLETED,
        types_pb2.TASK_STATE_FAILED,
        types_pb2.TASK_STATE_CANCELLED,
        types_pb2.TASK_STATE_SKIPPED,
    }
)


@dataclass(frozen=True)
class Timings:
    """The controller's clocks for one run (the issue's defaults unless a scenario shortens them)."""

    lease: float = 15.0
    fence_after: float = 30.0
    kill_grace: float = 10.0
    heartbeat: float = 2.0
    adopt_grace: float = 30.0

    def controller_flags(self) -> list[str]:
        flags = ["--lease", f"{self.lease:g}", "--kill-grace", f"{self.kill_grace:g}"]
        flags += ["--heartbeat-interval", f"{self.heartbeat:g}", "--adopt-grace", f"{self.adopt_grace:g}"]
        return [*flags, "--fence-after", f"{self.fence_after:g}"]


#: Short timings for the fast subset inside ``make test``.
FAST = Timings(lease=3.0, fence_after=6.0, kill_grace=2.0, heartbeat=0.5, adopt_grace=10.0)


def supported_flags(flags: Sequence[str]) -> list[str]:
    """``flags`` without the (flag, value) pairs this checkout's controller does not know yet.

    The harness is written against the issue 8 flags; on a tree where a part is not merged yet the
    controller would refuse to start, so unknown flags are dropped (and the scenario shows why it
    fails instead of the harness crashing). Known flags are judged by name, not one by one: a
    value may only be valid next to another (fence-after must exceed the lease).
    """
    from corral.controller.daemon import parse_args

    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), contextlib.suppress(SystemExit):
        parse_args(["--help"])
    known = set(re.findall(r"--[a-z][a-z0-9-]*", help_text.getvalue()))
    kept: list[str] = []
    for i in range(0, len(flags), 2):
        if flags[i] in known:
            kept += flags[i : i + 2]
    return kept


def issue8_missing() -> str | None:
    """Why the features the scenarios test are not in this tree, or None when they are."""
    import importlib.util

    if not supported_flags(["--fence-after", "30"]):
        return "the controller has no --fence-after yet (issue 8 fencing not merged)"
    if importlib.util.find_spec("corral.agent.supervisor") is None:
        return "the agent has no per-attempt supervisor yet (issue 8 not merged)"
    return None


class _Proc:
    def __init__(self, label: str, argv: list[str], env: Mapping[str, str], log: Path) -> None:
        self.label = label
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(env), cwd=REPO
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def sigterm(self, grace: float) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill9()


class ControllerProc:
    """The controller; restartable on the same database and port."""

    def __init__(self, cluster: ChaosCluster, db: Path, listen_host: str, flags: Sequence[str]) -> None:
        self.cluster = cluster
        self.db = db
        self.listen_host = listen_host
        self.flags = list(flags)
        self.address = ""
        self.proc: _Proc | None = None
        self.starts = 0
        self.started_at = 0.0  # boottime of the last spawn
        self.db_opened_at: float | None = None  # boottime the last start opened its database

    def start(self) -> str:
        assert self.proc is None or not self.proc.alive()
        address_file = self.cluster.directory / "controller.addr"
        address_file.unlink(missing_ok=True)
        self.starts += 1
        argv = [sys.executable, "-m", "corral.controller", "--listen", self.address or f"{self.listen_host}:0"]
        argv += ["--db", str(self.db), "--address-file", str(address_file), *self.flags]
        if self.listen_host not in ("127.0.0.1", "localhost"):
            argv.append("--insecure")  # a private bridge: plaintext keeps the harness simple
        log = self.cluster.directory / f"controller-{self.starts}.log"
        self.started_at = boottime()
        self.proc = _Proc(f"controller#{self.starts}", argv, self.cluster.env, log)
        self.db_opened_at = self._watch_db_open(address_file)
        try:
            address = wait_for_address(address_file, exited=self.proc.popen.poll, timeout=60)
        except (ControllerExited, AddressTimeout) as exc:
            raise RuntimeError(f"{exc}:\n{log.read_text(errors='replace')[-5000:]}") from None
        self.address = address
        return address

    def _watch_db_open(self, address_file: Path, timeout: float = 60.0) -> float | None:
        """When the new process opened its database: the end of its interpreter start-up and
        imports, the start of its own recovery. None when it served (or died) before we saw it."""
        assert self.proc is not None
        fd_dir = Path(f"/proc/{self.proc.pid}/fd")
        target = str(self.db)
        deadline = time.monotonic() + timeout
        while self.proc.alive() and time.monotonic() < deadline and not address_file.exists():
            with contextlib.suppress(OSError):
                for fd in fd_dir.iterdir():
                    with contextlib.suppress(OSError):
                        if os.readlink(fd) == target:
                            return boottime()
            time.sleep(0.005)
        return None

    def recovery_started(self) -> float:
        """Boottime the last start's own recovery began: its database's opening, else its spawn."""
        return self.db_opened_at if self.db_opened_at is not None else self.started_at

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill9()


class AgentProc:
    """One agent daemon with its own work dir (and namespace, when the cluster has them)."""

    def __init__(self, cluster: ChaosCluster, name: str, slots: int, host: Host | None) -> None:
        self.cluster = cluster
        self.name = name
        self.slots = slots
        self.host = host
        self.work_dir = cluster.directory / f"work-{name}"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.starts = 0
        self.auto_restart = False  # like systemd's Restart=on-failure, RestartSec=2s
        self.deaths = 0
        self.proc = self._spawn()

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "corral.agent",
            "--controller",
            self.cluster.controller.address,
            "--name",
            self.name,
            "--slots",
            str(self.slots),
            "--types",
            "shell",
            "--work-dir",
            str(self.work_dir),
            "--kill-grace",
            f"{self.cluster.timings.kill_grace:g}",
        ]

    def _spawn(self) -> _Proc:
        self.starts += 1
        log = self.cluster.directory / f"agent-{self.name}-{self.starts}.log"
        argv = self.argv()
        if self.host is not None:
            # `ip netns exec` execs the agent: the pid stays the agent's.
            argv = ["ip", "netns", "exec", self.host.namespace, *argv]
        return _Proc(f"agent {self.name}#{self.starts}", argv, self.cluster.env, log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.alive()

    def kill9(self) -> None:
        self.proc.kill9()

    def restart(self) -> None:
        assert not self.proc.alive(), f"agent {self.name} is still running"
        self.proc = self._spawn()

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)


class ChaosCluster:
    """A controller, agents, a process scanner and a monitor for one scenario (a context manager)."""

    def __init__(
        self,
        directory: Path,
        timings: Timings,
        agents: int = 3,
        slots: int = 4,
        netns: bool = False,
        db_dir: Path | None = None,
    ) -> None:
        self.directory = directory
        self.timings = timings
        self.run_id = uuid.uuid4().hex
        self.ledger = directory / "ledger"
        self.env = dict(os.environ)
        self.env.pop("CORRAL_ADDRESS", None)
        self.env[MARK] = self.run_id
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        self._agents_wanted = agents
        self._slots = slots
        self.net: NetnsCluster | None = NetnsCluster(agents) if netns else None
        db = (db_dir or directory) / "controller.db"
        self._db = db
        self._controller: ControllerProc | None = None
        self.agents: dict[str, AgentProc] = {}
        self.scanner = ProcScanner(self.run_id)
        self.monitor = Monitor(lambda: grpc.insecure_channel(self.controller.address))
        self._channel: grpc.Channel | None = None
        self._stop = threading.Event()
        self._restarter = threading.Thread(target=self._restart_loop, name="agent-restarter", daemon=True)
        self._frozen: list[Path] = []

    # -- lifecycle --------------------------------------------------------------------------------

    def __enter__(self) -> ChaosCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def controller(self) -> ControllerProc:
        assert self._controller is not None
        return self._controller

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        listen_host = "127.0.0.1"
        if self.net is not None:
            self.net.setup()
            listen_host = self.net.bridge_ip
        flags = supported_flags(self.timings.controller_flags())
        self._controller = ControllerProc(self, self._db, listen_host, flags)
        self.controller.start()
        hosts: list[Host | None] = list(self.net.hosts) if self.net is not None else [None] * self._agents_wanted
        for i, host in enumerate(hosts):
            name = f"a{i + 1}"
            self.agents[name] = AgentProc(self, name, self._slots, host)
        self.scanner.start()
        self.monitor.start()
        self._restarter.start()
        self.wait_connected(list(self.agents), 60, "every agent to connect")

    def close(self) -> None:
        """Stop everything this run started; never raises."""
        self._stop.set()
        for cgroup in self._frozen:
            with contextlib.suppress(OSError):
                (cgroup / "freezer.state").write_text("THAWED")
        for agent in self.agents.values():
            agent.proc.sigterm(grace=5)
        if self._controller is not None and self._controller.proc is not None:
            self._controller.proc.sigterm(grace=5)
        self.monitor.stop()
        self.scanner.stop()
        if self._channel is not None:
            self._channel.close()
        self.kill_marked()
        for cgroup in self._frozen:
            with contextlib.suppress(OSError):
                cgroup.rmdir()
        if self.net is not None:
            self.net.teardown()

    def kill_marked(self) -> list[int]:
        """SIGKILL every live process carrying this run's marker; returns their pids."""
        marker = f"{MARK}={self.run_id}".encode()
        killed = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as handle:
                    if marker not in handle.read():
                        continue
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except (OSError, ProcessLookupError):
                continue
        return killed

    def _restart_loop(self) -> None:
        while not self._stop.wait(0.2):
            for agent in list(self.agents.values()):
                if agent.auto_restart and not agent.alive():
                    agent.deaths += 1
                    if self._stop.wait(2.0):
                        return
                    agent.restart()

    # -- the API ----------------------------------------------------------------------------------

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.controller.address)
        return self._channel

    def reset_channel(self) -> None:
        """A fresh channel after a controller restart: no reconnect backoff to sit out."""
        if self._channel is not None:
            self._channel.close()
        self._channel = None

    @property
    def orchestrator(self) -> Any:
        return orchestrator_pb2_grpc.OrchestratorStub(self.channel())

    def submit(self, spec: Mapping[str, Any], timeout: float = RPC_TIMEOUT_S) -> str:
        request = orchestrator_pb2.SubmitWorkflowRequest(spec=spec_to_proto(parse_workflow(spec)), start=True)
        workflow_id = str(self.orchestrator.SubmitWorkflow(request, timeout=timeout).workflow_id)
        self.monitor.track(workflow_id)
        return workflow_id

    def status(self, workflow_id: str, timeout: float = RPC_TIMEOUT_S) -> types_pb2.WorkflowStatus:
        request = orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id, include_tasks=True)
        status: types_pb2.WorkflowStatus = self.orchestrator.GetWorkflowStatus(request, timeout=timeout).status
        return status

    def tasks(self, workflow_id: str) -> dict[str, types_pb2.TaskStatus]:
        return {t.name: t for t in self.status(workflow_id).tasks}

    def list_agents(self) -> list[types_pb2.AgentInfo]:
        stub = agent_pb2_grpc.ClusterStub(self.channel())
        return list(stub.ListAgents(agent_pb2.ListAgentsRequest(), timeout=RPC_TIMEOUT_S).agents)

    def connected(self) -> set[str]:
        return {a.name for a in self.list_agents() if a.state == types_pb2.AGENT_STATE_CONNECTED}

    def wait_connected(self, names: Sequence[str], timeout: float, what: str) -> None:
        """Wait until the agents ``names`` are connected. On a timeout the missing ones (still
        alive) write their asyncio tasks into their logs first (SIGUSR2, agent/taskdump.py): an
        agent that never comes back is stuck in some await, and its log then says which."""
        try:
            self.wait(lambda: set(names) <= self.connected(), timeout, what)
        except TimeoutError:
            with contextlib.suppress(grpc.RpcError):
                missing = [self.agents[name] for name in names if name not in self.connected()]
                for agent in missing:
                    if agent.alive():
                        agent.signal(signal.SIGUSR2)
                time.sleep(1.0)  # the dumps are written by the agents' event loops
            raise

    @staticmethod
    def wait(check: Callable[[], object], timeout: float, what: str, interval: float = 0.2) -> Any:
        """Poll ``check`` until truthy (an unreachable controller counts as "not yet")."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(grpc.RpcError):
                value = check()
                if value:
                    return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(interval)

    def wait_terminal(self, workflow_ids: Sequence[str], timeout: float) -> bool:
        """Wait until every workflow's tasks are terminal; False when the deadline passed first."""

        def done() -> bool:
            return all(all(t.state in TERMINAL for t in self.status(w).tasks) for w in workflow_ids)

        try:
            self.wait(done, timeout, "the workflows to finish", interval=0.5)
        except TimeoutError:
            return False
        return True

    def running_on(self, workflow_id: str, names: Sequence[str]) -> dict[str, types_pb2.TaskStatus] | None:
        """The tasks ``names`` when every one of them is RUNNING, else None."""
        tasks = self.tasks(workflow_id)
        picked = {n: tasks[n] for n in names}
        return picked if all(t.state == types_pb2.TASK_STATE_RUNNING for t in picked.values()) else None

    # -- faults -----------------------------------------------------------------------------------

    def partition(self, agent: AgentProc, direction: str = "both") -> None:
        """Drop traffic between ``agent`` and the controller: "both", "in" (controller -> agent
        only) or "out" (agent -> controller only). Needs the cluster's namespaces."""
        assert self.net is not None and agent.host is not None, "partitions need netns=True"
        if direction == "both":
            self.net.partition(agent.host, self.net.bridge_ip)
            return
        nft = ["ip", "netns", "exec", agent.host.namespace, "nft"]
        chain, match = ("input", "saddr") if direction == "in" else ("output", "daddr")
        subprocess.run([*nft, "add", "table", "inet", NFT_TABLE], check=True, timeout=30)
        spec = f"{{ type filter hook {chain} priority 0; policy accept; }}"
        subprocess.run([*nft, "add", "chain", "inet", NFT_TABLE, chain, spec], check=True, timeout=30)
        rule = [*nft, "add", "rule", "inet", NFT_TABLE, chain, "ip", match, self.net.bridge_ip, "drop"]
        subprocess.run(rule, check=True, timeout=30)

    def heal(self, agent: AgentProc) -> None:
        assert self.net is not None and agent.host is not None
        self.net.heal(agent.host)

    def freeze(self, agent: AgentProc) -> Path:
        """Put the agent daemon (only it: not its supervisors) in a frozen cgroup v1 freezer group."""
        cgroup = FREEZER / f"corral-chaos-{self.run_id[:12]}-{agent.name}"
        cgroup.mkdir(exist_ok=True)
        self._frozen.append(cgroup)
        (cgroup / "cgroup.procs").write_text(str(agent.pid))
        (cgroup / "freezer.state").write_text("FROZEN")
        return cgroup

    def thaw(self, cgroup: Path) -> None:
        (cgroup / "freezer.state").write_text("THAWED")


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    """A small tmpfs mounted at ``path`` (root only), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], check=True, timeout=30)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


def freezer_missing() -> str | None:
    """Why the cgroup v1 freezer cannot be used here, or None."""
    if os.geteuid() != 0:
        return "the freezer scenario needs root"
    if not (FREEZER / "cgroup.procs").exists():
        return "no cgroup v1 freezer hierarchy at /sys/fs/cgroup/freezer"
    return None
