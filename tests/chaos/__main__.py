"""``python -m tests.chaos``: run the fault scenarios and print the table (``make chaos``).

Each scenario runs in its own subprocess (``--one NAME``), up to ``--jobs`` at once: scenarios
are independent (own controller, agents, namespaces and ledger), and a wedged one is killed at
``--scenario-timeout`` without taking the others down. Exit status 1 when any scenario failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.chaos.invariants import Row, format_table
from tests.chaos.requirements import why_skip
from tests.chaos.scenarios import FAST_TIMINGS, SCENARIOS, Scenario

__all__ = ["main"]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    parser.add_argument("--fast", action="store_true", help="the fast subset with short timings (as in make test)")
    parser.add_argument("--jobs", type=int, default=3, help="scenarios run at once (default 3)")
    parser.add_argument("--scenario-timeout", type=float, default=600.0, help="seconds before one is killed")
    parser.add_argument("--dir", type=Path, default=None, help="keep logs and ledgers here (default: a tmp dir)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_one(scenario: Scenario, directory: Path, fast: bool) -> Row:
    """Run ``scenario`` in this process (skipping it, with the reason, when the machine cannot)."""
    reason = why_skip(scenario)
    if reason:
        return Row(scenario.name, skipped=reason)
    started = time.monotonic()
    try:
        row = scenario.run(directory, FAST_TIMINGS if fast else scenario.timings)
    except Exception as exc:  # a harness step timed out or the cluster did not start: a failed row
        row = Row(scenario.name, failures=[f"{type(exc).__name__}: {exc}"[:2000]])
    row.duration_s = time.monotonic() - started
    return row


def _in_subprocess(scenario: Scenario, root: Path, fast: bool, timeout: float) -> Row:
    directory = root / scenario.name
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / "row.json"
    argv = [sys.executable, "-m", "tests.chaos", "--one", scenario.name, "--json", str(out), "--dir", str(directory)]
    if fast:
        argv.append("--fast")
    started = time.monotonic()
    with (directory / "runner.log").open("wb") as log:
        try:
            subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return Row(scenario.name, failures=[f"killed after {timeout:g} s"], duration_s=timeout)
    if not out.exists():
        tail = (directory / "runner.log").read_text(errors="replace")[-1500:]
        return Row(scenario.name, failures=[f"no result; log tail:\n{tail}"], duration_s=time.monotonic() - started)
    data = json.loads(out.read_text())
    return Row(**data)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    by_name = {s.name: s for s in SCENARIOS}
    if args.list:
        for s in SCENARIOS:
            print(f"{s.name:22} {'fast' if s.fast else 'long'}  needs: {', '.join(s.needs) or '-'}")
        return 0
    if args.one:
        directory = args.dir or Path(tempfile.mkdtemp(prefix="chaos-"))
        row = run_one(by_name[args.one], directory, args.fast)
        if args.json:
            args.json.write_text(json.dumps(row.to_json()))
        print(format_table([row]))
        return 0 if row.ok or row.skipped else 1
    names = [n for n in args.only.split(",") if n] or [s.name for s in SCENARIOS if s.fast or not args.fast]
    unknown = sorted(set(names) - by_name.keys())
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    root = args.dir or Path(tempfile.mkdtemp(prefix="corral-chaos-"))
    print(f"chaos: {len(names)} scenario(s), {args.jobs} at a time; logs in {root}", flush=True)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(_in_subprocess, by_name[n], root, args.fast, args.scenario_timeout) for n in names]
        rows = []
        for future in futures:
            row = future.result()
            rows.append(row)
            print(f"  {row.scenario}: {'skip' if row.skipped else 'ok' if row.ok else 'FAIL'}", flush=True)
    print(format_table(rows))
    print(f"total {time.monotonic() - started:.0f} s")
    return 0 if all(r.ok or r.skipped for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
