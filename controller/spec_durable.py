"""The workflow file format's durable-workflow parts (issue 10): approvals, compensations, cache
policies and parameter defaults. Re-exported by :mod:`corral.controller.spec`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import (
    Field,
    PlainValidator,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from corral.controller.core.params import MAX_PARAM_TEXT
from corral.controller.spec_common import Limits, _finite, _plain_text, _Strict, control_character, parse_duration


class ApprovalSpec(_Strict):
    """An approval task's settings: how long it waits (then fails as ``approval_timeout``), and a message."""

    timeout: float | None = Field(None, description='seconds or "1h"; none: waits until answered')
    message: str = Field("", max_length=1024, description="shown to whoever is asked to approve")

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> Any:
        if value is None:
            return None
        seconds = parse_duration(value)
        if not 0 < seconds <= Limits.max_timeout_s:
            raise ValueError(f"timeout must be > 0 and <= max_timeout_s={Limits.max_timeout_s:g} seconds")
        return seconds

    @field_validator("message")
    @classmethod
    def _message(cls, value: str) -> str:
        problem = control_character(value, multiline=True)
        if problem:
            raise ValueError(problem)
        return value


class CompensateSpec(_Strict):
    """A task's compensation (issue 10, ``on_failure: compensate``): what undoes it, with its own
    retries. It runs with its task's agent type and resources and receives the task's result as
    the input ``task``; it has no dependencies of its own (the workflow's order, reversed)."""

    payload: dict[str, Any] = Field(min_length=1, description="as a task's payload, for the task's agent type")
    retries: int = Field(0, ge=0, le=Limits.max_retries)
    retry_backoff: float = Field(1.0, description="base of the exponential retry backoff, seconds")
    timeout: float | None = Field(None, description="seconds; none means no limit")

    @model_validator(mode="before")
    @classmethod
    def _no_dependencies(cls, data: Any) -> Any:
        if isinstance(data, dict) and "dependencies" in data:
            raise ValueError(
                "a compensation cannot have dependencies: compensations run in the reverse order of their tasks"
            )
        return data

    @field_validator("retry_backoff")
    @classmethod
    def _backoff(cls, value: float) -> float:
        return _finite(value, "seconds", Limits.max_timeout_s)

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float | None) -> float | None:
        if value is not None and (not math.isfinite(value) or not 0 < value <= Limits.max_timeout_s):
            raise ValueError(f"timeout must be a finite number of seconds > 0 and <= {Limits.max_timeout_s:g}")
        return value


class CacheSpec(_Strict):
    """A task's cache policy (``cache: true`` is ``cache: {}``): see README "Caching"."""

    key: str | None = Field(
        None, min_length=1, max_length=1024, description="the key text (default: hash of agent type, payload, inputs)"
    )
    ttl: float | None = Field(
        None, description='how long an entry is used: seconds or "10m", "1d" (default: no expiry)'
    )
    version: str = Field("", max_length=128, description="a new version never uses older entries")

    @field_validator("ttl", mode="before")
    @classmethod
    def _ttl(cls, value: Any) -> Any:
        if value is None:
            return None
        seconds = parse_duration(value)
        if not 0 < seconds <= Limits.max_cache_ttl_s:
            raise ValueError(f"ttl must be > 0 and <= max_cache_ttl_s={Limits.max_cache_ttl_s:g} seconds")
        return seconds

    @field_validator("key", "version")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return None if value is None else _plain_text(value)


def cache_shorthand(value: Any) -> Any:
    """``cache: true`` is the default policy, ``cache: false`` none."""
    if value is True:
        return {}
    if value is False:
        return None
    return value


def _param_default(value: Any) -> Any:
    # One validator rather than a union: an error names the parameter, not one branch per type.
    if value is not None and not isinstance(value, str | int | float):  # bool is an int
        raise ValueError("a parameter's default is a string, a number, a boolean, or null (required)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("a parameter's default must be a finite number")
    if isinstance(value, str) and len(value) > MAX_PARAM_TEXT:
        raise ValueError(f"a parameter's default is at most {MAX_PARAM_TEXT} characters")
    return value


def _cache_schema(schema: dict[str, Any]) -> None:
    """The JSON schema of ``cache`` also accepts ``true``/``false`` (the before-validator's shorthand)."""
    options = schema.get("anyOf")
    if isinstance(options, list):
        options.insert(0, {"type": "boolean"})


#: A parameter's default: a scalar, or null for a required parameter.
ParamDefault = Annotated[
    bool | int | float | str | None,
    PlainValidator(_param_default),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "boolean"},
                {"type": "number"},
                {"type": "string", "maxLength": MAX_PARAM_TEXT},
                {"type": "null"},
            ]
        }
    ),
]
