"""Fixtures of the storage contract suite: every backend behind one ``Backend`` handle."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from corral.controller.store.base import Store
from corral.controller.store.memory import MemoryStore
from corral.controller.store.sqlite import SqliteStore
from tests.pgserver import PgServer

__all__ = ["Backend"]


@dataclass
class Backend:
    """Opens a store of one kind and, for durable kinds, reopens it from disk."""

    name: str
    open_store: Callable[[], Store]
    durable: bool
    store: Store = field(init=False)
    _opened: list[Store] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.store = self._open()

    def _open(self) -> Store:
        store = self.open_store()
        self._opened.append(store)
        return store

    def reopen(self) -> Store:
        """The same data through a fresh store: close and reopen for SQLite, the same object in memory."""
        if self.durable:
            self.store.close()
            self.store = self._open()
        return self.store

    def close_all(self) -> None:
        for store in self._opened:
            store.close()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "memory":
        b = Backend("memory", MemoryStore, durable=False)
    elif request.param == "postgresql":
        from corral.controller.store.postgres import PostgresStore

        dsn = request.getfixturevalue("pg_migrated_dsn")  # a fresh database; skips where PostgreSQL is missing
        b = Backend("postgresql", lambda: PostgresStore(dsn, pool_size=2), durable=True)
    else:
        path = tmp_path / "corral.db"
        b = Backend("sqlite", lambda: SqliteStore(path), durable=True)
    try:
        yield b
    finally:
        b.close_all()


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer) -> str:
    """A database migrated once per session, copied for each test (cheaper than migrating each)."""
    from corral.controller.store.postgres import PostgresStore

    name = "corral_template"
    PostgresStore(pg_server.create_database(name)).close()
    return name


@pytest.fixture
def pg_migrated_dsn(pg_server: PgServer, pg_template: str) -> str:
    """A fresh database holding the current schema and no rows."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    return pg_server.dsn(name)


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.store
