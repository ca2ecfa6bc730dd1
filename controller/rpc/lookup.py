"""Resolve what a caller typed — a full id, a unique prefix, or an agent's name — to one id."""

from __future__ import annotations

from collections.abc import Collection

from corral.controller.errors import InvalidArgument, NotFound, clip
from corral.controller.rpc.fields import identifier

__all__ = ["resolve"]

_MAX_SHOWN = 5


def resolve(ids: Collection[str], typed: str, what: str, field: str) -> str:
    """The id equal to ``typed``, else the only one starting with it.

    Raises NotFound when nothing matches and InvalidArgument (naming some matches) when the prefix
    is ambiguous, empty, too long or holds control characters. Messages echo at most 128
    characters of what was typed.
    """
    identifier(typed, field, f"{what} id")
    if typed in ids:
        return typed  # the common case, without a scan
    matches = []
    for candidate in ids:
        if candidate == typed:
            return candidate
        if candidate.startswith(typed):
            matches.append(candidate)
    if not matches:
        raise NotFound(f"{what} {clip(typed)!r} not found")
    if len(matches) > 1:
        shown = ", ".join(sorted(matches)[:_MAX_SHOWN])
        raise InvalidArgument.field(
            field, f"{what} prefix {clip(typed)!r} is ambiguous: {len(matches)} match ({shown} ...)"
        )
    return matches[0]
