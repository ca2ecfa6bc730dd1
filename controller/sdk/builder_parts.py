"""Pieces of the workflow builder (:mod:`corral.controller.sdk.builder`): task options and conversions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from pydantic import ValidationError

from corral.controller.errors import InvalidArgument
from corral.controller.sdk.errors import InvalidArgumentError, Violation
from corral.controller.spec import ResourceSpec, TaskTypeName, format_loc

if TYPE_CHECKING:  # the options name the builder's handles; the builder imports this module
    from corral.controller.sdk.builder import Segment, TaskHandle

__all__ = ["Deadline", "TaskOptions"]


def _seconds(value: float | timedelta | None) -> float | None:
    return value.total_seconds() if isinstance(value, timedelta) else value


#: A deadline: seconds or a timedelta after the submit, a duration string ("10m"), an aware
#: datetime, or an RFC 3339 string with a zone.
Deadline = float | timedelta | datetime | str | None


def _deadline(value: Deadline) -> float | str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return value.total_seconds() if isinstance(value, timedelta) else value


def _from_pydantic(exc: ValidationError, prefix: str) -> list[Violation]:
    out = []
    for err in exc.errors(include_url=False):
        path = format_loc(tuple(err["loc"]))
        out.append(Violation(f"{prefix}.{path}" if path else prefix, str(err["msg"]).removeprefix("Value error, ")))
    return out


def _from_domain(exc: InvalidArgument) -> InvalidArgumentError:
    return InvalidArgumentError(exc.message, [(v.field, v.description) for v in exc.violations])


class TaskOptions(TypedDict, total=False):
    """Scheduling options every task accepts (see :class:`~corral.controller.spec.TaskSpec`)."""

    type: TaskTypeName
    resources: ResourceSpec | Mapping[str, Any] | None
    priority: int | None
    timeout: float | timedelta | None
    retries: int
    retry_backoff: float | timedelta
    depends_on: Iterable[TaskHandle | Segment | str]
    constraints: Mapping[str, str | Mapping[str, Any]] | None
    estimated_duration: float | timedelta
    on_disconnect: Literal["stop", "keep"]
    max_disconnect: float | timedelta | str | None
    max_agent_losses: int | None
    spread: str | None
    affinity: Mapping[str, str] | None
    deadline: Deadline
    map_over: TaskHandle | str | None
    after_spawned: Iterable[TaskHandle | str]
    compensate: Mapping[str, Any] | None
    fallback: Mapping[str, Any] | None
    allow_failure: bool
    min_success: int | None
    cache: bool | Mapping[str, Any] | None
