"""The leader partitioned from PostgreSQL stops serving writes within its lease; a standby takes over.

Two controllers in two network namespaces reach the test's PostgreSQL through a TCP proxy on the
bridge. nftables in the leader's namespace then drops its traffic to the database (and only
that: the test still reaches its gRPC port). Checked: the old leader leaves SERVING before the
standby starts serving (never two leaders at once), both within a few lease ttls, and the new
leader takes writes. Needs root (namespaces, nftables); skips with the reason elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from corral.controller.address_file import wait_for_address
from tests.cluster.conftest import require_netns
from tests.cluster.netns import NFT_TABLE, DelayProxy, Host, NetnsCluster
from tests.ha.group import Controller, require_postgres_store, wait_until

TTL = 2.0


@contextlib.contextmanager
def proxy(target_port: int, listen_host: str) -> Iterator[int]:
    """A plain TCP forwarder ``listen_host:PORT`` -> ``127.0.0.1:target_port`` on a thread of its own."""
    loop = asyncio.new_event_loop()
    forwarder = DelayProxy("127.0.0.1", target_port, 0.0, listen_host=listen_host)
    loop.run_until_complete(forwarder.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield forwarder.port
    finally:
        asyncio.run_coroutine_threadsafe(forwarder.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def cut_from_database(host: Host, db_ip: str, db_port: int) -> None:
    """Drop the host's packets to and from the database port only (silence, like a cut cable)."""
    nft = ["ip", "netns", "exec", host.namespace, "nft"]
    rules = [
        ["add", "table", "inet", NFT_TABLE],
        *(
            ["add", "chain", "inet", NFT_TABLE, chain, f"{{ type filter hook {chain} priority 0; policy accept; }}"]
            for chain in ("input", "output")
        ),
        ["add", "rule", "inet", NFT_TABLE, "output", "ip", "daddr", db_ip, "tcp", "dport", str(db_port), "drop"],
        ["add", "rule", "inet", NFT_TABLE, "input", "ip", "saddr", db_ip, "tcp", "sport", str(db_port), "drop"],
    ]
    for rule in rules:
        done = subprocess.run([*nft, *rule], capture_output=True, text=True, check=False, timeout=30)
        assert done.returncode == 0, f"nft {' '.join(rule)}: {done.stderr}"


@pytest.mark.chaos
@pytest.mark.timeout(300)
def test_a_leader_cut_from_the_database_stops_before_a_standby_leads(tmp_path: Path, pg_dsn: str) -> None:
    require_postgres_store()
    require_netns()
    url = urlsplit(pg_dsn)
    with NetnsCluster(2) as cluster, proxy(int(url.port or 5432), cluster.bridge_ip) as port:
        dsn = urlunsplit(url._replace(netloc=f"{url.username}@{cluster.bridge_ip}:{port}"))
        controllers = []
        for host in cluster.hosts:
            directory = tmp_path / f"c{host.index}"
            directory.mkdir()
            argv = [sys.executable, "-m", "corral.controller", "--store", dsn, "--lease-ttl", f"{TTL:g}"]
            argv += ["--listen", f"{host.ip}:0", "--insecure", "--address-file", str(directory / "addr")]
            proc = cluster.spawn(host, argv, directory / "controller.log")
            address = wait_for_address(directory / "addr", exited=proc.poll)
            controllers.append((host, Controller(f"c{host.index}", directory, proc, address)))

        def serving() -> list[tuple[Host, Controller]]:
            return [(h, c) for h, c in controllers if c.serving()]

        ((leader_host, leader),) = wait_until(serving, 60, "one leader")
        ((_, standby),) = [(h, c) for h, c in controllers if c is not leader]
        cut_from_database(leader_host, cluster.bridge_ip, port)
        cut = time.monotonic()
        old_stopped = new_serving = None
        while new_serving is None:
            now = time.monotonic() - cut
            assert now < 3 * (TTL + 2), f"no take-over {now:.1f} s after the cut"
            if old_stopped is None and not leader.serving():
                old_stopped = time.monotonic() - cut
            if standby.serving():
                new_serving = time.monotonic() - cut
            time.sleep(0.05)
        print(f"old leader stopped {old_stopped} s after the cut; the standby served at {new_serving:.2f} s")
        # Never two leaders: the partitioned one had stopped before the standby served, within its lease.
        assert old_stopped is not None and old_stopped <= new_serving
        assert old_stopped < 1.5 * TTL
        task = {"name": "t", "agent_type": "shell", "payload": {"shell": "true"}}
        assert standby.submit({"name": "after-partition", "tasks": [task]})
