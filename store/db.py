"""What every part of the store shares: the engine, SQLite's in-process write lock, the
driver lane and the clock, behind one small interface (:class:`Db`).

Every public method of :class:`store.Store` is one transaction. Write transactions take
SQLite's write lock up front (``BEGIN IMMEDIATE``, see :mod:`store.engine`); on PostgreSQL
(READ COMMITTED) they rely on single-statement upserts / increments, row locks
(``FOR UPDATE``, ``SKIP LOCKED`` for claims) and a per-account advisory lock around batch
recording. Read-only methods use deferred transactions and never wait for the writer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Integer,
    String,
    Table,
    bindparam,
    func,
    select,
)

from .driver import DialectInsert, DriverLane, Sql, dialect_insert
from .engine import BEGIN_MODE_OPTION
from .errors import UnknownAccountError
from .models import accounts, require_aware

__all__ = [
    "ACCOUNT_KNOWN",
    "PG_ACCOUNT_LOCK",
    "PG_BATCH_LOCK_NAMESPACE",
    "PG_CLAIM_LOCK_NAMESPACE",
    "PG_LOCK_KNOWN_ACCOUNT",
    "Db",
    "StoreBase",
]

# PostgreSQL advisory-lock namespaces (two-int4 keys: namespace, hashtext(bot_id)).
PG_BATCH_LOCK_NAMESPACE = 0x696D  # one batch recorder per account at a time
PG_CLAIM_LOCK_NAMESPACE = 0x696E  # one claim per account at a time
#: Takes one of those locks for the rest of the transaction (PostgreSQL only).
PG_ACCOUNT_LOCK = Sql(
    lambda _: select(
        func.pg_advisory_xact_lock(
            bindparam("namespace", type_=Integer), func.hashtext(bindparam("bot_id", type_=String))
        )
    )
)
#: A row if the account exists, and then one of those locks taken for it: a lock and
#: the account check in one round trip (PostgreSQL only).
PG_LOCK_KNOWN_ACCOUNT = Sql(
    lambda _: select(
        func.pg_advisory_xact_lock(
            bindparam("namespace", type_=Integer), func.hashtext(accounts.c.bot_id)
        )
    ).where(accounts.c.bot_id == bindparam("bot_id"))
)
#: A row if the account exists.
ACCOUNT_KNOWN = Sql(
    lambda _: select(accounts.c.bot_id).where(accounts.c.bot_id == bindparam("bot_id"))
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Db:
    """One database: transactions through Core (:meth:`write`, :meth:`read`) or the driver
    lane (:attr:`lane`), the clock, and dialect-neutral statement helpers."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self.pg = engine.dialect.name == "postgresql"
        self._clock = clock or _utcnow
        # SQLite: writers of this process queue here instead of in SQLite's busy handler,
        # which sleeps in steps of up to 100 ms and so turns contention into latency.
        self._write_lock = threading.Lock() if not self.pg else None
        # The send path's statements run on the driver directly (see store.driver).
        self.lane = DriverLane(engine, self._write_lock)

    def close(self) -> None:
        self.lane.close()
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        if self._write_lock is None:
            with self.engine.begin() as conn:
                yield conn
            return
        with self._write_lock, self.engine.begin() as conn:  # BEGIN IMMEDIATE on SQLite
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(**{BEGIN_MODE_OPTION: "DEFERRED"})
            with conn.begin():
                yield conn

    def now(self) -> datetime:
        return require_aware(self._clock(), "clock()")

    def insert(self, table: Table) -> DialectInsert:
        """A dialect INSERT supporting ON CONFLICT (same API on both engines)."""
        return dialect_insert(self.engine.dialect.name)(table)

    def run(self, conn: Connection, sql: Sql, /, **params: Any) -> CursorResult[Any]:
        """``sql`` in a Core transaction (the lane runs the same statement compiled)."""
        return conn.execute(sql.core(self.engine.dialect), params)

    def require_account(self, conn: Connection, bot_id: str) -> None:
        if self.run(conn, ACCOUNT_KNOWN, bot_id=bot_id).first() is None:
            raise UnknownAccountError(f"unknown account {bot_id!r}")


class StoreBase:
    """The base of the store's per-aggregate parts (mixed into :class:`store.Store`)."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] | None = None) -> None:
        self._db = Db(engine, clock)
