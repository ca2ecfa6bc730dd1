"""Fleet commands (issue 11): ``corral agents`` (with ``agents rm``), ``corral cordon``, ``corral uncordon``."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.controller.cli import cluster
from corral.controller.cli.common import DEFAULT, AddressOption, OutputFormat, OutputOption, call, out_console
from corral.controller.cli.output import agents_view, emit
from corral.controller.sdk.client import Client
from corral.controller.sdk.fleet import RemovedAgent
from corral.controller.sdk.types import AgentInfo

__all__ = ["agents_app", "cordon", "register", "remove", "uncordon"]

AgentArgument = Annotated[str, typer.Argument(help="Agent id, name or a unique prefix.", show_default=False)]

agents_app = typer.Typer(invoke_without_command=True, no_args_is_help=False)


def register(app: typer.Typer, panel: str) -> None:
    """Add the fleet commands to the ``corral`` app."""
    app.add_typer(agents_app, name="agents", rich_help_panel=panel)
    app.command("cordon", rich_help_panel=panel)(cordon)
    app.command("uncordon", rich_help_panel=panel)(uncordon)


@agents_app.callback()
def agents(
    ctx: typer.Context,
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state", "-s", help="Only agents in this state (repeatable): connected, draining, drained, lost, ..."
        ),
    ] = None,
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """List the agents the controller knows; `corral agents rm AGENT` removes one that left.

    JSON: a list of {agent_id, name, state, hostname, version, agent_types, labels, inventory {cpu_cores,
    memory_mb, disk_mb, network_bandwidth_mbps, gpu_count, gpus, custom_resources, slots}, allocated,
    usage {cpu_percent, memory_used_mb, load_1m, running_attempts, disk_free_mb}, running_attempts,
    connected_at, last_heartbeat, cordoned, cordoned_by, cordoned_until, cordon_reason}.
    """
    if ctx.invoked_subcommand is None:
        cluster.agents(state=state, output=output, address=address)


def _show(info: AgentInfo, output: OutputFormat) -> None:
    emit(info.to_dict(), output, lambda wide: agents_view([info], wide))


def cordon(
    agent: AgentArgument,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (shown in `corral agents` and explain).")] = "",
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Cordon an agent: assign it nothing new until `corral uncordon`; its running attempts carry on.

    Who cordoned it and why are recorded and shown in `corral agents` and `corral explain`.
    """

    async def action(client: Client) -> AgentInfo:
        return await client.cordon_agent(agent, reason=reason)

    _show(call(address, action), output)


def uncordon(agent: AgentArgument, output: OutputOption = OutputFormat.table, address: AddressOption = DEFAULT) -> None:
    """End an agent's cordon, manual or automatic (the cordon on repeated failures): it takes work again."""

    async def action(client: Client) -> AgentInfo:
        return await client.uncordon_agent(agent)

    _show(call(address, action), output)


@agents_app.command("rm")
def remove(
    agent: AgentArgument,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Also remove a connected agent or one holding attempts: its stream is closed and its attempts "
            "are requeued now (a still-running agent comes back as a new record).",
        ),
    ] = False,
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Remove an agent that left (disconnected, drained or lost) from the controller's records.

    A connected agent is refused unless --force. Agents gone longer than the controller's
    --agent-ttl are removed automatically.
    """

    async def action(client: Client) -> RemovedAgent:
        return await client.remove_agent(agent, force=force)

    removed = call(address, action)
    if output.structured:
        emit(removed.to_dict(), output, lambda wide: agents_view([removed.agent], wide))
        return
    requeued = f"; {removed.requeued_attempts} attempts requeued" if removed.requeued_attempts else ""
    out_console().print(f"removed agent {removed.agent.name} ({removed.agent.agent_id}){requeued}", markup=False)
