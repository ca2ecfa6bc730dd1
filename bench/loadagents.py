"""Simulated agents: many ``AgentGateway.Connect`` streams from one process, to load the controller.

::

    python -m bench.loadagents --controller 127.0.0.1:7070 --agents 1000 --channels 10

Each simulated agent (``agent-0000`` ...) opens a stream, sends a Hello with a small inventory,
waits for its Welcome and then sends ``Heartbeat{usage}`` every ``heartbeat_interval_s`` the Welcome
gives, then the latest echo's, as the controller paces a growing fleet (the first one at a random
offset within the interval, so they do not all fire at once, as with agents started at different
times). Whatever else the controller sends is read and ignored.
A stream that fails before its Welcome is opened again (after a random pause of up to 5 s), as a
real agent reconnects; so is a stream that breaks later (a ``drop``). The counts are printed
with ``ready`` and at the end. ``--rate R`` starts R agents a second
instead of all at once (a fleet coming up rather than a reconnect storm).
Once every agent has its Welcome the process prints ``ready N reconnects M`` on stdout; it runs until SIGTERM
or SIGINT, then closes its streams and prints ``heartbeats N`` (how many it sent).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys

import grpc
import grpc.aio

from corral.v1 import agent_pb2, agent_pb2_grpc, types_pb2

__all__ = ["main"]

RECONNECT_MAX_S = 5.0
HEARTBEAT = agent_pb2.AgentMessage(
    heartbeat=agent_pb2.Heartbeat(
        usage=types_pb2.Usage(cpu_percent=1.0, memory_used_mb=100, load_1m=0.1, disk_free_mb=10_000)
    )
)


class Load:
    def __init__(self, address: str, agents: int, channels: int, seed: int, rate: float = 0.0) -> None:
        self.address = address
        self.agents = agents
        self.channels = channels
        self.rng = random.Random(seed)
        self.welcomed = 0
        self.heartbeats = 0
        self.reconnects = 0
        self.drops = 0  # streams that broke after their Welcome (and were reopened)
        self.rate = rate  # agents started per second (0: all at once)
        self.reconnect_causes: dict[str, int] = {}
        self.failures: list[str] = []
        self.all_welcomed = asyncio.Event()
        self.stop = asyncio.Event()

    def hello(self, name: str) -> agent_pb2.AgentMessage:
        inventory = types_pb2.Inventory(cpu_cores=1, memory_mb=1024, disk_mb=10_240, slots=1)
        hello = agent_pb2.Hello(
            agent_id=name,
            name=name,
            hostname="bench-load",
            agent_types=["python"],
            labels={"bench": "load"},
            inventory=inventory,
            version="bench",
        )
        return agent_pb2.AgentMessage(hello=hello)

    async def _open(
        self, stub: agent_pb2_grpc.AgentGatewayStub, name: str
    ) -> tuple[grpc.aio.StreamStreamCall, agent_pb2.ControllerMessage]:
        """Open the stream and get the Welcome; a stream that fails first is opened again (after a
        random pause growing to RECONNECT_MAX_S), as a real agent does, until the process stops.

        Under a burst of thousands of Hellos the controller falls behind: writes on new streams
        fail (INTERNAL "Internal error from Core") and streams whose Hello it has not read in 30 s
        are cancelled. The causes are counted and printed."""
        attempt = 0
        while True:
            attempt += 1
            call = stub.Connect()
            try:
                await call.write(self.hello(name))
                first = await call.read()
            except grpc.aio.AioRpcError as exc:
                call.cancel()
                if self.stop.is_set():
                    raise
                self.reconnects += 1
                why = f"{exc.code().name} {exc.details()}"[:80]
                self.reconnect_causes[why] = self.reconnect_causes.get(why, 0) + 1
                await asyncio.sleep(self.rng.uniform(0.5, 1.0) * min(RECONNECT_MAX_S, 0.5 * attempt))
                continue
            if first is grpc.aio.EOF or not first.HasField("welcome"):
                call.cancel()
                raise RuntimeError(f"{name}: expected a Welcome, got {first!r}")
            return call, first

    async def agent(self, stub: agent_pb2_grpc.AgentGatewayStub, name: str, delay: float = 0.0) -> None:
        """One simulated agent: connect, heartbeat; a stream that breaks is reopened (a ``drop``)."""
        welcomed = False
        try:
            if delay:
                await asyncio.sleep(delay)
            while True:
                call, first = await self._open(stub, name)
                if not welcomed:
                    welcomed = True
                    self.welcomed += 1
                    if self.welcomed == self.agents:
                        self.all_welcomed.set()
                try:
                    await self._beat(call, first.welcome.heartbeat_interval_s or 2.0)
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError):  # the stream ended
                    if self.stop.is_set():
                        return
                    # A real agent reconnects; the controller's ListAgents shows the gap, and the
                    # heartbeat workload fails if an agent is not connected at the window's end.
                    self.drops += 1
                finally:
                    call.cancel()
        except (grpc.aio.AioRpcError, RuntimeError) as exc:
            if not self.stop.is_set():
                self.failures.append(f"{name}: {exc}")
                self.all_welcomed.set()  # unblock the waiter; it reports the failure

    async def _beat(self, call: grpc.aio.StreamStreamCall, interval: float) -> None:
        """Heartbeat on ``call`` until it fails (raises) or run() cancels this task."""
        pace = [interval]  # the Welcome's, then each echo's (the controller paces a big fleet)
        drain = asyncio.ensure_future(self._drain(call, pace))
        try:
            await asyncio.sleep(self.rng.uniform(0, interval))
            # One message, one plain sleep per beat: thousands of agents share this process's
            # core, and a wait_for (a task and a timer per beat) would starve them first.
            while True:
                await call.write(HEARTBEAT)
                self.heartbeats += 1
                await asyncio.sleep(pace[0])
        finally:
            drain.cancel()

    @staticmethod
    async def _drain(call: grpc.aio.StreamStreamCall, pace: list[float]) -> None:
        """Read (and drop) what the controller sends; an echo's interval is adopted, as agents do."""
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            while (message := await call.read()) is not grpc.aio.EOF:
                if message.HasField("heartbeat_ack") and message.heartbeat_ack.heartbeat_interval_s > 0:
                    pace[0] = message.heartbeat_ack.heartbeat_interval_s

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        # A local subchannel pool per channel: one TCP connection each, as separate agents have
        # (grpc otherwise shares one connection among all channels to one address).
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [grpc.aio.insecure_channel(self.address, options=options) for _ in range(self.channels)]
        stubs = [agent_pb2_grpc.AgentGatewayStub(c) for c in channels]
        tasks = [
            asyncio.ensure_future(
                self.agent(stubs[i % self.channels], f"agent-{i:04d}", i / self.rate if self.rate else 0.0)
            )
            for i in range(self.agents)
        ]
        await self.all_welcomed.wait()
        if self.failures:
            print(f"failed {len(self.failures)}: {self.failures[0]}", flush=True)
            self.stop.set()
        else:
            print(f"ready {self.welcomed} reconnects {self.reconnects}", flush=True)
        await self.stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close()
        print(
            f"heartbeats {self.heartbeats} reconnects {self.reconnects} {self.reconnect_causes} drops {self.drops}",
            flush=True,
        )
        return 1 if self.failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadagents", description=__doc__.splitlines()[0])
    parser.add_argument("--controller", required=True, metavar="HOST:PORT")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=0.0, help="agents started per second (default: all at once)")
    args = parser.parse_args(argv)
    return asyncio.run(Load(args.controller, args.agents, args.channels, args.seed, args.rate).run())


if __name__ == "__main__":
    sys.exit(main())
