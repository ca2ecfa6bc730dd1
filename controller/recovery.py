"""What the runtime needs to survive a failed commit: the clock, the error a caller sees, and live sessions.

Three small pieces the state loop (:mod:`corral.controller.runtime`) uses when the store refuses a
tick: :func:`anchored_clock` (timers on a monotonic clock, stored times in wall seconds),
:func:`storage_error` (the domain error for an operational store failure: disk full or I/O), and
:func:`carry_sessions` (after the machine is rebuilt from the store, the agents whose streams are
still open stay connected, so a full disk does not disconnect the fleet).
"""

from __future__ import annotations

import errno
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from corral.controller.core.machine import Machine
from corral.controller.core.model import AgentState
from corral.controller.errors import StorageFull, StorageUnavailable
from corral.controller.store.errors import CommitUnknown, StoreUnavailable

__all__ = ["OPERATIONAL", "anchored_clock", "carry_sessions", "storage_error"]

# A store failure no command caused: the disk, not the data. The tick is refused and the loop
# probes the store until it takes writes again. A networked store (PostgreSQL) raises
# StoreUnavailable for a lost database, and CommitUnknown when the connection died during COMMIT:
# the rebuild from the store that degraded mode starts with then learns the outcome.
OPERATIONAL = (sqlite3.OperationalError, OSError, MemoryError, StoreUnavailable, CommitUnknown)
_SQLITE_FULL = 13  # sqlite3 result code: "database or disk is full"
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_LIVE = (AgentState.CONNECTED, AgentState.DRAINING)

_V = TypeVar("_V")


def anchored_clock(
    wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic
) -> Callable[[], float]:
    """A clock that reads like wall seconds but never jumps: ``wall_at_boot + monotonic() - mono_at_boot``.

    Leases and deadlines are differences of its readings, so a stepped wall clock (NTP, an
    operator's ``date -s``) moves none of them; stored times stay wall seconds, off by at most the
    drift since boot. ``wall`` and ``monotonic`` are seams for tests.
    """
    wall_at_boot = wall()
    mono_at_boot = monotonic()

    def now() -> float:
        return wall_at_boot + (monotonic() - mono_at_boot)

    return now


def storage_error(error: BaseException) -> StorageUnavailable:
    """The error writers see while the store refuses commits: StorageFull or StorageUnavailable."""
    if isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorcode", None) == _SQLITE_FULL:
        return StorageFull(f"storage full: {error}")
    if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
        return StorageFull(f"storage full: {error.strerror or error}")
    if isinstance(error, StoreUnavailable) and error.full:
        return StorageFull(f"storage full: {error}")
    if isinstance(error, MemoryError):
        return StorageUnavailable("storage unavailable: out of memory")
    return StorageUnavailable(f"storage unavailable: {error}")


def carry_sessions(
    old: Machine, new: Machine, live: Iterable[tuple[str, int]], stored_states: Mapping[str, AgentState]
) -> set[str]:
    """Keep the agents with open streams connected on ``new``, a machine just rebuilt from the store.

    ``live`` holds ``(agent id, session epoch)`` of open streams. An agent stays connected when the
    store has its session (the epoch and a live state: its Hello was committed) and the old machine
    still had it live; the memory-only state of the attempts both machines hold on it (adoption,
    timeout and assignment-lease deadlines, moves in flight, dispatch order) is copied over. Attempts
    the thrown-away tick changed come back as stored and wait for their agent's report as after a
    restart. Returns the agent ids kept; the caller closes the other streams.
    """
    kept: set[str] = set()
    new.epoch = max(new.epoch, old.epoch)  # an epoch handed out is never handed out again
    new.assign_seq = max(new.assign_seq, old.assign_seq)
    new.run_seconds, new.window_run_seconds = old.run_seconds, old.window_run_seconds
    new.workflow_seconds.update(old.workflow_seconds)
    for agent_id, epoch in live:
        before = old.current(agent_id, epoch)
        agent = new.agents.get(agent_id)
        state = stored_states.get(agent_id)
        if before is None or agent is None or agent.session_epoch != epoch or state not in _LIVE:
            continue
        agent.state = state
        agent.last_seen = before.last_seen
        held_before = old.active.get(agent_id, set())
        for attempt_id in new.active.get(agent_id, set()):
            if attempt_id not in held_before:
                continue  # the thrown-away tick ended it: its report decides, as after a restart
            _copy(old.unconfirmed, new.unconfirmed, attempt_id)
            _copy(old.deadlines, new.deadlines, attempt_id)
            _copy(old.unacknowledged, new.unacknowledged, attempt_id)
            _copy(old.assign_order, new.assign_order, attempt_id)
            if attempt_id in new.unacknowledged:
                new.ack_queue.append((new.unacknowledged[attempt_id], attempt_id))
            if attempt_id in old.releasing:
                new.releasing.add(attempt_id)
            if attempt_id in old.withdrawing:  # a late success waiting for this replacement's release
                new.withdrawing[attempt_id] = old.withdrawing[attempt_id]
        if agent_id in old.held_back:
            new.held_back[agent_id] = old.held_back[agent_id]
        new.rebuild_view(agent)
        kept.add(agent_id)
    new.ack_queue = deque(sorted(new.ack_queue))
    return kept


def _copy(source: Mapping[str, _V], target: dict[str, _V], key: str) -> None:
    if key in source:
        target[key] = source[key]
    else:
        target.pop(key, None)
