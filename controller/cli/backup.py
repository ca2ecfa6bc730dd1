"""``corral backup FILE`` and ``corral restore FILE``: copies of the controller's SQLite store.

Both find the store as the controller does (``--store``/``--db`` here, else
``$CORRAL_CONTROLLER_STORE``, else the controller's config file, else the default file in the
state directory), so on a host configured once they need no flags. PostgreSQL is backed up with
its own tools (see the README, "Backup and restore").
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from corral.controller.cli.common import EXIT_ERROR, EXIT_INVALID, die, out_console

__all__ = ["backup", "restore"]

_PG_GUIDANCE = (
    "PostgreSQL is backed up with its own tools: `pg_dump -Fc -f corral.dump DSN` (consistent while the "
    "controllers run), and restored with `pg_restore --clean -d DSN corral.dump` with every controller "
    "stopped; then bump the epoch (README, 'Backup and restore')"
)

StoreOption = Annotated[
    str | None,
    typer.Option("--store", metavar="URL", help="The controller's store URL [default: as the controller would]."),
]
DbOption = Annotated[Path | None, typer.Option("--db", help="The controller's SQLite file (= --store sqlite:///DB).")]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", metavar="FILE", help="The controller's config file (for its store).")
]


def _store_path(store: str | None, db: Path | None, config: Path | None) -> Path:
    """The SQLite file the controller's settings name; exits 2 for PostgreSQL, memory or bad settings."""
    # Imported here: only these commands need the controller's settings.
    from corral.controller.settings import ControllerSettings
    from corral.controller.store.factory import sqlite_url
    from corral.layers import ConfigError, config_file, load

    if store is not None and db is not None:
        die("error: --store and --db are alternatives: give one", EXIT_INVALID)
    flags: dict[str, Any] = {}
    if store is not None:
        flags["store"] = store
    if db is not None:
        flags["store"] = sqlite_url(db)
    try:
        settings = load(ControllerSettings, flags, config_file("controller", config))
    except ConfigError as exc:
        die(f"error: {exc}", EXIT_INVALID)
    parsed = settings.parsed_store
    if parsed.kind == "postgresql":
        die(f"error: {parsed.display()} is PostgreSQL. {_PG_GUIDANCE}", EXIT_INVALID)
    if parsed.path is None:
        die("error: a memory:// store has nothing to back up or restore", EXIT_INVALID)
    return parsed.path


def backup(
    file: Annotated[Path, typer.Argument(help="Where to write the copy (one self-contained SQLite file).")],
    store: StoreOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite FILE if it exists.")] = False,
) -> None:
    """Copy the controller's SQLite store to FILE, safely while the controller runs (online backup API)."""
    from corral.controller.store.backup import BackupError
    from corral.controller.store.backup import backup as copy

    path = _store_path(store, db, config)
    try:
        size = copy(path, file, overwrite=force)
    except BackupError as exc:
        die(f"error: {exc}", EXIT_ERROR)
    out_console().print(f"backed up {path} to {file} ({size} bytes)", markup=False)


def restore(
    file: Annotated[Path, typer.Argument(help="A file written by `corral backup`.")],
    store: StoreOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Put a backup in place of the controller's SQLite store (the controller must be stopped).

    The file it replaces is kept as <store>.replaced-<time>. The restored store's session epoch is
    bumped, so attempts it does not know (started after the backup) are killed as orphans when
    their agents reconnect, and tasks it believed running are requeued if their agents no longer
    have them.
    """
    from corral.controller.store.backup import BackupError, StoreBusy
    from corral.controller.store.backup import restore as put_back

    path = _store_path(store, db, config)
    try:
        done = put_back(file, path)
    except StoreBusy as exc:
        die(f"error: {exc}", EXIT_ERROR)
    except BackupError as exc:
        die(f"error: {exc}", EXIT_ERROR)
    console = out_console()
    console.print(f"restored {file} into {path}; session epoch {done.previous_epoch} -> {done.epoch}", markup=False)
    if done.replaced is not None:
        console.print(f"the previous store is kept as {done.replaced}", markup=False)
