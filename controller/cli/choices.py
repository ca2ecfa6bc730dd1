"""Flag values checked by the CLI itself (issue 11): ``--state bogus`` fails before any call.

The choices come from the API's enums, so a state added to the protos is accepted without a change
here; the error lists them, as the controller's would.
"""

from __future__ import annotations

from typing import Any

import typer

from corral.v1 import types_pb2 as pb

__all__ = ["agent_states", "state_names", "workflow_states"]


def state_names(enum: Any, prefix: str) -> list[str]:
    """The lowercase names of an enum's values, without its UNSPECIFIED zero."""
    names = [value.name for value in enum.DESCRIPTOR.values]
    return [name.removeprefix(prefix).lower() for name in names if not name.endswith("UNSPECIFIED")]


def _check(values: list[str] | None, enum: Any, prefix: str) -> list[str] | None:
    if not values:
        return values
    known = state_names(enum, prefix)
    for value in values:
        if value.lower() not in known:
            raise typer.BadParameter(f"unknown state {value!r} (one of {', '.join(known)})")
    return [value.lower() for value in values]


def workflow_states(values: list[str] | None) -> list[str] | None:
    """Callback of ``--state`` on workflow listings."""
    return _check(values, pb.WorkflowState, "WORKFLOW_STATE_")


def agent_states(values: list[str] | None) -> list[str] | None:
    """Callback of ``--state`` on agent listings."""
    return _check(values, pb.AgentState, "AGENT_STATE_")
