"""A throw-away multi-host network made of Linux network namespaces, for the cluster tests.

:class:`NetnsCluster` creates a bridge in the root namespace and ``hosts`` namespaces, each with a
veth pair into the bridge and its own address on a private /24; the root namespace gets an address
on the bridge too, so the test process can reach every "host". Processes run inside a namespace
with ``ip netns exec``. Names carry a random suffix so that parallel or aborted runs never
collide, and every run records what it created in ``/run/corral-netns/`` so that the leftovers of
a killed run are removed by the next one (:func:`remove_stale`).

Partitions are nftables rules dropping traffic between two addresses inside one namespace (a drop,
not a reject: the peer sees silence, as with a cut cable). This kernel has no netem, so latency is
added in user space by :class:`DelayProxy`.

Requires root, ``ip`` (iproute2) and ``nft`` (nftables).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DelayProxy",
    "Host",
    "NetnsCluster",
    "NetnsError",
    "missing_requirement",
    "remove_stale",
    "wait_until",
]

STATE_DIR = Path("/run/corral-netns")
NFT_TABLE = "corral_partition"


class NetnsError(RuntimeError):
    """A namespace, link or rule could not be set up."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=30)
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def missing_requirement() -> str | None:
    """Why namespaces cannot be used here, or None when they can (root, ip, nft, a working netns)."""
    if os.geteuid() != 0:
        return "multi-host tests need root (network namespaces, veth, nftables)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"multi-host tests need `{tool}` (apt-get install -y {package})"
    probe = f"corral-probe-{secrets.token_hex(3)}"
    done = _run("ip", "netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"cannot create a network namespace here (restricted container?): {done.stderr.strip()}"
    try:
        nft = _run("ip", "netns", "exec", probe, "nft", "list", "ruleset", check=False)
        if nft.returncode != 0:
            return f"nftables does not work inside a namespace here: {nft.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


@dataclass(frozen=True)
class Host:
    """One simulated machine: a namespace and its address on the private /24."""

    index: int
    namespace: str
    ip: str
    veth: str  # the root-namespace end, enslaved to the bridge


@dataclass
class NetnsCluster:
    """A bridge plus ``hosts`` namespaces. Use as a context manager; teardown never raises."""

    hosts_count: int
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    hosts: list[Host] = field(default_factory=list)
    bridge: str = ""
    bridge_ip: str = ""
    subnet: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _state_file: Path | None = None

    def __enter__(self) -> NetnsCluster:
        try:
            self.setup()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    # -- setup / teardown -------------------------------------------------------------------------

    def setup(self) -> None:
        remove_stale()
        network = _free_subnet()
        addresses = list(network.hosts())
        self.subnet = str(network)
        self.bridge = f"cbr{self.suffix}"
        self.bridge_ip = str(addresses[-1])
        self.hosts = [
            Host(i, f"corral-{self.suffix}-{i}", str(addresses[i]), f"cv{self.suffix}{i}")
            for i in range(self.hosts_count)
        ]
        self._record()
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.bridge_ip}/{network.prefixlen}", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for host in self.hosts:
            peer = f"cp{self.suffix}{host.index}"
            _run("ip", "netns", "add", host.namespace)
            _run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", peer)
            _run("ip", "link", "set", peer, "netns", host.namespace)
            _run("ip", "link", "set", host.veth, "master", self.bridge)
            _run("ip", "link", "set", host.veth, "up")
            inside = ("ip", "netns", "exec", host.namespace)
            _run(*inside, "ip", "link", "set", "lo", "up")
            _run(*inside, "ip", "addr", "add", f"{host.ip}/{network.prefixlen}", "dev", peer)
            _run(*inside, "ip", "link", "set", peer, "up")

    def _record(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self._state_file = STATE_DIR / f"{self.suffix}.json"
        record = {
            "pid": os.getpid(),
            "namespaces": [h.namespace for h in self.hosts],
            "links": [self.bridge, *(h.veth for h in self.hosts)],
        }
        self._state_file.write_text(json.dumps(record), encoding="utf-8")

    def teardown(self) -> None:
        """Kill every process started here, then delete the namespaces, links and the record."""
        for proc in self.processes:
            _kill_session(proc)
        for host in self.hosts:
            # A process that escaped its session would keep the namespace alive: kill by namespace.
            _kill_namespace_pids(host.namespace)
            _run("ip", "netns", "del", host.namespace, check=False)
        for link in [self.bridge, *(h.veth for h in self.hosts)]:
            if link:
                _run("ip", "link", "del", link, check=False)
        if self._state_file is not None:
            self._state_file.unlink(missing_ok=True)

    # -- processes --------------------------------------------------------------------------------

    def spawn(
        self,
        host: Host,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Run ``argv`` inside ``host``'s namespace in a new session, output to ``log_path``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", host.namespace, *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        self.processes.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 20.0) -> int:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL the whole session."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        _kill_session(proc)
        return proc.wait()

    # -- faults -----------------------------------------------------------------------------------

    def partition(self, host: Host, peer_ip: str) -> None:
        """Drop every packet between ``host`` and ``peer_ip``, both ways, inside ``host``'s namespace."""
        nft = ("ip", "netns", "exec", host.namespace, "nft")
        _run(*nft, "add", "table", "inet", NFT_TABLE)
        for chain, hook in (("input", "input"), ("output", "output")):
            spec = f"{{ type filter hook {hook} priority 0; policy accept; }}"
            _run(*nft, "add", "chain", "inet", NFT_TABLE, chain, spec)
        _run(*nft, "add", "rule", "inet", NFT_TABLE, "input", "ip", "saddr", peer_ip, "drop")
        _run(*nft, "add", "rule", "inet", NFT_TABLE, "output", "ip", "daddr", peer_ip, "drop")

    def heal(self, host: Host) -> None:
        """Remove every partition rule of ``host``."""
        _run("ip", "netns", "exec", host.namespace, "nft", "delete", "table", "inet", NFT_TABLE, check=False)


def _free_subnet() -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that no route of the root namespace overlaps."""
    routes = _run("ip", "-j", "-4", "route", "show", "table", "all", check=False).stdout or "[]"
    used: list[ipaddress.IPv4Network] = []
    for route in json.loads(routes):
        dst = route.get("dst", "")
        with contextlib.suppress(ValueError):
            if dst and dst != "default":
                used.append(ipaddress.IPv4Network(dst, strict=False))
    rng = random.Random()
    for _ in range(200):
        candidate = ipaddress.IPv4Network(f"10.{rng.randrange(100, 250)}.{rng.randrange(0, 256)}.0/24")
        if not any(candidate.overlaps(net) for net in used if net.prefixlen > 0):
            return candidate
    raise NetnsError("no free 10.x.y.0/24 subnet found")


def _kill_session(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _kill_namespace_pids(namespace: str) -> None:
    done = _run("ip", "netns", "pids", namespace, check=False)
    for word in done.stdout.split():
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.kill(int(word), signal.SIGKILL)


def remove_stale() -> None:
    """Delete namespaces and links recorded by runs whose process is gone (killed test runs)."""
    if not STATE_DIR.is_dir():
        return
    for record_file in STATE_DIR.glob("*.json"):
        try:
            record = json.loads(record_file.read_text(encoding="utf-8"))
            owner = int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            record_file.unlink(missing_ok=True)
            continue
        if _alive(owner):
            continue
        for namespace in record.get("namespaces", []):
            _kill_namespace_pids(namespace)
            _run("ip", "netns", "del", namespace, check=False)
        for link in record.get("links", []):
            _run("ip", "link", "del", link, check=False)
        record_file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DelayProxy:
    """A TCP proxy adding ``delay`` seconds of latency to each direction, without limiting throughput.

    Each chunk read is stamped with its arrival time and written out ``delay`` seconds later, in
    order, so the link behaves like a long cable rather than a slow one. Listens on
    ``listen_host:listen_port`` (port 0 picks one; see :attr:`port`) and forwards to ``target``.
    """

    def __init__(
        self, target_host: str, target_port: int, delay: float, listen_host: str = "127.0.0.1", listen_port: int = 0
    ) -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        self.listen = (listen_host, listen_port)
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> DelayProxy:
        self._server = await asyncio.start_server(self._accept, *self.listen)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> DelayProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        pumps = [
            asyncio.create_task(self._pump(client_reader, upstream_writer)),
            asyncio.create_task(self._pump(upstream_reader, client_writer)),
        ]
        for task in pumps:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.gather(*pumps, return_exceptions=True)
        for writer in (client_writer, upstream_writer):
            writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(chunk)
                await writer.drain()

        delivery = asyncio.create_task(deliver())
        try:
            while True:
                chunk = await reader.read(65536)
                queue.put_nowait((loop.time() + self.delay, chunk))
                if not chunk:
                    break
            await delivery
        except (OSError, asyncio.IncompleteReadError):
            delivery.cancel()
        finally:
            if not delivery.done():
                delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await delivery


def wait_until(predicate: Callable[[], object], deadline_s: float, what: str, interval: float = 0.2) -> None:
    """Poll ``predicate()`` until it is truthy; raise TimeoutError naming ``what`` after the deadline."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {deadline_s:g}s waiting for {what}")
