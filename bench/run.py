"""Run the corral benchmarks against a real controller and real agents on loopback.

::

    python -m bench.run                      # every workload once (make bench)
    python -m bench.run --only noop,dag      # a subset
    python -m bench.run --runs 3             # repeat, report medians
    python -m bench.run --store postgresql   # noop, roundtrip, dag on a throwaway PostgreSQL (keys *_pg)
    python -m bench.run --tls --only noop    # with TLS + mutual TLS + auth only (keys *_tls)
    python -m bench.run --with-tls --only noop,roundtrip   # each plainly, then at once with TLS

By default every workload runs once, and noop, roundtrip and dag a second time with TLS, mutual TLS
and auth on (the table's TLS column; figures ``*_tls``).

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

from bench import report
from bench.cluster import use_tls
from bench.workloads import Result, tls_suffixed

__all__ = ["FIGURES", "PLAINTEXT_ONLY", "TLS_WORKLOADS", "WORKLOADS", "main", "run_order"]

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
    "heartbeat_5000": "bench.workloads.heartbeat_5000",
    "tasks_1m": "bench.workloads.tasks_1m",
}

#: The workloads ``--store postgresql`` runs by default (the store's throughput and latency).
PG_WORKLOADS = ("noop", "roundtrip", "dag")

#: The workloads ``make bench`` runs a second time with TLS + mutual TLS + auth (the TLS column).
TLS_WORKLOADS = ("noop", "roundtrip", "dag")

#: Not in a default run: ``noop_tls`` is the TLS column's noop, under its own name for ``--only``.
NOT_BY_DEFAULT = ("noop_tls",)

#: Workloads that have no TLS run, and why: ``--with-tls`` runs them plainly only, ``--tls`` refuses them.
PLAINTEXT_ONLY: dict[str, str] = {
    "heartbeat": "its simulated agents connect in plaintext (mutual TLS would need a certificate per agent)",
    "heartbeat_5000": "its simulated agents connect in plaintext (mutual TLS would need a certificate per agent)",
    "sim": "the simulator runs the core in process, with no network to encrypt",
}

#: figure -> (workload, unit, target or None, True when higher is better); issue 13's targets.
#: A figure measured with TLS (``*_tls``) is held to the same target (see bench.report.rows).
FIGURES: dict[str, report.Figure] = {
    "noop_tasks_per_s": ("noop", "tasks/s", 10_000, True),
    "noop_tls_ratio": ("noop_tls", "", report.TLS_RATIO_TARGET, True),
    "roundtrip_p50_ms": ("roundtrip", "ms", 1.2, False),
    "roundtrip_p99_ms": ("roundtrip", "ms", 2.5, False),
    "roundtrip_server_p50_ms": ("roundtrip", "ms", 0.4, False),
    "roundtrip_server_p99_ms": ("roundtrip", "ms", None, False),
    "dag_tasks_per_s": ("dag", "tasks/s", 7_000, True),
    "sleep_efficiency": ("sleep", "", 0.985, True),
    "controller_peak_rss_mib": ("noop", "MiB", 100, False),
    "plan_100k_s": ("plan", "s", 1.5, False),
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
    "agents_1000_heartbeat_cpu": ("heartbeat", "cores", 0.05, False),
    "preempt_start_s": ("preempt", "s", 2.0, False),
    "fair_jain": ("fair", "", 0.95, True),
    "failover_s": ("failover", "s", 5, False),
    "rss_200k_peak_mib": ("rss", "MiB", 350, False),
    "rss_after_idle_mib": ("rss", "MiB", 120, False),
    "agents_5000_heartbeat_cpu": ("heartbeat_5000", "cores", 0.25, False),
    "tasks_1m_s": ("tasks_1m", "s", None, False),
    "tasks_1m_peak_rss_mib": ("tasks_1m", "MiB", 1_536, False),
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
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument(
        "--tls",
        action="store_true",
        help="run the chosen workloads with TLS + mutual TLS + auth only; figures get the suffix _tls",
    )
    tls.add_argument(
        "--with-tls",
        action="store_true",
        help="run each chosen workload plainly, then at once with TLS (the default for "
        f"{','.join(TLS_WORKLOADS)} when neither --only nor --store is given; "
        f"{', '.join(PLAINTEXT_ONLY)} have no TLS run)",
    )
    args = parser.parse_args(argv)
    default = list(PG_WORKLOADS) if args.store == "postgresql" else [w for w in WORKLOADS if w not in NOT_BY_DEFAULT]
    selected = [w.strip() for w in args.only.split(",") if w.strip()] or default
    unknown = [w for w in selected if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads: {', '.join(unknown)} (choose from {', '.join(WORKLOADS)})")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.tls and (plain := [w for w in selected if w in PLAINTEXT_ONLY]):
        parser.error("; ".join(f"{w} has no TLS run: {PLAINTEXT_ONLY[w]}" for w in plain))
    args.selected = [w for w in WORKLOADS if w in selected]
    args.plan = run_order(
        args.selected, tls_only=args.tls, with_tls=args.with_tls, default=not args.only and args.store == "sqlite"
    )
    return args


def run_order(selected: list[str], *, tls_only: bool, with_tls: bool, default: bool) -> list[tuple[str, bool]]:
    """(workload, with TLS) in the order they run: a workload's TLS run right after its plain one.

    Back to back, so the TLS column and the plain one see the same load on a shared machine.
    """
    if tls_only:
        return [(name, True) for name in selected]
    twins = set(selected) if with_tls else set(TLS_WORKLOADS) if default else set()
    out: list[tuple[str, bool]] = []
    for name in selected:
        out.append((name, False))
        if name in twins and name not in NOT_BY_DEFAULT and name not in PLAINTEXT_ONLY:
            out.append((name, True))
    return out


async def _run_one(name: str, tls: bool) -> Result:
    module = importlib.import_module(WORKLOADS[name])
    workload: Callable[[], Awaitable[Result]] = module.run
    if not tls:
        return await workload()
    use_tls(True)
    try:
        return tls_suffixed(await workload())
    finally:
        use_tls(False)


async def _run_all(
    steps: list[tuple[str, bool]], runs: int, console: Console
) -> tuple[dict[str, list[float]], list[Result]]:
    samples: dict[str, list[float]] = {}
    last: list[Result] = []
    for run_index in range(runs):
        last = []
        for name, tls in steps:
            label = f"{name} (TLS)" if tls else name
            began = time.perf_counter()
            try:
                result = await _run_one(name, tls)
            except Exception as exc:  # one failing workload must not cost the others' figures
                console.print(f"[run {run_index + 1}/{runs}] {label}: FAILED: {exc!r}", markup=False)
                last.append(Result(figures={}, details=[(f"{label}: failed", repr(exc)[:200])]))
                continue
            took = time.perf_counter() - began
            figures = ", ".join(f"{k}={report.fmt(v)}" for k, v in result.figures.items())
            console.print(f"[run {run_index + 1}/{runs}] {label}: {figures} ({took:.1f} s with setup)", markup=False)
            result.details.append((f"{label}: workload wall time incl. setup", f"{took:.1f} s"))
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
            return asyncio.run(_run_all(args.plan, args.runs, console))
        finally:
            use_store(None)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
    began = time.perf_counter()
    if args.store == "postgresql":
        samples, last = _on_postgresql(args, console)
    else:
        samples, last = asyncio.run(_run_all(args.plan, args.runs, console))
    figures = report.add_tls_ratio({key: statistics.median(values) for key, values in samples.items()})
    store_suffix = report.PG_SUFFIX if args.store == "postgresql" else ""

    table = Table(title=f"corral benchmarks ({args.runs} run{'s' if args.runs > 1 else ''}, medians)")
    table.add_column("figure")
    table.add_column("measured", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", justify="center")
    table.add_column("with TLS+mTLS+auth (_tls)", justify="right")
    table.add_column("", justify="center")
    for row in report.rows(figures, FIGURES, store_suffix):
        table.add_row(*row)
    if args.runs > 1:
        for key, values in samples.items():
            table.add_row(f"  {key} (all runs)", ", ".join(report.fmt(v) for v in values), "", "", "", "")
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
    ordered = report.json_figures(figures, FIGURES, store_suffix)
    print(json.dumps({key: round(value, 4) for key, value in ordered.items()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
