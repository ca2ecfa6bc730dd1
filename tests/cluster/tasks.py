"""Python task functions run by agents in the multi-host tests (importable as ``tests.cluster.tasks``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["constant", "gather"]


def constant(value: Any) -> Any:
    """Return ``value`` unchanged: a task with a known result."""
    return value


def gather(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Return every dependency's result, keyed by dependency name, so the test can see what arrived."""
    return dict(inputs)
