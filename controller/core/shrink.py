"""Giving back the hash tables of containers that deletions emptied.

CPython never shrinks a dict or a set on deletion: one that held a 200k-task workflow keeps its
table (about 10 MiB for a dict) after every entry is gone, until enough new inserts make it
resize. An idle controller inserts nothing, so the tables of the machine's indexes stay at the
size of the biggest workflow it ever held. :func:`shrink_tables` rebuilds such containers in
place (same object: every holder of a reference keeps working).
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["shrink_tables"]

#: Containers smaller than this are left alone (their tables are a rounding error).
MIN_BYTES = 1 << 20
_TYPES = (dict, set)


def shrink_tables(root: object, *, depth: int = 2, min_bytes: int = MIN_BYTES) -> int:
    """Rebuild in place every dict or set attribute of ``root`` (and of the objects of this package
    it holds, ``depth`` levels down) whose table is at least twice what its entries need and at
    least ``min_bytes``; returns the bytes given back (as ``sys.getsizeof`` counts them)."""
    freed = 0
    seen: set[int] = set()

    def visit(owner: object, level: int) -> None:
        nonlocal freed
        if id(owner) in seen:
            return
        seen.add(id(owner))
        for value in _attributes(owner):
            # Subclasses too (the machine's Dependents is a dict): copy() gives a plain dict or
            # set, and clear() + update() refill the same object.
            if isinstance(value, _TYPES):
                freed += _shrink(value, min_bytes)
            elif level > 0 and type(value).__module__.startswith("corral."):
                visit(value, level - 1)

    visit(root, depth)
    return freed


def _attributes(owner: object) -> list[Any]:
    values = list(getattr(owner, "__dict__", {}).values())
    for slot in getattr(type(owner), "__slots__", ()):
        if hasattr(owner, slot):
            values.append(getattr(owner, slot))
    return values


def _shrink(container: Any, min_bytes: int) -> int:
    before = sys.getsizeof(container)
    if before < min_bytes:
        return 0
    copy = container.copy()  # a new table sized for what is left
    if sys.getsizeof(copy) * 2 > before:
        return 0
    container.clear()  # frees the old table
    container.update(copy)
    return before - sys.getsizeof(container)
