"""The ``tasks.rules`` column (issue 10): a task's :class:`FallbackRules` and ``fallback_used`` as JSON."""

from __future__ import annotations

import json
from typing import Any

from corral.controller.core.model import FallbackRules

__all__ = ["decode_rules", "encode_rules"]


def encode_rules(rules: FallbackRules | None, fallback_used: bool) -> str:
    """The column's text (only called for the tasks that have rules)."""
    data: dict[str, Any] = {}
    if rules is not None:
        if rules.fallback is not None:
            data["fallback"] = rules.fallback.decode()
        if rules.allow_failure:
            data["allow_failure"] = True
        if rules.min_success is not None:
            data["min_success"] = rules.min_success
        if rules.approval:
            data["approval"] = {"timeout_s": rules.approval_timeout_s, "message": rules.approval_message}
    if fallback_used:
        data["fallback_used"] = True
    return json.dumps(data, separators=(",", ":"))


def decode_rules(text: str) -> dict[str, Any]:
    """The Task keyword arguments of a column's text (inverse of :func:`encode_rules`)."""
    data = json.loads(text)
    approval = data.get("approval")
    fallback = data.get("fallback")
    rules = FallbackRules(
        fallback=None if fallback is None else fallback.encode(),
        allow_failure=bool(data.get("allow_failure", False)),
        min_success=data.get("min_success"),
        approval=approval is not None,
        approval_timeout_s=approval["timeout_s"] if approval else None,
        approval_message=approval["message"] if approval else "",
    )
    return {"rules": rules, "fallback_used": bool(data.get("fallback_used", False))}
