"""Engine construction: where the data lives, and the SQLite transaction recipe.

SQLite recipe (measured in ``tests/store/measure_sqlite_locking.py``, see ``docs/store.md``):

* ``journal_mode=WAL`` (readers never block the writer), ``synchronous=NORMAL`` (durable
  against process crashes; a power cut may lose the last transactions but never corrupts),
  ``foreign_keys=ON``, ``busy_timeout`` of 30 s;
* the driver's legacy transaction handling is switched off (``isolation_level = None``) and
  SQLAlchemy's ``begin`` event emits the ``BEGIN`` itself: ``BEGIN IMMEDIATE`` for every
  write transaction, so the write lock is taken up front (waiting on the busy timeout) instead
  of being upgraded mid-transaction, which SQLite refuses with "database is locked" at once.
  Read-only transactions opt into ``BEGIN DEFERRED`` through the execution option
  :data:`BEGIN_MODE_OPTION` and run in parallel with the writer.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from .errors import DatabaseUrlError, StoreUnavailable
from .log import get_logger

__all__ = [
    "BEGIN_MODE_OPTION",
    "BUSY_TIMEOUT_MS",
    "DEFAULT_FILENAME",
    "create_store_engine",
    "default_home",
    "resolve_url",
]

log = get_logger(__name__)

DEFAULT_FILENAME = "ilinkbot.db"
BUSY_TIMEOUT_MS = 30_000
#: Execution option read by the SQLite ``begin`` hook: "IMMEDIATE" (default) or "DEFERRED".
BEGIN_MODE_OPTION = "ilinkbot_sqlite_begin"

_MIN_SQLITE = (3, 35, 0)  # RETURNING, UPSERT ... WHERE, NULLS LAST


def default_home() -> Path:
    """``$ILINKBOT_HOME``, else ``~/.ilinkbot``."""
    env = os.environ.get("ILINKBOT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".ilinkbot"


def resolve_url(database_url: str | None, home: Path | None = None) -> URL:
    """The URL to open. ``None`` means SQLite at ``<home>/ilinkbot.db``.

    ``postgresql://`` and ``postgres://`` are read as ``postgresql+psycopg://`` (psycopg 3 is
    the driver ilinkbot ships with).
    """
    if database_url is None or database_url == "":
        path = (home if home is not None else default_home()) / DEFAULT_FILENAME
        return URL.create("sqlite+pysqlite", database=str(path))
    if database_url.startswith("postgres://"):
        database_url = "postgresql://" + database_url[len("postgres://") :]
    try:
        url = make_url(database_url)
    except ArgumentError:  # the text is not echoed: it may hold a password
        raise DatabaseUrlError(
            "database_url is not a URL: use sqlite:///PATH or postgresql://USER@HOST/DB"
        ) from None
    backend = url.get_backend_name()
    if backend == "postgresql":
        if url.drivername in ("postgresql", "postgresql+psycopg"):
            return url.set(drivername="postgresql+psycopg")
        raise DatabaseUrlError(
            f"unsupported PostgreSQL driver {url.drivername!r}: use postgresql+psycopg://"
        )
    if backend == "sqlite":
        if url.drivername not in ("sqlite", "sqlite+pysqlite"):
            raise DatabaseUrlError(f"unsupported SQLite driver {url.drivername!r}: use sqlite://")
        return url.set(drivername="sqlite+pysqlite")
    raise DatabaseUrlError(
        f"unsupported database {backend!r}: use sqlite:// or postgresql+psycopg://"
    )


def _is_memory(url: URL) -> bool:
    db = url.database
    return not db or db == ":memory:" or db.startswith("file::memory:")


def _prepare_sqlite_file(path: Path) -> None:
    """Create the directory (0700) and the database file (0600) before SQLite does.

    An existing directory is left as is (it may be shared on purpose) but a warning is logged if
    others can read it; the database file holds bot tokens and is always tightened to 0600.
    """
    directory = path.parent
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    else:
        mode = stat.S_IMODE(directory.stat().st_mode)
        if mode & 0o077:
            log.warning("store_dir_permissive", path=str(directory), mode=oct(mode))
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    # SQLite creates -wal/-shm with the database file's mode, so these follow.
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if stat.S_IMODE(candidate.stat().st_mode) != 0o600:
                os.chmod(candidate, 0o600)
        except FileNotFoundError:
            pass
        except PermissionError:
            log.warning("store_file_chmod_failed", path=str(candidate))


def _install_sqlite_recipe(engine: Engine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # Take transaction control away from the driver: no implicit BEGIN, no implicit COMMIT
        # before DDL. SQLAlchemy's "begin" event below emits BEGIN instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if wal:
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(BEGIN_MODE_OPTION, "IMMEDIATE")
        if mode not in ("IMMEDIATE", "DEFERRED", "EXCLUSIVE"):
            raise ValueError(f"bad SQLite BEGIN mode {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")


def create_store_engine(url: URL) -> Engine:
    """An engine for ``url`` (as returned by :func:`resolve_url`), shareable across threads."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise RuntimeError(
                f"SQLite {sqlite3.sqlite_version} is too old, ilinkbot needs "
                f"{'.'.join(map(str, _MIN_SQLITE))} or newer"
            )
        memory = _is_memory(url)
        connect_args: dict[str, Any] = {
            "check_same_thread": False,
            "timeout": BUSY_TIMEOUT_MS / 1000,
        }
        if memory:
            # One shared connection, or every pooled connection would see its own empty db.
            engine = create_engine(url, connect_args=connect_args, poolclass=StaticPool)
        else:
            assert url.database is not None
            path = Path(url.database).expanduser().absolute()
            url = url.set(database=str(path))
            if path.is_dir():
                raise DatabaseUrlError(f"the database path {path} is a directory, not a file")
            try:
                _prepare_sqlite_file(path)
            except OSError as exc:  # a read-only or full disk, no permission
                raise StoreUnavailable(
                    f"cannot create the database {path}: {exc.strerror or exc}"
                ) from None
            engine = create_engine(url, connect_args=connect_args, pool_size=8, max_overflow=8)
        _install_sqlite_recipe(engine, wal=not memory)
        return engine
    if backend == "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    raise DatabaseUrlError(f"unsupported database {backend!r}")
