"""The fence inside the database, in-process: a deposed term's commit is refused and lands nothing.

A real PostgresStore fenced at the epoch a real lease keeper took; another keeper takes over; the
old term's next commit (through the leader's GuardedStore) fails with Fenced inside the database,
deposes the term, and the row it tried to write is not there. The local lease gate is bypassed
on purpose (``may_write`` always true), as for a leader frozen between the gate and its commit.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable

import psycopg
import psycopg.sql
import pytest

from corral.controller.ha.guard import GuardedStore, NotLeader
from corral.controller.ha.lease import LeaseKeeper
from corral.controller.store.base import ChangeBatch
from corral.controller.store.errors import Fenced


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def test_a_deposed_terms_commit_is_refused_by_the_database(keepers: Callable[..., LeaseKeeper], pg_dsn: str) -> None:
    if importlib.util.find_spec("corral.controller.store.postgres") is None:
        pytest.skip("needs the PostgreSQL store (corral.controller.store.postgres), not in this checkout")
    from corral.controller.store.postgres import PostgresStore

    old = keepers("old", ttl=1.5)
    old.campaign()
    wait_until(lambda: old.view.epoch is not None, 5, "the first term")
    epoch = old.view.epoch
    assert epoch is not None
    inner = PostgresStore(pg_dsn)
    try:
        inner.fence_epoch = epoch
        deposed: list[int] = []
        store = GuardedStore(inner, lambda: True, on_deposed=lambda: deposed.append(1))
        store.commit(ChangeBatch(meta={"written": "under-the-first-term"}))

        old.resign(release=False)  # it stops renewing (frozen); the row expires on the DB clock
        new = keepers("new", ttl=1.5)
        new.campaign()
        wait_until(lambda: new.view.epoch is not None, 3 * 1.5 + 1, "the take-over")
        assert new.view.epoch == epoch + 1

        with pytest.raises(NotLeader) as refused:
            store.commit(ChangeBatch(meta={"written": "by-the-deposed-term"}))
        assert isinstance(refused.value.__cause__, Fenced)
        assert isinstance(store.deposed, Fenced) and deposed == [1]
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            tables = [
                str(r[0])
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                ).fetchall()
            ]
            texts = []
            for table in tables:
                query = psycopg.sql.SQL("SELECT t::text FROM {} AS t").format(psycopg.sql.Identifier(table))
                texts += [str(r[0]) for r in conn.execute(query).fetchall()]
        assert any("under-the-first-term" in t for t in texts)
        assert not any("by-the-deposed-term" in t for t in texts)
    finally:
        inner.close()
