"""Building blocks of the workflow file format: limits, names, text and JSON checks, durations.

Shared by :mod:`corral.controller.spec` and the models of its parts (:mod:`spec_durable`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
)

from corral.controller.safejson import json_depth


class Limits:
    """Size limits on everything a caller sends. Named so that errors can say which one was hit."""

    max_message_bytes = 64 * 1024 * 1024  # one gRPC message, either way (a 100k-task workflow fits)
    max_tasks = 1_000_000  # issue 13; one over max_message_bytes is sent in chunks (AppendTasks)
    max_dependencies = 10_000
    max_payload_bytes = 64 * 1024
    max_result_bytes = 256 * 1024
    # Tasks (statuses and results) in one answer: a workflow's result or status page. Answers stop
    # sooner at max_page_bytes, so a page of large results stays well inside max_message_bytes.
    max_result_tasks = 10_000  # the most a caller may ask for (page_size)
    # Tasks in an answer whose caller set no page_size (a waited result's first page, a status
    # page). A page is built at once in the state loop and held until it is sent: 10,000 statuses
    # were ~15 MiB of the controller's peak and a 150 ms tick; 2,000 are ~3 MiB and 30 ms.
    page_tasks = 2_000
    max_page_bytes = 16 * 1024 * 1024
    max_metadata_bytes = 64 * 1024
    maxjson_depth = 32  # nested arrays/objects in one JSON field (checked on the raw bytes first)
    max_name_length = 128
    max_labels = 64
    max_label_length = 256
    max_timeout_s = 7 * 24 * 3600.0
    max_retries = 100
    max_agent_losses = 100
    max_cpu_cores = 4096.0
    max_memory_mb = 1 << 40
    max_disk_mb = 1 << 44
    max_gpu_count = 256
    max_custom_resource = 1e12
    max_network_mbps = 1_000_000_000
    max_slots = 4096  # concurrent attempts one agent may offer
    max_agent_types = 16
    max_agent_attempts = 20_000  # attempts one agent may report running (slots plus its prefetch queue)
    max_task_events = 10_000  # events in one TaskEvents batch from an agent
    max_output_chunk_bytes = 16 * 1024 * 1024  # stdout plus stderr of one Output event
    max_error_length = 64 * 1024
    max_cache_ttl_s = 366 * 24 * 3600.0  # issue 10: a cache entry's ttl
    # Issue 13: chunked submissions (AppendTasks), staged in the controller's memory until sealed.
    max_upload_chunks = 10_000  # chunks of one upload
    max_open_uploads = 16  # uploads one caller may have open at once
    max_staged_bytes = 1 << 30  # encoded tasks staged by all open uploads together
    upload_idle_s = 300.0  # an upload with no chunk for this long is dropped


LIMITS = Limits()
# Anchored for pydantic's Rust regex engine, where "$" matches only at the very end (Python's
# would also match before a trailing newline, so never reuse this with re.match).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
# C0 controls (NUL, newline, ESC ...), DEL and C1 controls: never part of a name, key or label.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Multi-line free text (error messages) may hold newlines and tabs, nothing else of the above.
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

Name = Annotated[str, Field(min_length=1, max_length=Limits.max_name_length, pattern=NAME_PATTERN)]
# A dependency: a task name, or "NAME/*": that task and every task it spawns (issue 10).
DependencyName = Annotated[
    str, Field(min_length=1, max_length=Limits.max_name_length + 2, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/\*)?$")
]


def plain_dependencies(dependencies: Sequence[str]) -> list[str]:
    """The task names a task waits for: ``X/*`` counts as X (its children are added at run time).

    ``X`` and ``X/*`` together count once; a name listed twice stays a duplicate (an error).
    """
    names: list[str] = []
    for dependency in dependencies:
        if not dependency.endswith("/*"):
            names.append(dependency)
        elif dependency[:-2] not in dependencies and dependency[:-2] not in names:
            names.append(dependency[:-2])
    return names


def control_character(value: str, *, multiline: bool = False) -> str | None:
    """A description of the first control character in ``value`` (None when there is none)."""
    found = (_CONTROL_MULTILINE if multiline else _CONTROL).search(value)
    if found is None:
        return None
    return f"must not contain control characters (found {found.group()!r} at offset {found.start()})"


def _plain_text(value: str) -> str:
    problem = control_character(value)
    if problem:
        raise ValueError(problem)
    return value


#: A label or constraint value: free text up to max_label_length, without control characters.
LabelValue = Annotated[str, Field(max_length=Limits.max_label_length), AfterValidator(_plain_text)]


def check_json_value(value: Any, what: str, max_bytes: int, limit_name: str) -> bytes:
    """Encode ``value`` as JSON, enforcing the size and nesting limits; raise ValueError naming the limit."""
    depth = json_depth(value)
    if depth > Limits.maxjson_depth:
        raise ValueError(f"{what} nests {depth} levels deep, over the maxjson_depth={Limits.maxjson_depth} limit")
    try:
        encoded = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from None
    if len(encoded) > max_bytes:
        raise ValueError(f"{what} is {len(encoded)} bytes, over the {limit_name}={max_bytes} bytes limit")
    return encoded


class _Strict(BaseModel):
    # No str_strip_whitespace: a name sent as " a" or "a\n" is refused with its path, never
    # silently changed into another name.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _finite(value: float, field_name: str, maximum: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{field_name} must be a finite number")
    if value < 0:
        raise ValueError(f"{field_name} must be >= 0")
    if value > maximum:
        raise ValueError(f"{field_name} must be <= {maximum:g}")
    return value


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``"90"``, ``"30s"``, ``"10m"``, ``"1.5h"``, ``"2d"``.

    Raises ValueError naming the accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '10m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration: give seconds or a string like '30s', '10m', '1h', '2d'")
    if not math.isfinite(seconds):
        raise ValueError("a duration must be finite")
    return seconds
