"""Fixtures of the HA tests: a lease keeper factory on the real PostgreSQL of the session."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from corral.controller.ha.lease import LeaseKeeper, LeaseTimings, connector


@pytest.fixture
def keepers(pg_dsn: str) -> Iterator[Callable[..., LeaseKeeper]]:
    """Make started lease keepers on a fresh database; all are stopped at the end."""
    made: list[LeaseKeeper] = []

    def make(holder: str, address: str = "", ttl: float = 1.5) -> LeaseKeeper:
        timings = LeaseTimings(ttl)
        keeper = LeaseKeeper(connector(pg_dsn, timings), holder, address or f"{holder}:7070", timings)
        keeper.start()
        made.append(keeper)
        return keeper

    yield make
    for keeper in made:
        keeper.stop(release=True)
