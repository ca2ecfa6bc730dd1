"""Cluster commands: list agents, drain one."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.controller.cli.choices import agent_states
from corral.controller.cli.common import DEFAULT, AddressOption, OutputFormat, OutputOption, call
from corral.controller.cli.output import agents_view, emit
from corral.controller.sdk.client import Client
from corral.controller.sdk.types import AgentInfo

__all__ = ["agents", "drain"]


def agents(
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state",
            "-s",
            help="Only agents in this state (repeatable): connected, draining, lost, ...",
            callback=agent_states,
        ),
    ] = None,
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """List the agents the controller knows.

    JSON: a list of {agent_id, name, state, hostname, version, agent_types, labels, inventory {cpu_cores,
    memory_mb, disk_mb, network_bandwidth_mbps, gpu_count, gpus, custom_resources, slots}, allocated,
    usage {cpu_percent, memory_used_mb, load_1m, running_attempts, disk_free_mb}, running_attempts,
    connected_at, last_heartbeat}.
    """

    async def action(client: Client) -> tuple[AgentInfo, ...]:
        return await client.list_agents(states=state)

    rows = call(address, action)
    emit([row.to_dict() for row in rows], output, lambda wide: agents_view(rows, wide))


def drain(
    agent: Annotated[str, typer.Argument(help="Agent id, name or a unique prefix.", show_default=False)],
    grace: Annotated[
        float, typer.Option("--grace", min=0, help="Seconds running attempts may finish in (0: the default).")
    ] = 0.0,
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Drain an agent: assign it nothing new; its running attempts finish within the grace period."""

    async def action(client: Client) -> AgentInfo:
        return await client.drain_agent(agent, grace=grace)

    info = call(address, action)
    emit(info.to_dict(), output, lambda wide: agents_view([info], wide))
