"""Shared fixtures: a real controller (and agents) in processes of their own, for the SDK and CLI tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pgserver import PgServer, running_server
from tests.procs import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A controller on port 0 with no agents yet (add them with ``cluster.add_agent``)."""
    yield from Cluster.running(tmp_path)


@pytest.fixture
def cluster_with_agent(cluster: Cluster) -> Cluster:
    """A controller with one connected two-slot agent named ``a1``."""
    cluster.add_agent("a1", slots=2)
    cluster.wait_for_agents(1)
    return cluster


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One throwaway PostgreSQL for the whole session (fsync off); skips where none is installed."""
    try:
        with running_server() as server:
            yield server
    except LookupError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> str:
    """The DSN of a fresh, empty database on the session's PostgreSQL."""
    return pg_server.create_database()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``chaos`` (long fault scenarios, controller kill -9 replays, the three-minute
    cron test) are deselected unless ``-m`` selects them: ``make chaos`` runs them."""
    if config.option.markexpr:
        return  # an explicit -m decides
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (dropped if item.get_closest_marker("chaos") else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
