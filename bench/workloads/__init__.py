"""One module per workload; each exposes ``async def run() -> Result``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from corral.controller.sdk.types import WorkflowResult
from corral.controller.spec import TaskSpec, WorkflowSpec

__all__ = [
    "TLS_SUFFIX",
    "Result",
    "check_completed",
    "noop_task",
    "peak_rss_mib",
    "python_task",
    "tls_suffixed",
    "workflow",
]

#: What the figures of a run with TLS + mutual TLS + auth end with (``noop_tasks_per_s_tls``).
TLS_SUFFIX = "_tls"


@dataclasses.dataclass
class Result:
    """What one workload measured: the JSON figures, and extra lines (label, value) for the table."""

    figures: dict[str, float]
    details: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def tls_suffixed(result: Result) -> Result:
    """The result of a run with TLS: every figure gets the ``_tls`` suffix (once), every detail a tag."""
    figures = {key if key.endswith(TLS_SUFFIX) else key + TLS_SUFFIX: value for key, value in result.figures.items()}
    details = [(label if label.startswith("(TLS) ") else f"(TLS) {label}", text) for label, text in result.details]
    return Result(figures=figures, details=details)


def python_task(name: str, function: str, args: Sequence[object], dependencies: Sequence[str] = ()) -> TaskSpec:
    """A python task with no resource requirements."""
    return TaskSpec(
        name=name,
        agent_type="python",
        payload={"function": function, "args": list(args)},
        dependencies=list(dependencies),
    )


def noop_task(i: int, dependencies: Sequence[str] = (), prefix: str = "t") -> TaskSpec:
    return python_task(f"{prefix}{i:06d}", "bench_tasks:noop", [i], dependencies)


def workflow(name: str, tasks: list[TaskSpec]) -> WorkflowSpec:
    """A validated spec, built before any timing starts (building it is the caller's work, not corral's)."""
    return WorkflowSpec(name=name, tasks=tasks)


def check_completed(result: WorkflowResult, tasks: int) -> None:
    """Fail loudly if the workflow did not complete every task: a figure of a failed run means nothing."""
    if result.state != "completed":
        raise RuntimeError(f"workflow {result.workflow_id} ended {result.state}: {result.error}")
    done = sum(1 for t in result.tasks if t.state == "completed")
    if result.tasks and done != tasks:
        raise RuntimeError(f"workflow {result.workflow_id}: {done} of {tasks} tasks completed")


def peak_rss_mib(pid: int, field: str = "VmHWM") -> float:
    """VmHWM (the peak resident set) of a live process, in MiB; ``field="VmRSS"`` for the current one."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for pid {pid}")
