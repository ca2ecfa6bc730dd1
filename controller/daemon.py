"""``corral controller``: run the controller until SIGTERM/SIGINT.

corral controller --listen 127.0.0.1:7070 --db /var/lib/corral/corral.db
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

from corral.controller.address_file import write_address
from corral.controller.core.machine import MachineConfig
from corral.controller.rpc.gateway import deliver
from corral.controller.runtime import Runtime
from corral.controller.server import build_server
from corral.controller.store.base import Store
from corral.controller.store.memory import MemoryStore
from corral.controller.store.sqlite import SqliteStore

__all__ = ["default_db_path", "main", "parse_args", "serve"]

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
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"], help="SQLite durability")
    parser.add_argument("--heartbeat-interval", type=float, default=2.0, help="seconds between agent heartbeats")
    parser.add_argument("--lease", type=float, default=15.0, help="an agent silent this long is lost")
    parser.add_argument(
        "--adopt-grace", type=float, default=30.0, help="after a start: seconds agents have to reconnect"
    )
    parser.add_argument("--reconnect-grace", type=float, default=5.0, help="seconds for unreported attempts")
    parser.add_argument("--kill-grace", type=float, default=10.0, help="SIGTERM to SIGKILL grace for cancels")
    parser.add_argument("--prefetch", type=int, default=1, help="attempts queued per agent beyond its slots")
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
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    for name in ("heartbeat_interval", "lease", "adopt_grace", "reconnect_grace", "kill_grace", "assignment_lease"):
        value = getattr(args, name)
        if not math.isfinite(value) or value < 0:
            parser.error(f"--{name.replace('_', '-')} must be a finite number >= 0")
    if not math.isfinite(args.agent_ttl) or args.agent_ttl <= 0:
        parser.error("--agent-ttl must be a finite number of seconds > 0")
    if args.max_agents < 1:
        parser.error("--max-agents must be at least 1")
    if args.heartbeat_interval <= 0 or args.lease <= args.heartbeat_interval:
        parser.error("--lease must be longer than --heartbeat-interval, which must be > 0")
    return args


def _config(args: argparse.Namespace) -> MachineConfig:
    return MachineConfig(
        heartbeat_interval_s=args.heartbeat_interval,
        lease_s=args.lease,
        adopt_grace_s=args.adopt_grace,
        reconnect_grace_s=args.reconnect_grace,
        kill_grace_s=args.kill_grace,
        prefetch=max(0, args.prefetch),
        assignment_lease_s=args.assignment_lease,
        agent_ttl_s=args.agent_ttl,
        max_agents=args.max_agents,
    )


def _store(args: argparse.Namespace) -> tuple[Store, str]:
    if args.memory:
        return MemoryStore(), "memory"
    path: Path = args.db or default_db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteStore(path, synchronous=args.synchronous), str(path)


async def serve(args: argparse.Namespace) -> int:
    store, where = _store(args)
    runtime = Runtime(store, _config(args), encode_actions=deliver)
    await runtime.start()
    server = await build_server(runtime, args.listen)
    host = args.listen.rsplit(":", 1)[0]
    address = f"{host}:{server.port}"
    if args.address_file:
        write_address(args.address_file, address)
    log.info("corral controller listening on %s (state: %s)", address, where)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    failed = asyncio.ensure_future(_wait_failure(runtime))
    await asyncio.wait([asyncio.ensure_future(stop.wait()), failed], return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down")
    await server.stop(1.0)
    await runtime.stop()
    return 1 if runtime.failure is not None else 0


async def _wait_failure(runtime: Runtime) -> None:
    while runtime.failure is None:
        await asyncio.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The controller holds many long-lived records and allocates in bursts (a 20k-task submission);
    # the default thresholds would rescan the whole heap many times per burst.
    gc.set_threshold(100_000, 50, 1000)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(serve(args))
    except OSError as exc:
        print(f"corral controller: {exc}", file=sys.stderr)
        return 1
