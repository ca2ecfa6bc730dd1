"""A throwaway PostgreSQL server for tests: ``initdb`` in a temp dir, on a free port, stopped at the end.

As root the server runs as an unprivileged user (``postgres`` when it exists, else ``nobody``):
PostgreSQL refuses to run as root. Where no PostgreSQL binaries are installed, :func:`find_bindir`
returns ``None`` and the fixtures skip with that reason.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PgServer", "find_bindir", "running_server"]

_SEARCH = ("/usr/lib/postgresql",)  # Debian's layout: /usr/lib/postgresql/<major>/bin


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: ``$CORRAL_PG_BINDIR``, ``$PATH``, or Debian's."""
    override = os.environ.get("CORRAL_PG_BINDIR")
    if override:
        return Path(override) if (Path(override) / "initdb").exists() else None
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for root in _SEARCH:
        base = Path(root)
        if base.is_dir():
            for major in sorted(base.iterdir(), reverse=True):
                if (major / "bin" / "initdb").exists():
                    return major / "bin"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) to run the server as when we are root, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")


class PgServer:
    """One PostgreSQL cluster in a temp dir. ``dsn(db)`` gives a libpq URL; ``create_database`` a fresh one."""

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        self.durable = durable  # fsync on (benchmarks) or off (correctness tests: faster, same semantics)
        self.root = Path(tempfile.mkdtemp(prefix="corral-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = "corral"
        self._ids = _run_as()

    def _cmd(self, *argv: str) -> subprocess.CompletedProcess[str]:
        uid, gid = self._ids if self._ids is not None else (None, None)
        return subprocess.run(
            list(argv), check=True, capture_output=True, text=True, user=uid, group=gid, cwd=self.root, timeout=120
        )

    def start(self) -> PgServer:
        if self._ids is not None:
            os.chown(self.root, *self._ids)
        self._cmd(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8", "--no-sync"
        )
        settings = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.root}",
            "-c max_connections=200",
        ]
        if not self.durable:
            settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._cmd(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            " ".join(settings),
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its DSN."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_server(*, durable: bool = False) -> Iterator[PgServer]:
    """A started server, stopped and removed on exit. Raises ``LookupError`` when PostgreSQL is not installed."""
    bindir = find_bindir()
    if bindir is None:
        raise LookupError("PostgreSQL is not installed (no initdb on PATH or under /usr/lib/postgresql)")
    server = PgServer(bindir, durable=durable).start()
    try:
        yield server
    finally:
        server.stop()
