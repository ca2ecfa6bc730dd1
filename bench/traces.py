"""Import WfCommons (WfFormat JSON) traces as corral workflows, and their makespan lower bound.

Ids and dependencies come from ``workflow.specification.tasks[]`` (``id``, ``parents``), durations
from ``workflow.execution.tasks[]`` (``runtimeInSeconds``). Each task becomes a python task
``bench_tasks:sleep(runtime * scale)`` with no resource requirements (see bench/README.md for why).
"""

from __future__ import annotations

import dataclasses
import graphlib
import json
import os
import re
from pathlib import Path

from bench.listsched import Dag
from corral.controller.spec import TaskSpec, WorkflowSpec

__all__ = ["DEFAULT_DIR", "ENV", "TRACES", "Trace", "load_trace", "trace_of", "traces_dir"]

# ../shared beside the repository (the traces and their licence live there, not in the repository).
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "workloads" / "wfcommons"
TRACES = (
    "blast-chameleon-small-003.json",
    "epigenomics-chameleon-hep-1seq-50k-001.json",
    "cycles-chameleon-2l-1c-9p-001.json",
    "seismology-chameleon-500p-001.json",
    "1000genome-chameleon-22ch-100k-001.json",
    "montage-chameleon-2mass-05d-001.json",
)
#: A folder holding the six traces, instead of DEFAULT_DIR.
ENV = "CORRAL_TRACES"
_BAD = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclasses.dataclass(frozen=True)
class Trace:
    """One trace as a workflow: scaled durations (s), parents by task id, and the workflow spec."""

    name: str
    durations: dict[str, float]
    parents: dict[str, list[str]]
    spec: WorkflowSpec

    @property
    def total_work_s(self) -> float:
        return sum(self.durations.values())

    def critical_path_s(self) -> float:
        """The longest path through the DAG, weighted by the scaled durations (a longest-path pass)."""
        finish: dict[str, float] = {}
        for task in graphlib.TopologicalSorter(self.parents).static_order():
            finish[task] = self.durations[task] + max((finish[p] for p in self.parents[task]), default=0.0)
        return max(finish.values())

    def lower_bound_s(self, slots: int) -> float:
        """max(critical path, total work / slots): no schedule on ``slots`` slots can beat it."""
        return max(self.critical_path_s(), self.total_work_s / slots)

    def dag(self) -> Dag:
        """The DAG with the scaled durations, for the list-schedule references."""
        return Dag.from_mapping(self.durations, self.parents)

    def durations_by_name(self) -> dict[str, float]:
        """Scaled runtimes by task name (the names in :attr:`spec`)."""
        return {task.name: d for task, d in zip(self.spec.tasks, self.durations.values(), strict=True)}

    def with_estimates(self) -> WorkflowSpec:
        """The same workflow (same name) with every task's ``estimated_duration`` set to its scaled runtime."""
        durations = list(self.durations.values())  # in file order, as the spec's tasks
        tasks = [
            task.model_copy(update={"estimated_duration": duration})
            for task, duration in zip(self.spec.tasks, durations, strict=True)
        ]
        return self.spec.model_copy(update={"tasks": tasks})


def traces_dir(environ: dict[str, str] | None = None) -> Path:
    """The folder of the six traces: ``$CORRAL_TRACES`` when set, else :data:`DEFAULT_DIR`.

    Raises FileNotFoundError naming both places (and the missing files) when a trace is not there.
    """
    given = (os.environ if environ is None else environ).get(ENV, "")
    folder = Path(given).expanduser() if given else DEFAULT_DIR
    missing = [name for name in TRACES if not (folder / name).is_file()]
    if missing:
        where = (
            f"{ENV}={given}"
            if given
            else f"{DEFAULT_DIR} (the default: ../shared/workloads/wfcommons beside the repository)"
        )
        raise FileNotFoundError(
            f"the WfCommons traces are missing from {where}: {', '.join(missing)}; "
            f"put the six traces in {DEFAULT_DIR} or set {ENV} to a folder that holds them"
        )
    return folder


def _task_name(task_id: str) -> str:
    name = _BAD.sub("_", task_id)
    if not name[:1].isalnum():
        name = "t" + name
    return name[:128]


def load_trace(path: Path, scale: float) -> Trace:
    """Read one WfFormat file; each task sleeps ``runtimeInSeconds * scale``."""
    document = json.loads(path.read_text())
    wf = document["workflow"]
    runtimes = {t["id"]: float(t["runtimeInSeconds"]) * scale for t in wf["execution"]["tasks"]}
    specification = wf["specification"]["tasks"]
    parents = {t["id"]: list(t.get("parents", [])) for t in specification}
    missing = set(parents) - set(runtimes)
    if missing:
        raise ValueError(f"{path.name}: no runtime for {sorted(missing)[:3]}")
    return trace_of(path.stem, runtimes, parents)


def trace_of(name: str, runtimes: dict[str, float], parents: dict[str, list[str]]) -> Trace:
    """A trace from scaled runtimes and parents by task id (file order: ``parents``' order)."""
    names = {task_id: _task_name(task_id) for task_id in parents}
    if len(set(names.values())) != len(names):
        raise ValueError(f"{name}: task ids collide once made valid names")
    tasks = [
        TaskSpec(
            name=names[task_id],
            agent_type="python",
            payload={"function": "bench_tasks:sleep", "args": [runtimes[task_id]]},
            dependencies=[names[p] for p in parents[task_id]],
        )
        for task_id in parents
    ]
    spec = WorkflowSpec(name=_task_name(name), tasks=tasks)
    durations = {task_id: runtimes[task_id] for task_id in parents}
    return Trace(name=name, durations=durations, parents=parents, spec=spec)
