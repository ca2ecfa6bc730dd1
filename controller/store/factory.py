"""One way to open a store from its URL: ``sqlite:///abs.db``, ``sqlite:rel.db``, ``memory://``, ``postgresql://...``.

The controller's ``--store``, ``corral backup`` and ``corral restore`` all go through
:func:`parse_store_url` / :func:`open_store`, so every program agrees on what a URL means.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from corral.controller.store.base import Store

__all__ = ["StoreUrl", "StoreUrlError", "open_store", "parse_store_url", "redacted", "sqlite_url"]

_MAX_URL = 4096
Kind = Literal["sqlite", "memory", "postgresql"]


class StoreUrlError(ValueError):
    """A store URL corral does not understand; the message says what is accepted."""


@dataclass(frozen=True, slots=True)
class StoreUrl:
    """A parsed store URL: ``path`` for SQLite, ``dsn`` for PostgreSQL, neither for memory."""

    kind: Kind
    path: Path | None = None
    dsn: str = ""

    def display(self) -> str:
        """What logs and messages show: the path, ``memory``, or the DSN without its password."""
        if self.kind == "sqlite":
            return str(self.path)
        if self.kind == "memory":
            return "memory"
        return redacted(self.dsn)


_ACCEPTED = "sqlite:///ABSOLUTE/PATH, sqlite:RELATIVE/PATH, memory:// or postgresql://USER@HOST:PORT/DB"


def sqlite_url(path: Path) -> str:
    """The URL of a SQLite file (``--db PATH`` is this URL): absolute, so it means the same from any directory."""
    return f"sqlite:///{str(path.expanduser().absolute()).lstrip('/')}"


def parse_store_url(url: str) -> StoreUrl:
    """Parse a store URL; StoreUrlError (a ValueError) names what is accepted."""
    if len(url) > _MAX_URL:
        raise StoreUrlError(f"store URL longer than {_MAX_URL} characters")
    if "\x00" in url:
        raise StoreUrlError("store URL contains a NUL character")
    scheme, colon, rest = url.partition(":")
    scheme = scheme.lower()
    if not colon:
        raise StoreUrlError(f"{url!r} is not a store URL; expected {_ACCEPTED}")
    if scheme == "memory":
        if rest not in ("", "//"):
            raise StoreUrlError(f"{url!r}: memory:// takes nothing after the scheme")
        return StoreUrl("memory")
    if scheme == "sqlite":
        # sqlite:///abs/path (three slashes: empty host, absolute path); sqlite:rel/path (relative)
        if rest.startswith("//"):
            host, slash, path = rest[2:].partition("/")
            if host or not slash or not path:
                raise StoreUrlError(f"{url!r}: write sqlite:///ABSOLUTE/PATH (three slashes) or sqlite:RELATIVE/PATH")
            return StoreUrl("sqlite", path=Path("/" + path))
        if not rest or rest.startswith("/"):
            if rest.startswith("/") and len(rest) > 1:
                return StoreUrl("sqlite", path=Path(rest))
            raise StoreUrlError(f"{url!r}: no file; expected sqlite:///ABSOLUTE/PATH or sqlite:RELATIVE/PATH")
        return StoreUrl("sqlite", path=Path(rest).absolute())
    if scheme in ("postgresql", "postgres"):
        if not rest.startswith("//"):
            raise StoreUrlError(f"{url!r}: expected postgresql://USER@HOST:PORT/DB")
        return StoreUrl("postgresql", dsn=url)
    raise StoreUrlError(f"unknown store scheme {scheme!r} in {redacted(url)!r}; expected {_ACCEPTED}")


def open_store(url: str, *, synchronous: str = "FULL") -> Store:
    """Open the store a URL names (StoreUrlError for a bad URL; the store's own errors otherwise).

    ``synchronous`` is SQLite's durability (FULL or NORMAL) and means nothing to the others.
    """
    parsed = parse_store_url(url)
    if parsed.kind == "memory":
        from corral.controller.store.memory import MemoryStore

        return MemoryStore()
    if parsed.kind == "sqlite":
        from corral.controller.store.sqlite import SqliteStore

        assert parsed.path is not None
        return SqliteStore(parsed.path, synchronous=synchronous)
    # Imported lazily: psycopg is loaded only by controllers that use PostgreSQL.
    try:
        module = importlib.import_module("corral.controller.store.postgres")
    except ModuleNotFoundError as exc:
        if exc.name != "corral.controller.store.postgres":
            raise
        raise StoreUrlError("this build of corral has no PostgreSQL store (corral.controller.store.postgres)") from None
    store: Store = module.PostgresStore(parsed.dsn)
    return store


def redacted(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db`` (for logs)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
