"""The leadership lease: one row in ``corral_lease`` that expires on the database's clock.

Any number of controllers share one PostgreSQL; the one whose row has not expired leads. A
controller takes the row only once it has expired (``expires_at <= now()`` on the DATABASE's
clock), and each take raises the epoch by one, so every leadership term has its own number and
the store fences every write with it (``PostgresStore.fence_epoch``).

The :class:`LeaseKeeper` renews the row every ``ttl / 3`` on its own thread and its own
connection, so a long tick of the state loop never starves it. The controller's own view of how
long it may still act is kept on CLOCK_BOOTTIME (monotonic, and counting through a suspend): a
renewal sent at ``t`` (before the database read ``now()``) makes the lease valid locally until
``t + ttl``, which is never later than the database's ``expires_at``. The controller stops taking
writes :attr:`LeaseTimings.margin_s` before that local end, so it has stepped down before any
standby can take over; the fence in the database is what makes a late write harmless regardless
(a frozen process cannot look at clocks).

:class:`LeaseView` holds the pure decisions (tested with a fake clock); the keeper only talks to
the database and records what it heard.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LEASE_DDL",
    "LeaderInfo",
    "LeaseKeeper",
    "LeaseTimings",
    "LeaseView",
    "boottime",
    "connector",
]

log = logging.getLogger("corral.controller.ha")

#: Exactly the table PostgreSQL migration 1 creates (plan of issue 12); created here too when
#: missing, so the lease works whichever process reaches an empty database first.
LEASE_DDL = """
CREATE TABLE IF NOT EXISTS corral_lease (
  name text PRIMARY KEY,
  epoch bigint NOT NULL,
  holder text NOT NULL,
  address text NOT NULL,
  expires_at timestamptz NOT NULL
)
"""

# Take the row when it has expired (or does not exist yet): the epoch rises by one per take.
_ACQUIRE = """
INSERT INTO corral_lease (name, epoch, holder, address, expires_at)
VALUES ('leader', 1, %(holder)s, %(address)s, now() + make_interval(secs => %(ttl)s))
ON CONFLICT (name) DO UPDATE
   SET epoch = corral_lease.epoch + 1, holder = excluded.holder, address = excluded.address,
       expires_at = excluded.expires_at
 WHERE corral_lease.expires_at <= now()
RETURNING epoch
"""
# Renew only our own, unexpired term: once expired, another controller may already hold it.
_RENEW = """
UPDATE corral_lease SET expires_at = now() + make_interval(secs => %(ttl)s)
 WHERE name = 'leader' AND epoch = %(epoch)s AND holder = %(holder)s AND expires_at > now()
RETURNING epoch
"""
# Give the term up at once (a clean stop, a step-down): a standby need not wait for the expiry.
_RELEASE = """
UPDATE corral_lease SET expires_at = now()
 WHERE name = 'leader' AND epoch = %(epoch)s AND holder = %(holder)s AND expires_at > now()
"""
# A take waits this long for the row lock (a fenced transaction in flight) before evicting.
_LOCK_WAIT = "SET LOCAL lock_timeout = '300ms'"
# The fence's FOR SHARE shows as a RowShareLock on the table: terminate the holders, but only
# while the term is expired (a live leader's commits must be left alone).
_EVICT = """
SELECT pg_terminate_backend(l.pid)
  FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
 WHERE c.relname = 'corral_lease' AND l.mode = 'RowShareLock' AND l.granted AND l.pid <> pg_backend_pid()
   AND EXISTS (SELECT 1 FROM corral_lease WHERE name = 'leader' AND expires_at <= now())
"""
_READ = """
SELECT epoch, holder, address, expires_at > now(), extract(epoch FROM expires_at - now())::float8
  FROM corral_lease WHERE name = 'leader'
"""


@dataclass(frozen=True)
class LeaseTimings:
    """How long a term lasts without renewal, and the derived intervals.

    ``ttl_s``: the lease written into the row. Renewal every ``ttl / 3`` leaves two renewals'
    worth of slack for a slow or failed one. Writes stop ``margin_s`` before the local end.
    """

    ttl_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0.3 <= self.ttl_s <= 3600:
            raise ValueError(f"the lease ttl must be between 0.3 and 3600 seconds, got {self.ttl_s:g}")

    @property
    def renew_every_s(self) -> float:
        """Seconds between renewals (and between reads of the row by a standby)."""
        return self.ttl_s / 3

    @property
    def margin_s(self) -> float:
        """A leader stops taking writes this long before its lease ends locally.

        It covers the tear-down (streams closed, the server stopped) and the rate difference of
        the two clocks over one term, so the old leader is quiet before a standby may take over.
        """
        return self.ttl_s / 5


@dataclass(frozen=True)
class LeaderInfo:
    """What the lease row says: the epoch, the holder and its address, and whether it is live."""

    epoch: int
    holder: str
    address: str
    live: bool


class LeaseView:
    """The pure part of a lease: what this controller holds, judged on its own monotonic clock.

    ``acquired``/``renewed`` are told the time the statement was SENT (the database's ``now()``
    is later, so the local end is never after the row's). Thread-safe enough for one writer (the
    keeper thread) and any number of readers: the fields are replaced, never mutated in place.
    """

    def __init__(self, timings: LeaseTimings) -> None:
        self.timings = timings
        self.epoch: int | None = None  # the term we hold, None as a standby
        self.valid_until = 0.0  # local monotonic end of the term
        self.leader: LeaderInfo | None = None  # the row as last read (for standbys' redirects)

    def acquired(self, epoch: int, sent_at: float) -> None:
        """We took the row at ``epoch`` with a statement sent at ``sent_at``."""
        self.valid_until = sent_at + self.timings.ttl_s
        self.epoch = epoch

    def renewed(self, sent_at: float) -> None:
        """A renewal sent at ``sent_at`` succeeded: the local end moves forward (never back)."""
        self.valid_until = max(self.valid_until, sent_at + self.timings.ttl_s)

    def lost(self) -> None:
        """The row is not ours any more (a renewal found it taken or expired), or we resigned."""
        self.epoch = None
        self.valid_until = 0.0

    def may_write(self, now: float, epoch: int | None = None) -> bool:
        """Whether a write may be attempted now: we hold the term (``epoch`` when given) with margin."""
        held = self.epoch
        if held is None or (epoch is not None and held != epoch):
            return False
        return now < self.valid_until - self.timings.margin_s

    def remaining(self, now: float) -> float:
        """Seconds left of the term locally (0 when none is held)."""
        return max(0.0, self.valid_until - now) if self.epoch is not None else 0.0

    def leader_address(self) -> str:
        """The live leader's advertised address, or "" when no live leader is known."""
        info = self.leader
        return info.address if info is not None and info.live else ""


def boottime() -> float:
    """CLOCK_BOOTTIME: monotonic, and it keeps counting while the host or VM is suspended.

    CLOCK_MONOTONIC stops during a suspend, so a resumed leader would believe its lease still
    ran; with this clock it knows the lease is gone (the database's fence is the backstop).
    """
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class LeaseKeeper:
    """The lease's thread: acquires when asked and the row has expired, renews, reads the row.

    ``connect()`` returns a new psycopg connection (autocommit); the keeper owns it alone.
    ``holder`` is this controller's instance id, ``address`` the advertised host:port written into
    the row. ``clock`` is CLOCK_BOOTTIME (a seam for tests). ``on_change`` is called (on the keeper's
    thread) whenever the term we hold starts or ends, so the owner can react at once.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        holder: str,
        address: str,
        timings: LeaseTimings,
        *,
        clock: Callable[[], float] = boottime,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.view = LeaseView(timings)
        self.holder = holder
        self.address = address
        self.timings = timings
        self._connect = connect
        self._clock = clock
        self._on_change = on_change
        self._want = threading.Event()  # acquire when the row is free
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # serialises statements on the connection (resign vs the loop)
        self._conn: Any = None
        self._thread = threading.Thread(target=self._run, name="corral-lease", daemon=True)
        self._next_wait = timings.renew_every_s
        self._evicting = False
        self.errors = 0  # failed statements (connection trouble), for tests and logs

    # --- the owner's side -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread (it reads the row at once, and acquires once :meth:`campaign` says so)."""
        self._thread.start()

    def campaign(self) -> None:
        """Ask for the lease: take the row as soon as it is free (again after each lost term)."""
        self._want.set()
        self._wake.set()

    def may_write(self, epoch: int | None = None) -> bool:
        """Whether this controller may write now under ``epoch`` (with the margin; see LeaseView)."""
        return self.view.may_write(self._clock(), epoch)

    def resign(self, *, release: bool) -> None:
        """Stop leading: no more renewals or takes until :meth:`campaign`; ``release`` frees the row now.

        Called after the term's writes have stopped, so freeing the row early is safe; a release
        that fails (the database unreachable) changes nothing: the row then expires by itself.
        """
        # Under the lock: a take in flight finishes first, so none lands after this resignation.
        with self._lock:
            self._want.clear()
            epoch = self.view.epoch
            self.view.lost()
            if release and epoch is not None:
                with contextlib.suppress(Exception):
                    conn = self._ensure_connection()
                    conn.execute(_RELEASE, {"epoch": epoch, "holder": self.holder})
                    log.info("released the leadership lease (epoch %d)", epoch)
        self._wake.set()

    def stop(self, *, release: bool = True) -> None:
        """Resign (freeing the row when ``release``), stop the thread, close the connection."""
        self.resign(release=release)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self.timings.ttl_s + 5)
        with self._lock:
            self._close()

    # --- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    self._step()
            except Exception as exc:  # the database: reconnect next time; the view judges by time
                self.errors += 1
                if self.errors == 1 or self.errors & (self.errors - 1) == 0:
                    log.warning("leadership lease: %s (%d failures so far)", exc, self.errors)
                with self._lock:
                    self._close()
                self._check_expiry()
                self._wake.wait(min(0.5, self.timings.renew_every_s))
                self._wake.clear()
                continue
            self._wake.wait(self._next_wait)
            self._wake.clear()

    def _check_expiry(self) -> None:
        """A term that ran out locally while the database was unreachable is lost."""
        view = self.view
        if view.epoch is not None and self._clock() >= view.valid_until:
            log.error("leadership lease: not renewed within its %.1f s; stepping down", self.timings.ttl_s)
            self._lose()

    def _step(self) -> None:
        conn = self._ensure_connection()
        view = self.view
        params = {"holder": self.holder, "address": self.address, "ttl": self.timings.ttl_s}
        if view.epoch is not None:
            sent = self._clock()
            row = conn.execute(_RENEW, {**params, "epoch": view.epoch}).fetchone()
            if row is not None and view.epoch is not None:  # resign() may have run meanwhile
                view.renewed(sent)
            elif view.epoch is not None:
                log.error("leadership lease: epoch %d was taken over or expired; stepping down", view.epoch)
                self._lose()
        elif self._want.is_set():
            sent = self._clock()
            row = self._acquire(conn, params)
            if row is not None:
                view.acquired(int(row[0]), sent)
                log.info("leadership lease acquired: epoch %d, advertised as %s", int(row[0]), self.address)
                self._changed()
        row = conn.execute(_READ).fetchone()
        # Right after an eviction, try again at once: the row is free as soon as those roll back.
        self._next_wait = 0.05 if self._evicting else self.timings.renew_every_s
        self._evicting = False
        if row is not None:
            view.leader = LeaderInfo(int(row[0]), str(row[1]), str(row[2]), bool(row[3]))
            if view.epoch is None and self._want.is_set():
                # Campaigning: try again right when the holder's term ends on the database's
                # clock, not up to a renewal interval later (failover time is ttl, not 4/3 ttl).
                self._next_wait = min(self._next_wait, max(0.02, float(row[4]) + 0.02))

    def _acquire(self, conn: Any, params: dict[str, Any]) -> Any:
        """Take the row if it has expired; evict a deposed leader's transaction that still holds it.

        Every fenced write transaction holds the row FOR SHARE until it commits, which is what
        orders it before any take-over. A leader frozen (or partitioned) in the middle of one keeps
        that lock after its lease expired, and the take-over would wait for it forever (its TCP
        connection looks alive). So the take waits only briefly; then the sessions holding the
        row share-locked while it is expired are terminated (their transactions roll back: the
        old leader sees a lost connection and steps down), and the take is tried again.
        """
        import psycopg  # the keeper runs only with PostgreSQL

        try:
            with conn.transaction():
                conn.execute(_LOCK_WAIT)
                return conn.execute(_ACQUIRE, params).fetchone()
        except psycopg.errors.LockNotAvailable:
            evicted = conn.execute(_EVICT).fetchall()
            if evicted:
                log.warning(
                    "leadership lease: terminated %d session(s) of the expired term still holding it", len(evicted)
                )
            self._evicting = True
            return None

    def _lose(self) -> None:
        # No new take until the owner campaigns again: it first tears the old term down.
        self._want.clear()
        self.view.lost()
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            with contextlib.suppress(Exception):
                self._on_change()

    def _ensure_connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            conn = self._connect()
            try:
                conn.execute(LEASE_DDL)
            except Exception:
                # Another controller creating the table at the same instant: it exists now.
                with contextlib.suppress(Exception):
                    conn.rollback()
                conn.execute("SELECT 1 FROM corral_lease LIMIT 1")
            self._conn = conn
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def connector(dsn: str, timings: LeaseTimings) -> Callable[[], Any]:
    """A ``connect()`` for :class:`LeaseKeeper`: autocommit, and no call blocks past one renewal.

    The statement timeout bounds a slow database; the TCP user timeout and keepalives bound a
    partitioned one (a statement timeout runs on the server, which a partition does not reach).
    """
    import psycopg  # only controllers on PostgreSQL need it

    bound_ms = max(100, int(timings.renew_every_s * 1000))

    def connect() -> Any:
        return psycopg.connect(
            dsn,
            autocommit=True,
            connect_timeout=max(1, int(timings.renew_every_s + 0.999)),
            options=f"-c statement_timeout={bound_ms}",
            tcp_user_timeout=bound_ms,
            keepalives=1,
            keepalives_idle=1,
            keepalives_interval=1,
            keepalives_count=2,
            application_name="corral-lease",
        )

    return connect
