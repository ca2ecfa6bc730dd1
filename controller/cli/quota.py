"""``corral quota``: each namespace's running usage vs its quota, its weight and its dominant share.

corral quota
corral quota set team-a --weight 2 --max-cpu 16 --max-running 40
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import RenderableType
from rich.table import Table

from corral.controller.cli.common import DEFAULT, AddressOption, OutputFormat, OutputOption, call
from corral.controller.cli.output import emit
from corral.controller.sdk.admin_types import QuotaInfo
from corral.controller.sdk.client import Client

__all__ = ["app", "quota_table"]

app = typer.Typer(help="Fair share: namespace weights and quotas, usage and dominant shares.")


def _of(used: float, limit: float) -> str:
    return f"{used:g}" if not limit else f"{used:g}/{limit:g}"


def quota_table(rows: Sequence[QuotaInfo]) -> RenderableType:
    """The table `corral quota` prints: usage as used/limit (just used without a limit), shares."""
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    for column in ("NAMESPACE", "WEIGHT", "RUNNING", "CPU", "MEMORY_MB", "GPU", "DOMINANT", "WEIGHTED"):
        table.add_column(column, no_wrap=True)
    for r in rows:
        table.add_row(
            r.namespace,
            f"{r.weight:g}",
            _of(r.running, r.max_running),
            _of(r.cpu, r.max_cpu),
            _of(r.memory_mb, r.max_memory_mb),
            _of(r.gpu, r.max_gpu),
            f"{r.dominant_share:.3f}",
            f"{r.weighted_share:.3f}",
        )
    return table


@app.callback(invoke_without_command=True)
def quota_list(ctx: typer.Context, output: OutputOption = OutputFormat.table, address: AddressOption = DEFAULT) -> None:
    """Show every namespace's usage vs quota (used/limit), weight and dominant share."""
    if ctx.invoked_subcommand is not None:
        return

    async def action(client: Client) -> tuple[QuotaInfo, ...]:
        return await client.list_quotas()

    rows = call(address, action)

    emit([r.to_dict() for r in rows], output, lambda wide: quota_table(rows))


@app.command("set")
def quota_set(
    namespace: Annotated[str, typer.Argument(help="Namespace name.", show_default=False)],
    weight: Annotated[float, typer.Option("--weight", help="Fair-share weight (> 0).")] = 1.0,
    max_cpu: Annotated[float, typer.Option("--max-cpu", help="Running cpu cores (0: no limit).")] = 0.0,
    max_memory_mb: Annotated[int, typer.Option("--max-memory-mb", help="Running memory (0: no limit).")] = 0,
    max_gpu: Annotated[int, typer.Option("--max-gpu", help="Running GPUs (0: no limit).")] = 0,
    max_running: Annotated[int, typer.Option("--max-running", help="Running tasks (0: no limit).")] = 0,
    address: AddressOption = DEFAULT,
) -> None:
    """Set a namespace's weight and quotas (admin); unset limits are cleared."""

    async def action(client: Client) -> None:
        await client.set_quota(
            namespace,
            weight=weight,
            max_cpu=max_cpu,
            max_memory_mb=max_memory_mb,
            max_gpu=max_gpu,
            max_running=max_running,
        )

    call(address, action)
    print(f"namespace {namespace}: weight {weight:g}")
