"""Fixtures of the multi-host tier: a bridge and network namespaces standing in for machines.

Every test here skips, with the reason printed, when this machine cannot create namespaces: not
root, ``ip`` or ``nft`` missing, or a restricted container that forbids ``ip netns add``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from functools import cache

import pytest

from tests.cluster.netns import NetnsCluster, missing_requirement


@cache
def _why_not() -> str | None:
    # Probed once per session: creating a namespace costs a few fork/execs.
    return missing_requirement()


def require_netns() -> None:
    """Skip the calling test, printing why, when network namespaces are unavailable."""
    reason = _why_not()
    if reason is not None:
        print(f"skipping multi-host test: {reason}", file=sys.stderr)
        pytest.skip(reason)


@pytest.fixture
def netns3() -> Iterator[NetnsCluster]:
    """Three "hosts" (ns0, ns1, ns2) on one private /24; torn down even when the test fails."""
    require_netns()
    with NetnsCluster(3) as cluster:
        yield cluster
