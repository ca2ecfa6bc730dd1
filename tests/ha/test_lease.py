"""The leadership lease: pure decisions on a fake clock, and the keeper on the real PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest

from corral.controller.ha.lease import LEASE_DDL, LeaseKeeper, LeaseTimings, LeaseView


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until true; returns the seconds it took (fails after ``timeout``)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - started


# --- pure ------------------------------------------------------------------------------------------


def test_timings_derive_renewal_and_margin() -> None:
    timings = LeaseTimings(6.0)
    assert timings.renew_every_s == 2.0
    assert timings.margin_s == pytest.approx(1.2)
    with pytest.raises(ValueError, match="ttl"):
        LeaseTimings(0.1)


def test_a_term_is_writable_until_the_margin_before_its_local_end() -> None:
    view = LeaseView(LeaseTimings(5.0))
    assert not view.may_write(0.0)  # a standby never writes
    view.acquired(7, sent_at=100.0)
    assert view.may_write(100.0) and view.may_write(103.9)
    assert view.may_write(103.0, epoch=7) and not view.may_write(103.0, epoch=6)
    assert not view.may_write(104.0)  # 1 s (ttl/5) before the end: writes stop
    view.renewed(sent_at=103.5)
    assert view.may_write(107.4) and not view.may_write(107.5)
    assert view.remaining(105.0) == pytest.approx(3.5)


def test_a_late_renewal_never_moves_the_end_back() -> None:
    view = LeaseView(LeaseTimings(3.0))
    view.acquired(1, sent_at=10.0)
    view.renewed(sent_at=12.0)
    view.renewed(sent_at=11.0)  # an older renewal answered last
    assert view.valid_until == 15.0


def test_losing_the_term_stops_writes_at_once() -> None:
    view = LeaseView(LeaseTimings(5.0))
    view.acquired(3, sent_at=0.0)
    view.lost()
    assert view.epoch is None and not view.may_write(0.1) and view.remaining(0.1) == 0.0


# --- the keeper on PostgreSQL ----------------------------------------------------------------------


def lease_row(dsn: str) -> tuple[int, str, str, bool]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT epoch, holder, address, expires_at > now() FROM corral_lease WHERE name = 'leader'"
        ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1]), str(row[2]), bool(row[3])


def test_one_keeper_leads_the_other_names_it(keepers: Callable[..., LeaseKeeper], pg_dsn: str) -> None:
    first = keepers("a")
    first.campaign()
    wait_until(lambda: first.view.epoch is not None, 5, "a to lead")
    second = keepers("b")
    second.campaign()
    wait_until(lambda: second.view.leader_address() == "a:7070", 5, "b to read the leader's address")
    assert second.view.epoch is None and not second.may_write()
    assert first.may_write(first.view.epoch)
    # Renewals keep it: two ttls later a still leads under the same epoch.
    epoch = first.view.epoch
    time.sleep(3.0)
    assert first.view.epoch == epoch and second.view.epoch is None
    assert lease_row(pg_dsn) == (epoch, "a", "a:7070", True)


def test_a_released_lease_is_taken_at_once_with_the_next_epoch(keepers: Callable[..., LeaseKeeper]) -> None:
    first, second = keepers("a", ttl=30.0), keepers("b", ttl=30.0)
    first.campaign()
    wait_until(lambda: first.view.epoch is not None, 5, "a to lead")
    epoch = first.view.epoch
    assert epoch is not None
    second.campaign()
    first.resign(release=True)
    # The row was freed: b need not wait 30 s for it to expire (it retries every ttl/3 = 10 s).
    took = wait_until(lambda: second.view.epoch is not None, 12, "b to take over")
    assert second.view.epoch == epoch + 1
    assert took < 12


def test_a_keeper_whose_term_was_taken_steps_down(keepers: Callable[..., LeaseKeeper], pg_dsn: str) -> None:
    keeper = keepers("a", ttl=1.5)
    keeper.campaign()
    wait_until(lambda: keeper.view.epoch is not None, 5, "a to lead")
    epoch = keeper.view.epoch
    assert epoch is not None
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # someone else's term, as after a freeze
        conn.execute(
            "UPDATE corral_lease SET epoch = epoch + 1, holder = 'z', address = 'z:1', "
            "expires_at = now() + interval '3 seconds'"
        )
    wait_until(lambda: keeper.view.epoch is None, 1.5 * 3, "a to notice it lost the term")
    assert not keeper.may_write()
    keeper.campaign()  # what the node does once the old term is torn down
    # It campaigns on: once z's term expires, a leads again under a newer epoch.
    wait_until(lambda: keeper.view.epoch is not None, 3 * 3 + 1.5, "a to lead again")
    assert keeper.view.epoch == epoch + 2
    assert lease_row(pg_dsn)[:2] == (epoch + 2, "a")


def test_a_take_over_evicts_a_deposed_leaders_transaction_that_holds_the_row(
    keepers: Callable[..., LeaseKeeper], pg_dsn: str
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as setup:
        setup.execute(LEASE_DDL)
        setup.execute("INSERT INTO corral_lease VALUES ('leader', 5, 'old', 'old:1', now() + interval '1 second')")
    # The old leader's fenced write transaction, frozen between its fence and its COMMIT.
    frozen = psycopg.connect(pg_dsn)
    try:
        frozen.execute(
            "SELECT 1 FROM corral_lease WHERE name = 'leader' AND epoch = 5 AND expires_at > now() FOR SHARE"
        )
        frozen.execute("CREATE TABLE written_by_the_old_leader (x int)")
        keeper = keepers("new", ttl=1.5)
        keeper.campaign()
        wait_until(lambda: keeper.view.epoch is not None, 1 + 3 * 1.5, "the take-over")
        assert keeper.view.epoch == 6
        with pytest.raises(psycopg.OperationalError):
            frozen.execute("COMMIT")  # its session was terminated: nothing of it commits
    finally:
        frozen.close()
    with psycopg.connect(pg_dsn, autocommit=True) as check:
        assert check.execute("SELECT to_regclass('written_by_the_old_leader')").fetchone() == (None,)
