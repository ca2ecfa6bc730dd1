"""Fan-out / fan-in data pipeline: split the extracted records, transform the parts, combine them.

The shell task ``extract`` prints ``{"records": [...]}``; each ``transform`` takes its slice of the
records from its inputs; ``combine`` merges the partial results. Every value is plain JSON so that
it can travel through the controller to tasks on other machines.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["combine", "records_of", "transform"]


def records_of(inputs: Mapping[str, Any], source: str = "extract") -> list[int]:
    """Return the integer records produced by the ``source`` dependency."""
    upstream = inputs.get(source)
    if not isinstance(upstream, Mapping) or not isinstance(upstream.get("records"), list):
        raise ValueError(f"dependency {source!r} produced no 'records' list: {upstream!r}")
    return [int(value) for value in upstream["records"]]


def transform(part: int, parts: int, inputs: Mapping[str, Any]) -> dict[str, int]:
    """Square every record of slice ``part`` out of ``parts`` and sum them."""
    if not 0 <= part < parts:
        raise ValueError(f"part {part} is outside 0..{parts - 1}")
    records = records_of(inputs)[part::parts]
    return {"part": part, "count": len(records), "sum_squares": sum(value * value for value in records)}


def combine(inputs: Mapping[str, Any]) -> dict[str, int]:
    """Merge the partial results of every ``transform-*`` dependency."""
    partials = [value for name, value in sorted(inputs.items()) if name.startswith("transform")]
    if not partials:
        raise ValueError("combine needs at least one transform-* dependency")
    return {
        "parts": len(partials),
        "count": sum(int(p["count"]) for p in partials),
        "sum_squares": sum(int(p["sum_squares"]) for p in partials),
    }
