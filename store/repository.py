"""The repository: one API over SQLite and PostgreSQL.

:class:`Store` is composed of one part per aggregate (accounts, peers, inbox, sending,
outbox), which share one :class:`store.db.Db` (engine, write lock, driver lane, clock).
Every public method is one transaction (see :mod:`store.db`).

The object is thread-safe (it holds only the engine and its pool) and several processes may
open the same database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from . import migrations
from .accounts import AccountsStore
from .engine import create_store_engine, resolve_url
from .errors import StoreUnavailable, one_line
from .inbox import InboxStore
from .log import get_logger
from .outbox import OutboxStore
from .peers import PeersStore
from .sending import SendingStore, new_client_id

__all__ = ["Store", "new_client_id"]

log = get_logger(__name__)


class Store(AccountsStore, PeersStore, InboxStore, SendingStore, OutboxStore):
    """The ilinkbot store. Build it with :meth:`open`."""

    @classmethod
    def open(
        cls,
        database_url: str | None = None,
        *,
        home: Path | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> Store:
        """Open (creating and migrating as needed) the store.

        ``database_url`` None: SQLite at ``(home or $ILINKBOT_HOME or ~/.ilinkbot)/ilinkbot.db``,
        directory 0700 and file 0600. ``sqlite:///path`` or ``postgresql+psycopg://...``
        otherwise; ``sqlite://`` (in memory, one shared connection) is for single-threaded
        tests only. ``clock`` (aware UTC ``now``) is for tests.
        """
        url = resolve_url(database_url, home)
        engine = create_store_engine(url)
        try:
            migrations.migrate(engine)
        except (DBAPIError, sqlite3.Error) as exc:  # not SQLite, read-only, PG unreachable...
            engine.dispose()
            where = url.render_as_string(hide_password=True)
            raise StoreUnavailable(f"cannot open the database {where}: {one_line(exc)}") from None
        except BaseException:
            engine.dispose()
            raise
        log.debug(
            "store_opened",
            url=url.render_as_string(hide_password=True),
            dialect=engine.dialect.name,
        )
        return cls(engine, clock=clock)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        return self._db.engine

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._db.engine.dialect.name

    @property
    def schema_version(self) -> int:
        with self._db.read() as conn:
            version = migrations.current_version(conn)
        return version or 0
