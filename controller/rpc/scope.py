"""Namespace scoping at the edge: a request that names a namespace its caller does not cover is
refused before it reaches the core. Ids the caller typed are scoped inside the core
(:mod:`corral.controller.core.queries`), where they are resolved.
"""

from __future__ import annotations

from corral.controller.errors import PermissionDenied
from corral.controller.rpc.identity import Principal

__all__ = ["require_namespace"]

_SHOWN = 128


def require_namespace(principal: Principal, namespace: str) -> None:
    """PermissionDenied unless ``principal`` may act in ``namespace``."""
    if not principal.covers(namespace):
        covered = ", ".join(principal.namespaces)
        raise PermissionDenied(f"namespace {namespace[:_SHOWN]!r} not covered by {principal.describe()} ({covered})")
