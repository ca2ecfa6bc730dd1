"""Self-tests of the multi-host harness: reachability, partitions, healing, teardown, the delay proxy."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.conftest import require_netns
from tests.cluster.netns import DelayProxy, Host, NetnsCluster

pytestmark = pytest.mark.cluster

# A one-shot TCP echo server and a client that exits 0 only when its message came back.
SERVER = """
import socket, sys
s = socket.create_server((sys.argv[1], 0))
open(sys.argv[2] + ".tmp", "w").write(str(s.getsockname()[1]))
import os; os.rename(sys.argv[2] + ".tmp", sys.argv[2])
while True:
    c, _ = s.accept()
    c.sendall(c.recv(1024)); c.close()
"""
CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    c.sendall(b"ping"); sys.exit(0 if c.recv(1024) == b"ping" else 1)
except OSError:
    sys.exit(2)
"""


def _echo_server(cluster: NetnsCluster, host: Host, tmp_path: Path) -> int:
    port_file = tmp_path / f"port-{host.index}"
    cluster.spawn(host, [sys.executable, "-c", SERVER, host.ip, str(port_file)], tmp_path / "server.log")
    for _ in range(200):
        if port_file.exists():
            return int(port_file.read_text())
        time.sleep(0.05)
    raise TimeoutError(f"echo server in {host.namespace} did not start")


def _reach(host: Host, ip: str, port: int, timeout: float = 3.0) -> int:
    argv = ["ip", "netns", "exec", host.namespace, sys.executable, "-c", CLIENT, ip, str(port), str(timeout)]
    return subprocess.run(argv, check=False, timeout=60).returncode


def test_hosts_reach_each_other_and_partitions_cut_and_heal(netns3: NetnsCluster, tmp_path: Path) -> None:
    ns0, ns1, ns2 = netns3.hosts
    port = _echo_server(netns3, ns0, tmp_path)
    assert _reach(ns1, ns0.ip, port) == 0
    assert _reach(ns2, ns0.ip, port) == 0

    netns3.partition(ns1, ns0.ip)
    assert _reach(ns1, ns0.ip, port, timeout=1.5) == 2, "the partition let traffic through"
    assert _reach(ns2, ns0.ip, port) == 0, "the partition cut an unrelated host"

    netns3.heal(ns1)
    assert _reach(ns1, ns0.ip, port) == 0


def test_teardown_removes_namespaces_links_and_processes(tmp_path: Path) -> None:
    require_netns()
    with NetnsCluster(2) as cluster:
        _echo_server(cluster, cluster.hosts[0], tmp_path)
        server = cluster.processes[0]
        names = [h.namespace for h in cluster.hosts]
        links = [cluster.bridge, *(h.veth for h in cluster.hosts)]
    assert server.poll() is not None
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not any(name in listed for name in names)
    all_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert not any(f" {link}" in all_links for link in links)


async def test_delay_proxy_forwards_both_directions_intact() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    payload = bytes(range(256)) * 2048  # 512 KiB: many chunks, order must be kept
    try:
        async with DelayProxy("127.0.0.1", port, delay=0.05) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
            received = await asyncio.wait_for(reader.read(-1), timeout=30)
            writer.close()
            await writer.wait_closed()
            assert received == payload
            assert proxy.connections == 1
    finally:
        server.close()
        await server.wait_closed()
