"""JSON from callers, parsed safely: nesting measured on the raw bytes first, NaN and Infinity refused.

Python's ``json`` parses recursively, so a document nested a few hundred levels deep raises
RecursionError deep inside the parser; and it accepts ``NaN``, ``Infinity`` and numbers such as
``1e400`` (which become ``inf``), none of which is JSON or can be stored again. :func:`loads`
measures the nesting with a linear scan in C-speed steps (strings removed by one regex, brackets
summed with :func:`itertools.accumulate`) before any parsing, then parses with hooks that refuse
non-finite numbers. Nothing here recurses.

Depth counts nested arrays and objects: a scalar is 0, ``{}`` and ``[1]`` are 1, ``{"a": [1]}`` is 2.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from itertools import accumulate
from typing import Any, NoReturn

__all__ = ["JsonError", "json_depth", "loads", "raw_depth"]


class JsonError(ValueError):
    """The bytes are not acceptable JSON; the message says why (safe to show to the caller)."""


# A JSON string: a quote, runs of ordinary bytes and escapes, a quote (the unrolled form never
# backtracks, so it is linear in the string's length).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# Opening brackets become 0x01 (+1 as a signed byte), closing ones 0xff (-1); all else is deleted.
_MARKS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def raw_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (brackets inside strings do not count).

    Exact for valid JSON; for invalid JSON it is only an estimate, and the parser refuses it anyway.
    """
    opening = raw.count(b"[") + raw.count(b"{")
    if opening == 0 or (opening == 1 and b'"' not in raw):
        return opening  # the common small payload: no scan at all (no string to hide a bracket)
    brackets = _STRING.sub(b"", raw).translate(_MARKS, _NOT_BRACKETS)
    return max(accumulate(memoryview(brackets).cast("b")), default=0)


def _no_constant(name: str) -> NoReturn:
    raise JsonError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonError(f"number {text[:32]} is out of range (not a finite double)")
    return value


_DECODE = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float).decode


def loads(raw: bytes, max_depth: int) -> Any:
    """Parse UTF-8 JSON bytes; JsonError when not JSON, nested deeper than ``max_depth``, or non-finite."""
    # Fewer opening brackets than the limit cannot nest deeper: skip the scan (the common case).
    depth = 0 if raw.count(b"[") + raw.count(b"{") <= max_depth else raw_depth(raw)
    if depth > max_depth:
        raise JsonError(f"nests {depth} levels deep, over the maxjson_depth={max_depth} limit")
    try:
        # JSON on the wire is UTF-8: decoding it directly skips json.loads' encoding sniffing.
        return _DECODE(raw.decode())
    except JsonError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise JsonError(f"not valid JSON: {exc}") from None


def json_depth(value: Any) -> int:
    """The nesting of arrays and objects in a parsed value, measured without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest
