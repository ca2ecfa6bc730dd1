"""What a scenario needs from the machine (root, namespaces, the freezer) and from the tree."""

from __future__ import annotations

import os
from functools import cache

from tests.chaos.harness import freezer_missing, issue8_missing
from tests.chaos.scenarios import Scenario
from tests.cluster.netns import missing_requirement

__all__ = ["why_skip"]


@cache
def _netns() -> str | None:
    return missing_requirement()  # creates and deletes a probe namespace: once per process


def why_skip(scenario: Scenario, features: bool = False) -> str | None:
    """Why ``scenario`` cannot run here, or None. With ``features``, also skip a scenario whose
    issue 8 features are not in this tree (pytest does; ``make chaos`` runs it and shows it fail)."""
    for need in scenario.needs:
        if need == "root" and os.geteuid() != 0:
            return "needs root (mounts a tmpfs)"
        if need == "netns" and (reason := _netns()):
            return reason
        if need == "freezer" and (reason := freezer_missing()):
            return reason
        if need == "issue8" and features and (reason := issue8_missing()):
            return reason
    return None
