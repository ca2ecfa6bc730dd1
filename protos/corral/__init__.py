"""corral: resource-aware DAG workflows on many machines, with durable state and no zombie tasks.

::

    import corral

    wf = corral.Workflow("etl")
    extract = wf.shell("extract", command=["./extract.sh"])
    load = wf.python("load", "etl.steps:load")
    extract >> load

    with corral.SyncClient("127.0.0.1:7070") as client:
        result = client.execute(wf)

The SDK names are loaded on first use (module ``__getattr__``), so importing ``corral.agent`` or
``corral.v1`` never pulls in the controller, pydantic models or the client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it
_LAZY: dict[str, str] = {
    "Client": "corral.controller.sdk.client",
    "SyncClient": "corral.controller.sdk.sync",
    "Workflow": "corral.controller.sdk.builder",
    "TaskHandle": "corral.controller.sdk.builder",
    "Segment": "corral.controller.sdk.builder",
    "WorkflowSpec": "corral.controller.spec",
    "TaskSpec": "corral.controller.spec",
    "ResourceSpec": "corral.controller.spec",
    "AgentInfo": "corral.controller.sdk.types",
    "Assignment": "corral.controller.sdk.types",
    "DependencyAnalysis": "corral.controller.sdk.types",
    "ExecutionPlan": "corral.controller.sdk.types",
    "Explanation": "corral.controller.sdk.types",
    "LogChunk": "corral.controller.sdk.types",
    "Stage": "corral.controller.sdk.types",
    "Submission": "corral.controller.sdk.types",
    "TaskStatus": "corral.controller.sdk.types",
    "WorkflowEvent": "corral.controller.sdk.types",
    "WorkflowResult": "corral.controller.sdk.types",
    "WorkflowStatus": "corral.controller.sdk.types",
    "WorkflowSummary": "corral.controller.sdk.types",
    "CorralError": "corral.controller.sdk.errors",
    "AlreadyExistsError": "corral.controller.sdk.errors",
    "DeadlineExceededError": "corral.controller.sdk.errors",
    "FailedPreconditionError": "corral.controller.sdk.errors",
    "InvalidArgumentError": "corral.controller.sdk.errors",
    "NotFoundError": "corral.controller.sdk.errors",
    "PermissionDeniedError": "corral.controller.sdk.errors",
    "ResourceExhaustedError": "corral.controller.sdk.errors",
    "UnauthenticatedError": "corral.controller.sdk.errors",
    "UnavailableError": "corral.controller.sdk.errors",
}

__all__ = [
    "AgentInfo",
    "AlreadyExistsError",
    "Assignment",
    "Client",
    "CorralError",
    "DeadlineExceededError",
    "DependencyAnalysis",
    "ExecutionPlan",
    "Explanation",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "LogChunk",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "ResourceSpec",
    "Segment",
    "Stage",
    "Submission",
    "SyncClient",
    "TaskHandle",
    "TaskSpec",
    "TaskStatus",
    "UnauthenticatedError",
    "UnavailableError",
    "Workflow",
    "WorkflowEvent",
    "WorkflowResult",
    "WorkflowSpec",
    "WorkflowStatus",
    "WorkflowSummary",
    "__version__",
]

if TYPE_CHECKING:
    from corral.controller.sdk.builder import Segment, TaskHandle, Workflow
    from corral.controller.sdk.client import Client
    from corral.controller.sdk.errors import (
        AlreadyExistsError,
        CorralError,
        DeadlineExceededError,
        FailedPreconditionError,
        InvalidArgumentError,
        NotFoundError,
        PermissionDeniedError,
        ResourceExhaustedError,
        UnauthenticatedError,
        UnavailableError,
    )
    from corral.controller.sdk.sync import SyncClient
    from corral.controller.sdk.types import (
        AgentInfo,
        Assignment,
        DependencyAnalysis,
        ExecutionPlan,
        Explanation,
        LogChunk,
        Stage,
        Submission,
        TaskStatus,
        WorkflowEvent,
        WorkflowResult,
        WorkflowStatus,
        WorkflowSummary,
    )
    from corral.controller.spec import ResourceSpec, TaskSpec, WorkflowSpec


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'corral' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
