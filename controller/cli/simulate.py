"""``corral simulate``: replay a workflow file on simulated agents with the real scheduler, offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from corral.controller.cli.common import (
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_UNSCHEDULABLE,
    die,
    err_console,
    load_spec,
    out_console,
)
from corral.controller.errors import InvalidArgument
from corral.controller.sim import Fleet, SimulationError, Simulator, parse_shape
from corral.controller.sim.render import agent_rows, gantt, summary_lines, to_dict

__all__ = ["MAX_RUNS", "simulate"]

MAX_RUNS = 10


def _fleet(
    agents: str, types: list[str] | None, used: list[str], cpu: float | None, memory: int | None, gpus: int
) -> Fleet:
    count, slots = parse_shape(agents)
    agent_types = tuple(dict.fromkeys(types)) if types else tuple(dict.fromkeys(used))
    return Fleet(count, slots, agent_types=agent_types, cpu_cores=cpu, memory_mb=memory, gpus=gpus)


def simulate(
    file: Annotated[Path, typer.Argument(help="Workflow file (.yaml, .yml or .json).", show_default=False)],
    agents: Annotated[
        str, typer.Option("--agents", help="AGENTSxSLOTS: how many simulated agents, with how many slots each.")
    ] = "2x4",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON: the figures, per-agent use and every span.")
    ] = False,
    types: Annotated[
        list[str] | None,
        typer.Option("--type", help="Agent type the agents run (repeatable; default: every type the file uses)."),
    ] = None,
    cpu: Annotated[
        float | None, typer.Option("--cpu", help="CPU cores per agent (default: one per slot).", show_default=False)
    ] = None,
    memory: Annotated[
        int | None,
        typer.Option("--memory-mb", help="Memory per agent in MB (default: 4096 per slot).", show_default=False),
    ] = None,
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs per agent.")] = 0,
    default_duration: Annotated[
        float, typer.Option("--default-duration", help="Seconds a task without estimated_duration runs.")
    ] = 1.0,
    latency: Annotated[
        float,
        typer.Option(
            "--latency",
            help="Seconds each message between the controller and an agent takes, each way (0: no overhead; max 1).",
        ),
    ] = 0.0,
    runs: Annotated[
        int,
        typer.Option(
            "--runs",
            help=f"Run the workflow this many times (1-{MAX_RUNS}) on the same simulated controller and show the "
            "last: what the scheduler learns from earlier runs applies.",
        ),
    ] = 1,
) -> None:
    """Replay a workflow on simulated agents with the real scheduler and a virtual clock (no controller needed).

    Each task runs for its `estimated_duration` (else --default-duration). Prints the makespan, the
    bound max(critical path, work / slots) and a per-agent timeline. Exit 0 when the workflow
    completes, 1 when it fails (a task outlived its timeout and ran out of retries), 3 when some
    task can never be placed on these agents (the reasons are printed).

    JSON fields: workflow, source, state, agents, slots_per_agent, tasks, makespan_s, bound_s,
    critical_path_s, total_work_s, ratio, default_duration_tasks, stuck[] (task, reason),
    per_agent[] (agent, attempts, busy_s, utilisation), spans[] (workflow, agent, slot, task, attempt,
    start_s, end_s, outcome).
    """
    if not 1 <= runs <= MAX_RUNS:
        die(f"error: --runs must be between 1 and {MAX_RUNS}, got {runs}", EXIT_INVALID)
    spec = load_spec(file)
    try:
        fleet = _fleet(agents, types, [t.agent_type for t in spec.tasks], cpu, memory, gpus)
        simulator = Simulator(fleet, default_duration_s=default_duration, latency_s=latency)
        earlier: list[float] = []
        for _ in range(runs - 1):
            earlier.append(simulator.run(spec).makespan)
        result = simulator.run(spec)
    except InvalidArgument as exc:
        console = err_console()
        console.print("error: cannot simulate:", markup=False)
        for violation in exc.violations:
            console.print(f"  {violation}", markup=False)
        raise typer.Exit(EXIT_INVALID) from None
    except SimulationError as exc:
        die(f"error: {exc.message}", EXIT_ERROR)
    source = str(file)
    if as_json:
        data = to_dict(result, source)
        if earlier:
            data["earlier_makespans_s"] = [round(m, 6) for m in earlier]
        print(json.dumps(data, indent=2))
    else:
        console = out_console()
        lines = summary_lines(result, source)
        if earlier:
            lines.append(f"  runs      {runs}; earlier makespans: {', '.join(f'{m:.3f} s' for m in earlier)}")
        lines.append("")
        lines.append(f"{'agent':<10} {'attempts':>8} {'busy':>12} {'use':>6}")
        for name, count, busy, share in agent_rows(result)[:32]:
            lines.append(f"{name:<10} {count:>8} {busy:>10.3f} s {share:>6.1%}")
        if fleet.agents > 32:
            lines.append(f"... {fleet.agents - 32} more agents (--json)")
        chart = gantt(result)
        if chart:
            lines.append("")
            lines.extend(chart)
        for line in lines:
            console.print(line, markup=False, highlight=False)
    if result.state == "stuck":
        raise typer.Exit(EXIT_UNSCHEDULABLE)
    if result.state != "completed":
        raise typer.Exit(EXIT_ERROR)
