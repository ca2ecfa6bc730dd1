"""Backup and restore of the SQLite store, and the lock that keeps a restore off a running controller.

- :func:`backup` copies a live database with SQLite's online backup API: one read transaction,
  so the copy is a consistent snapshot even while the controller commits. The copy is a single
  file (rollback journal, no -wal/-shm), checked with ``PRAGMA quick_check``.
- :func:`restore` copies a backup in place of a store file. It refuses while a controller holds
  the file: every controller holds a shared ``flock`` on ``<file>.lock`` for its life
  (:func:`hold_shared`) and restore needs it exclusively. The file it replaces is kept, renamed
  ``<file>.replaced-<UTC time>`` (with its -wal/-shm, so it stays consistent).
- The restored file's **session epoch** is bumped past anything the old controller can have
  handed out (:func:`restored_epoch`): agents that reconnect get a fresh epoch, and attempts the
  restored state does not know (started after the backup) are killed as orphans at their Hello.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

__all__ = ["BackupError", "Restored", "StoreBusy", "backup", "hold_shared", "restore", "restored_epoch"]

_SUFFIXES = ("", "-wal", "-shm")


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why and changes nothing."""


class StoreBusy(BackupError):
    """A controller holds the store file (or a restore is replacing it)."""


@dataclass(frozen=True, slots=True)
class Restored:
    """What :func:`restore` did."""

    path: Path
    epoch: int
    previous_epoch: int
    replaced: Path | None


def lock_path(path: Path) -> Path:
    """The lock file of a store file (next to it, so it names the same file from any process)."""
    return path.with_name(path.name + ".lock")


def _lock(path: Path, mode: int) -> IO[bytes]:
    handle = open(lock_path(path), "ab")  # noqa: SIM115 - held open for the caller's lifetime
    try:
        os.chmod(handle.name, 0o600)
        fcntl.flock(handle.fileno(), mode | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreBusy(f"{path} is in use: a controller is running on it (or a restore is); stop it first") from None
    except BaseException:
        handle.close()
        raise
    return handle


def hold_shared(path: Path) -> IO[bytes]:
    """Take the store file's lock shared (controllers); StoreBusy while a restore holds it.

    Keep the returned handle open: the kernel releases the lock when the process exits, even on
    ``kill -9``, so a crashed controller never blocks a restore.
    """
    return _lock(path, fcntl.LOCK_SH)


def _open_source(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise BackupError(f"no database at {path}")
    try:
        # Read-only: a backup must never change the live file (not even its journal mode).
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} is not a readable SQLite database: {exc}") from None
    return conn


def _epoch(conn: sqlite3.Connection) -> int:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'session_epoch'").fetchone()
    except sqlite3.DatabaseError:
        return 0
    try:
        return int(row[0]) if row is not None else 0
    except (TypeError, ValueError):
        return 0


def _copy(source: sqlite3.Connection, target: Path) -> None:
    """Copy with the online backup API into ``target`` (a new file, mode 0600), then check it."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    dest = sqlite3.connect(target, isolation_level=None)
    try:
        source.backup(dest)  # all pages in one step: one read transaction, a consistent snapshot
        dest.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        verdict = dest.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise BackupError(f"the copy failed its integrity check: {verdict}")
    finally:
        dest.close()


def backup(path: Path, target: Path, *, overwrite: bool = False) -> int:
    """Copy the store file ``path`` to ``target`` (safe while a controller runs); returns its size."""
    if target.exists() and not overwrite:
        raise BackupError(f"{target} exists (give --force to overwrite it)")
    if target.resolve() in {Path(str(path) + suffix).resolve() for suffix in _SUFFIXES}:
        raise BackupError("the backup file must not be the database itself")
    source = _open_source(path)
    temporary = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        temporary.unlink(missing_ok=True)
        _copy(source, temporary)
        os.replace(temporary, target)
    except (OSError, sqlite3.DatabaseError) as exc:
        raise BackupError(f"backup to {target} failed: {exc}") from None
    finally:
        source.close()
        temporary.unlink(missing_ok=True)
    return target.stat().st_size


def restored_epoch(backup_epoch: int, replaced_epoch: int, now_us: int) -> int:
    """The session epoch of a restored store: above any the old controller can have handed out.

    The replaced file's epoch is a floor, but it may be lost with the disk it was on; each
    Hello adds 1, so the wall clock in microseconds is a floor no real controller outruns.
    """
    return max(backup_epoch, replaced_epoch, now_us) + 1


def restore(source_path: Path, path: Path) -> Restored:
    """Put the backup ``source_path`` in place of the store file ``path`` and bump its epoch.

    StoreBusy while a controller holds ``path``; BackupError for an unusable backup. Nothing
    changes at ``path`` until the new file is complete and checked.
    """
    source = _open_source(source_path)
    try:
        if not _has_meta(source):
            raise BackupError(f"{source_path} is not a corral database (no meta table)")
        backup_epoch = _epoch(source)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # as the controller makes it
        with _lock(path, fcntl.LOCK_EX):
            previous = _replaced_epoch(path)
            temporary = path.with_name(f".{path.name}.restoring-{os.getpid()}")
            temporary.unlink(missing_ok=True)
            try:
                _copy(source, temporary)
                epoch = restored_epoch(backup_epoch, previous, time.time_ns() // 1000)
                _write_meta(temporary, epoch)
                replaced = _move_aside(path)
                os.replace(temporary, path)
            except (OSError, sqlite3.DatabaseError) as exc:
                raise BackupError(f"restore into {path} failed: {exc}") from None
            finally:
                temporary.unlink(missing_ok=True)
    finally:
        source.close()
    return Restored(path, epoch, max(backup_epoch, previous), replaced)


def _has_meta(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is not None


def _replaced_epoch(path: Path) -> int:
    if not path.is_file():
        return 0
    try:
        conn = _open_source(path)
    except BackupError:
        return 0  # unreadable: it is being replaced anyway, and the clock floor still holds
    try:
        return _epoch(conn)
    finally:
        conn.close()


def _write_meta(path: Path, epoch: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        conn.execute("BEGIN IMMEDIATE")
        for key, value in (("session_epoch", str(epoch)), ("restored_at", stamp)):
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        conn.execute("COMMIT")
    finally:
        conn.close()


def _move_aside(path: Path) -> Path | None:
    """Rename the store file and its -wal/-shm to ``<file>.replaced-<UTC>`` (together: still consistent)."""
    if not path.exists():
        for suffix in _SUFFIXES[1:]:
            Path(str(path) + suffix).unlink(missing_ok=True)  # stale sidecars must not meet the new file
        return None
    aside = path.with_name(f"{path.name}.replaced-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}")
    for suffix in _SUFFIXES:
        current = Path(str(path) + suffix)
        if current.exists():
            os.replace(current, Path(str(aside) + suffix))
    return aside
