"""Where a big workflow's memory goes in the controller, phase by phase (in one process, no gRPC).

::

    python -m bench.memphases                      # 200 layers x 1,000 tasks (the rss workload's shape)
    python -m bench.memphases --layers 20 --top 15 # smaller, with more allocation sites per phase
    python -m bench.memphases --chunked --rss-only # the tasks as the SDK uploads them (AppendTasks)

Replays what the controller does with a submission, with tracemalloc on: the request's bytes are
decoded (``pb.WorkflowSpec``; with ``--chunked``, the upload's chunk encodings, decoded one at a
time as the controller's seal does), admitted (validation and records), submitted to a real core
(:class:`~corral.controller.core.machine.Machine`), the tick's :class:`ChangeBatch` committed to a
real SQLite file, then run to the end by the simulator's agents (zero overhead, every change
committed to the same file, as the runtime does). For each phase it prints the memory the phase
added (traced by Python's allocator), the peak within the phase, the process's RSS, and the
allocation sites that grew most. Not a test and not a bench figure: a tool to find what to shrink.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import multiprocessing
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from corral.controller.core import events as ev
from corral.controller.core.machine import Machine
from corral.controller.heaptrim import malloc_trim
from corral.controller.rpc import wire
from corral.controller.rpc.chunks import StagedTasks, task_part
from corral.controller.rpc.submission import admit_workflow
from corral.controller.rpc.wire_spec import spec_header_to_proto, spec_to_proto
from corral.controller.sdk.chunking import CHUNK_BYTES, CHUNK_TASKS, build_submission
from corral.controller.sim.engine import Simulator
from corral.controller.sim.fleet import Fleet
from corral.controller.store.base import ChangeBatch
from corral.controller.store.sqlite import SqliteStore
from corral.v1 import orchestrator_pb2
from corral.v1 import types_pb2 as pb

__all__ = ["main"]

MIB = 1024 * 1024


def _rss(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Phases:
    """Prints one line per phase: traced memory added, the phase's traced peak, RSS; top sites."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.began = time.perf_counter()
        if not tracemalloc.is_tracing():
            return
        gc.collect()
        self.snapshot = tracemalloc.take_snapshot()
        self.current = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()

    def mark(self, label: str) -> None:
        took = time.perf_counter() - self.began
        gc.collect()
        if not tracemalloc.is_tracing():
            print(f"== {label}: RSS {_rss():.0f} MiB, peak so far {_rss('VmHWM'):.0f} MiB, {took:.1f} s", flush=True)
            self.began = time.perf_counter()
            return
        current, peak = tracemalloc.get_traced_memory()
        snapshot = tracemalloc.take_snapshot()
        print(
            f"== {label}: {(current - self.current) / MIB:+.1f} MiB traced (now {current / MIB:.1f}), "
            f"peak in phase {peak / MIB:.1f} MiB, RSS {_rss():.0f} MiB, {took:.1f} s",
            flush=True,
        )
        for stat in snapshot.compare_to(self.snapshot, "lineno")[: self.top]:
            if abs(stat.size_diff) < MIB / 4:
                break
            frame = stat.traceback[0]
            name = "/".join(Path(frame.filename).parts[-2:])
            print(f"   {stat.size_diff / MIB:+8.1f} MiB {stat.count_diff:+9d} blocks  {name}:{frame.lineno}")
        self.snapshot = snapshot
        self.current = current
        tracemalloc.reset_peak()
        self.began = time.perf_counter()


def _spec_bytes(layers: int, width: int, seed: int) -> bytes:
    from bench.workloads import rss

    return spec_to_proto(rss.spec(layers, width, seed)).SerializeToString()  # type: ignore[arg-type]


def _chunk_parts(layers: int, width: int, seed: int) -> tuple[bytes, list[bytes]]:
    """The header and the chunks' encoded tasks, as the SDK uploads them and staging keeps them."""
    from bench.workloads import rss

    spec: Any = rss.spec(layers, width, seed)
    request = orchestrator_pb2.SubmitWorkflowRequest(spec=spec_header_to_proto(spec))
    chunks = build_submission(request, spec.tasks, CHUNK_TASKS, CHUNK_BYTES) or []
    return request.spec.SerializeToString(), [task_part(chunk) for chunk in chunks]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memphases", description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=200)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--top", type=int, default=8, help="allocation sites shown per phase")
    parser.add_argument("--frames", type=int, default=1, help="tracemalloc frames per allocation")
    parser.add_argument("--rss-only", action="store_true", help="no tracemalloc: RSS and its peak per phase (fast)")
    parser.add_argument("--submit-only", action="store_true", help="stop after the submission's commit")
    parser.add_argument("--chunked", action="store_true", help="tasks in upload chunks, as the SDK sends 50k+")
    args = parser.parse_args(argv)

    count = args.layers * args.width
    parts: list[bytes] = []
    # Built in a child process: the SDK objects' garbage would stay in this process's heap (and
    # RSS), and the controller's phases could reuse it unseen.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        if args.chunked:
            data, parts = pool.submit(_chunk_parts, args.layers, args.width, args.seed).result()
        else:
            data = pool.submit(_spec_bytes, args.layers, args.width, args.seed).result()
    size = len(data) + sum(map(len, parts))
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here: the controller's phases only
    print(f"request: {size / MIB:.1f} MiB on the wire, {count} tasks in {len(parts) or 1} parts; RSS {_rss():.0f} MiB")
    if not args.rss_only:
        tracemalloc.start(args.frames)
    with tempfile.TemporaryDirectory(prefix="corral-memphases-") as tmp:
        store = SqliteStore(Path(tmp) / "controller.db", synchronous="OFF")  # the memory, not the fsyncs
        store.load()
        # Every step's changes committed to the store, as the runtime does.
        sim = Simulator(Fleet(agents=2, slots=1), default_duration_s=0.001, commit=store.commit)
        machine: Machine = sim.machine
        counter = itertools.count(1)
        new_id: Callable[[], str] = lambda: f"x{next(counter):08d}"  # noqa: E731
        phases = Phases(args.top)
        trim = malloc_trim()

        message = pb.WorkflowSpec.FromString(data)
        del data
        phases.mark("decode the request (pb.WorkflowSpec)")
        staged = StagedTasks(parts, count) if parts else None
        # As the controller does with a big workflow: admitted in a thread, then the C heap trimmed.
        with ThreadPoolExecutor(1) as thread:
            admitted = thread.submit(admit_workflow, message, new_id, task_messages=staged).result()
        phases.mark("admit in a thread (validate, build Task records, plan)")
        if trim is not None:
            trim()
            phases.mark("trim the C heap (malloc_trim)")
        del message
        phases.mark("drop the request message")
        workflow = admitted.workflow
        machine.handle(ev.SubmitWorkflow(workflow, admitted.tasks, start=True), sim.now)
        machine.tick(sim.now)
        phases.mark("core: submit + first tick")
        batch: ChangeBatch = machine.take_changes()
        store.commit(batch)
        phases.mark(f"commit the submission ({len(batch.tasks)} tasks, {len(batch.attempts)} attempts)")
        del batch, admitted
        for action in machine.take_actions():
            sim._act(action)
        phases.mark("drop the admitted records and the batch (core state alone)")
        if args.submit_only:
            store.close()
            return 0
        sim._deliver()
        stuck = sim._drive([workflow], sim.now, 64 * len(workflow.task_ids) + 1000)
        phases.mark(f"run to the end ({workflow.state}, {sim.steps} steps; includes the simulator's spans)")
        sim._spans.clear()
        phases.mark("drop the simulator's spans (core state of a finished workflow)")
        # What the wait answers with: every task's status, the results and the executed plan.
        result = wire.workflow_result(machine, workflow, sim.now)
        phases.mark("build the WorkflowResult (what wait returns)")
        wire_bytes = result.SerializeToString()
        phases.mark(f"serialize it ({len(wire_bytes) / MIB:.1f} MiB)")
        del result, wire_bytes
        phases.mark("drop the result")
        if stuck:
            print(f"stuck: {stuck}", file=sys.stderr)
        store.close()
    counts: dict[str, int] = {}
    for name in ("tasks", "attempts", "workflows", "dependents", "unfinished_deps", "by_name", "assign_order"):
        value = getattr(machine, name, None)
        if value is not None:
            counts[name] = len(value)
    print("core dicts:", ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
