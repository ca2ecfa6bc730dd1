"""The package face ``corral``: its frozen public names, and lazy loading of the SDK."""

from __future__ import annotations

import json
import subprocess
import sys

import corral

EXPECTED = [
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


def test_all_is_frozen() -> None:
    # Changing the public surface must be deliberate: update this list with it.
    assert corral.__all__ == EXPECTED


def test_every_public_name_resolves() -> None:
    for name in corral.__all__:
        assert getattr(corral, name) is not None
    assert corral.Workflow is __import__("corral.controller.sdk", fromlist=["Workflow"]).Workflow
    assert isinstance(corral.__version__, str)


def _modules_after(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return list(json.loads(out))


def test_importing_the_agent_never_loads_controller_code() -> None:
    modules = _modules_after("import corral.agent")
    assert "corral" in modules and "corral.agent" in modules
    assert not [m for m in modules if m.startswith("corral.controller")]


def test_the_sdk_loads_on_first_use_only() -> None:
    assert not [m for m in _modules_after("import corral") if m.startswith("corral.controller")]
    assert "corral.controller.sdk.builder" in _modules_after("import corral; corral.Workflow")
