"""JSON from callers: depth measured on raw bytes equals the parsed depth; non-JSON numbers refused."""

from __future__ import annotations

import json
import math
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.controller.safejson import JsonError, json_depth, loads, raw_depth

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(json_values, st.booleans())
def test_raw_depth_is_the_parsed_depth(value: object, compact: bool) -> None:
    # Brackets inside strings (keys and values, escaped quotes included) must not count.
    raw = json.dumps(value, separators=(",", ":") if compact else None, ensure_ascii=False).encode()
    assert raw_depth(raw) == json_depth(value)
    assert loads(raw, 10_000) == value


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"1", 0),
        (b"{}", 1),
        (b"[[]]", 2),
        (b'{"a":"[[[[{{{{"}', 1),
        (b'["\\"[[", [["x"]]]', 3),
        (b'{"k\\\\":[{"\\"":[]}]}', 4),
    ],
)
def test_raw_depth_examples(raw: bytes, depth: int) -> None:
    assert raw_depth(raw) == depth


def test_deep_documents_are_refused_before_parsing() -> None:
    limit = sys.getrecursionlimit()
    for levels in (33, 500, limit * 10):
        for opening, closing in ((b"[", b"]"), (b'{"a":', b"}")):
            raw = opening * levels + b"1" * (opening == b'{"a":') + closing * levels
            with pytest.raises(JsonError, match="maxjson_depth=32"):
                loads(raw, 32)
    assert loads(b"[" * 32 + b"]" * 32, 32) is not None


@pytest.mark.parametrize("raw", [b"NaN", b"[Infinity]", b'{"a":-Infinity}', b"1e400", b"-1e309", b'{"a":[1,2,NaN]}'])
def test_non_finite_numbers_are_refused(raw: bytes) -> None:
    with pytest.raises(JsonError):
        loads(raw, 32)


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff", b"[1,]", b"nan", b"{'a':1}"])
def test_malformed_json_is_refused(raw: bytes) -> None:
    with pytest.raises(JsonError, match="not valid JSON"):
        loads(raw, 32)


def test_finite_numbers_and_big_integers_pass() -> None:
    assert loads(b"[1e308, -1e308, 5e-324, 123456789012345678901234567890]", 32)[3] == 123456789012345678901234567890
    assert math.isfinite(loads(b"1.7976931348623157e308", 32))
