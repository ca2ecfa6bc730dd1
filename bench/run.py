"""Run the corral benchmarks against a real controller and real agents on loopback.

::

    python -m bench.run                      # every workload once (make bench)
    python -m bench.run --only noop,dag      # a subset
    python -m bench.run --runs 3             # repeat, report medians
    python -m bench.run --store postgresql   # noop, roundtrip, dag on a throwaway PostgreSQL (keys *_pg)

Prints a table, then as its last line one JSON object with every figure measured.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from rich.console import Console
from rich.table import Table

from bench.workloads import Result

__all__ = ["FIGURES", "WORKLOADS", "main"]

#: workload name -> module under bench.workloads, in the order they run.
WORKLOADS: dict[str, str] = {
    "noop": "bench.workloads.noop",
    "noop_tls": "bench.workloads.noop_tls",
    "roundtrip": "bench.workloads.roundtrip",
    "dag": "bench.workloads.dag",
    "sleep": "bench.workloads.sleep",
    "plan": "bench.workloads.plan",
    "traces": "bench.workloads.traces",
    "best_list": "bench.workloads.best_list",
    "sim": "bench.workloads.sim",
    "deadline": "bench.workloads.deadline",
    "heartbeat": "bench.workloads.heartbeat",
    "preempt": "bench.workloads.preempt",
    "fair": "bench.workloads.fair",
    "failover": "bench.workloads.failover",
    "rss": "bench.workloads.rss",
}

#: The workloads ``--store postgresql`` runs by default (the store's throughput and latency).
PG_WORKLOADS = ("noop", "roundtrip", "dag")

#: figure -> (workload, unit, target, True when higher is better)
FIGURES: dict[str, tuple[str, str, float, bool]] = {
    "noop_tasks_per_s": ("noop", "tasks/s", 2500, True),
    "noop_tls_tasks_per_s": ("noop_tls", "tasks/s", 2500, True),
    "noop_tls_ratio": ("noop_tls", "", 0.85, True),
    "roundtrip_p50_ms": ("roundtrip", "ms", 2, False),
    "roundtrip_p99_ms": ("roundtrip", "ms", 6, False),
    "dag_tasks_per_s": ("dag", "tasks/s", 2500, True),
    "sleep_efficiency": ("sleep", "", 0.97, True),
    "controller_peak_rss_mib": ("noop", "MiB", 150, False),
    "plan_100k_s": ("plan", "s", 5, False),
    "trace_makespan_ratio": ("traces", "", 1.15, False),
    "trace_vs_best_list": ("best_list", "", 1.03, False),
    "trace_vs_best_list_learned": ("best_list", "", 1.05, False),
    "trace_vs_best_list_cold": ("best_list", "", 1.10, False),
    "sim_vs_best_list": ("sim", "", 1.03, False),
    "sim_vs_best_list_learned": ("sim", "", 1.05, False),
    "sim_vs_best_list_cold": ("sim", "", 1.10, False),
    "deadline_hit_rate": ("deadline", "", 0.8, True),
    "deadline_hit_rate_fifo": ("deadline", "", 0.0, True),  # the comparison: no target of its own
    "deadline_hit_rate_gain": ("deadline", "", 0.15, True),
    "agents_1000_heartbeat_cpu": ("heartbeat", "cores", 0.25, False),
    "preempt_start_s": ("preempt", "s", 2.0, False),
    "fair_jain": ("fair", "", 0.95, True),
    "failover_s": ("failover", "s", 5, False),
    "rss_200k_peak_mib": ("rss", "MiB", 350, False),
    "rss_after_idle_mib": ("rss", "MiB", 120, False),
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Run corral's benchmarks (a fresh controller and agents per workload) and print the figures.",
    )
    parser.add_argument(
        "--only",
        default="",
        metavar="W[,W]",
        help=f"comma-separated workloads to run (default: all): {', '.join(WORKLOADS)}",
    )
    parser.add_argument("--runs", type=int, default=1, help="repeat every workload N times and report medians")
    parser.add_argument(
        "--store",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="the controllers' store; postgresql starts a throwaway durable server, runs "
        f"{','.join(PG_WORKLOADS)} unless --only says otherwise, and suffixes every figure with _pg",
    )
    args = parser.parse_args(argv)
    default = list(PG_WORKLOADS) if args.store == "postgresql" else list(WORKLOADS)
    selected = [w.strip() for w in args.only.split(",") if w.strip()] or default
    unknown = [w for w in selected if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads: {', '.join(unknown)} (choose from {', '.join(WORKLOADS)})")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.selected = [w for w in WORKLOADS if w in selected]
    return args


def _format(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


async def _run_all(selected: list[str], runs: int, console: Console) -> tuple[dict[str, list[float]], list[Result]]:
    samples: dict[str, list[float]] = {}
    last: list[Result] = []
    for run_index in range(runs):
        last = []
        for name in selected:
            module = importlib.import_module(WORKLOADS[name])
            workload: Callable[[], Awaitable[Result]] = module.run
            began = time.perf_counter()
            try:
                result = await workload()
            except Exception as exc:  # one failing workload must not cost the others' figures
                console.print(f"[run {run_index + 1}/{runs}] {name}: FAILED: {exc!r}", markup=False)
                last.append(Result(figures={}, details=[(f"{name}: failed", repr(exc)[:200])]))
                continue
            took = time.perf_counter() - began
            figures = ", ".join(f"{k}={_format(v)}" for k, v in result.figures.items())
            console.print(f"[run {run_index + 1}/{runs}] {name}: {figures} ({took:.1f} s with setup)", markup=False)
            result.details.append((f"{name}: workload wall time incl. setup", f"{took:.1f} s"))
            last.append(result)
            for key, value in result.figures.items():
                samples.setdefault(key, []).append(value)
    return samples, last


def _on_postgresql(args: argparse.Namespace, console: Console) -> tuple[dict[str, list[float]], list[Result]]:
    """The workloads against controllers on a throwaway durable PostgreSQL (fsync on), one database each."""
    from bench.cluster import use_store
    from tests.pgserver import running_server

    with running_server(durable=True) as server:
        console.print(f"PostgreSQL at {server.dsn()} (durable: fsync on)", markup=False)
        use_store(server.create_database)
        try:
            return asyncio.run(_run_all(args.selected, args.runs, console))
        finally:
            use_store(None)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
    began = time.perf_counter()
    if args.store == "postgresql":
        samples, last = _on_postgresql(args, console)
    else:
        samples, last = asyncio.run(_run_all(args.selected, args.runs, console))
    figures = {key: statistics.median(values) for key, values in samples.items()}
    if "noop_tasks_per_s" in figures and "noop_tls_tasks_per_s" in figures:
        # TLS throughput over plaintext throughput (the medians): the cost of TLS on the wire.
        figures["noop_tls_ratio"] = figures["noop_tls_tasks_per_s"] / figures["noop_tasks_per_s"]
    ordered = {key: figures[key] for key in FIGURES if key in figures}
    if args.store == "postgresql":
        ordered = {f"{key}_pg": value for key, value in ordered.items()}

    table = Table(title=f"corral benchmarks ({args.runs} run{'s' if args.runs > 1 else ''}, medians)")
    table.add_column("figure")
    table.add_column("measured", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", justify="center")
    for key, value in ordered.items():
        _, unit, target, higher = FIGURES[key.removesuffix("_pg")]
        ok = value >= target if higher else value <= target
        sign = ">=" if higher else "<="
        table.add_row(key, f"{_format(value)} {unit}".strip(), f"{sign} {_format(target)}", "ok" if ok else "MISS")
    if args.runs > 1:
        for key, values in samples.items():
            table.add_row(f"  {key} (all runs)", ", ".join(_format(v) for v in values), "", "")
    details = Table(title="details (last run)")
    details.add_column("what")
    details.add_column("value")
    for result in last:
        for label, text in result.details:
            details.add_row(label, text)
    console.print(table)
    console.print(details)
    console.print(f"total wall time {time.perf_counter() - began:.1f} s")
    sys.stdout.flush()
    print(json.dumps({key: round(value, 4) for key, value in ordered.items()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
