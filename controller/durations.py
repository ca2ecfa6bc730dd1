"""Durations as people type them: ``90d``, ``12h``, ``30m``, ``45s``, ``1w`` or plain seconds."""

from __future__ import annotations

import math
import re

__all__ = ["parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}


def parse_duration(text: str) -> float:
    """Seconds of ``text``; ValueError (with examples) when it is not a duration."""
    match = _DURATION.match(text)
    value = float(match.group(1)) * _UNITS[match.group(2)] if match else math.nan
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a duration (examples: 90d, 12h, 30m, 45s)")
    return value
