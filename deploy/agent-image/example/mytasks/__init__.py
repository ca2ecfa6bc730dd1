"""Example task functions, run on agents built with deploy/agent-image/Dockerfile.

A workflow calls one as ``agent_type: python, payload: {function: "mytasks:word_count", kwargs: {text: "a b"}}``.
"""

from __future__ import annotations

__all__ = ["word_count"]


def word_count(text: str) -> dict[str, int]:
    """Count the words of ``text``."""
    return {"words": len(text.split())}
