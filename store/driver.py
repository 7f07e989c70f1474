"""The hot paths' statements, run on the driver's connection beneath SQLAlchemy.

Through SQLAlchemy Core one short statement costs about 0.2 ms here (connection events,
the compiled-statement cache, type processing); straight on the DBAPI connection it costs
about 0.015 ms. A push runs around ten statements and recording a getupdates batch several
per message, which made the store, not the network, the slowest part of both
(``bench/run.py --only send,store``). Those statements (account and peer reads, enqueue,
mark sent, record_batch) therefore use this lane; everything else stays in Core.

Values are written exactly as the Core types write them (:class:`store.models.UTCDateTime`,
:class:`store.models.JSONText`) and read back the same way, so a row written by either lane
reads the same through the other. SQL is written once with ``?`` placeholders and adapted to
the PostgreSQL driver's ``%s``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Table
from sqlalchemy.pool import StaticPool

from .errors import StoreBusy
from .log import get_logger
from .models import JSONText, UTCDateTime, require_aware

__all__ = ["CHECKPOINT_EVERY", "Cursor", "DriverLane", "columns"]

log = get_logger(__name__)

#: Inline (``nowait``) commits between background WAL checkpoints: a push commits twice,
#: ~4 pages each, so ~250 commits is SQLite's default of ~1000 pages.
CHECKPOINT_EVERY = 250


class DriverLane:
    """Read and write transactions on DBAPI connections of ``engine``.

    For a SQLite file the lane keeps its own idle connections (made by the engine, so with
    its PRAGMAs, then detached from its pool): taking one is a list pop instead of a pool
    checkout and reset (~0.02 ms each, several per push). Connections for ``nowait``
    writes are kept apart with ``busy_timeout`` 0. PostgreSQL and in-memory SQLite use the
    engine's pool.
    """

    def __init__(self, engine: Engine, write_lock: threading.Lock | None) -> None:
        self._engine = engine
        self._write_lock = write_lock
        self.pg = engine.dialect.name == "postgresql"
        self._own = not self.pg and not isinstance(engine.pool, StaticPool)
        self._idle: dict[bool, list[Any]] = {False: [], True: []}
        self._closed = False
        self._sql: dict[str, str] = {}
        self._inline_commits = 0
        self._checkpointing = threading.Lock()

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().close()

    def sql(self, statement: str) -> str:
        """``statement`` in the driver's placeholder style (cached)."""
        out = self._sql.get(statement)
        if out is None:
            out = statement.replace("?", "%s") if self.pg else statement
            self._sql[statement] = out
        return out

    def ts(self, value: datetime | None) -> Any:
        """A timestamp as UTCDateTime stores it: naive UTC ISO text on SQLite."""
        if value is None:
            return None
        value = require_aware(value, "timestamp")
        if self.pg:
            return value
        return value.replace(tzinfo=None).isoformat(" ", "microseconds")

    @contextmanager
    def _connection(self, nowait: bool = False) -> Iterator[Any]:
        if not self._own:
            pooled = self._engine.raw_connection()
            try:
                yield pooled
            finally:
                pooled.close()  # back to the pool
            return
        idle = self._idle[nowait]
        conn: Any
        try:
            conn = idle.pop()
        except IndexError:
            fairy = self._engine.raw_connection()
            conn = fairy.dbapi_connection  # made by the engine, with its PRAGMAs
            fairy.detach()  # ours from now on: no pool reset; close() really closes it
            if nowait:
                # Tried on an event loop: never wait for a lock, never run a checkpoint
                # (its fsyncs take milliseconds); see _after_inline_commit.
                conn.execute("PRAGMA busy_timeout = 0")
                conn.execute("PRAGMA wal_autocheckpoint = 0")
        try:
            yield conn
        finally:
            # A connection left inside a transaction (a failed rollback) is not reused.
            if self._closed or conn.in_transaction:
                conn.close()
            else:
                idle.append(conn)

    @contextmanager
    def read(self) -> Iterator[Cursor]:
        """One read. On SQLite a lone SELECT is its own snapshot; WAL readers never wait."""
        with self._connection() as conn:
            cur = conn.cursor()
            try:
                yield Cursor(self, cur)
            finally:
                cur.close()
            if self.pg:
                conn.rollback()  # end the implicit read transaction

    @contextmanager
    def write(self, *, nowait: bool = False) -> Iterator[Cursor]:
        """One write transaction: ``BEGIN IMMEDIATE`` under the process's write lock on
        SQLite (as :meth:`store.Store._write`), the driver's implicit transaction on
        PostgreSQL. Committed on success, rolled back on any exception.

        ``nowait`` (SQLite): raise :class:`StoreBusy` at once instead of waiting when another
        thread or process holds the write lock, so a caller on an event loop can try the
        write in place and hand it to a thread only when it would wait.
        """
        lock = self._write_lock
        if lock is not None and not lock.acquire(blocking=not nowait):
            raise StoreBusy("another writer of this process holds the lock")
        fail_fast = nowait and self._own  # busy_timeout 0 on this connection
        try:
            with self._connection(fail_fast) as conn:
                cur = conn.cursor()
                try:
                    if not self.pg:
                        _begin_immediate(cur, fail_fast)
                    try:
                        yield Cursor(self, cur)
                        conn.commit()
                    except BaseException as exc:
                        conn.rollback()
                        if fail_fast and _is_busy(exc):  # a lock wait mid-transaction
                            raise StoreBusy("the database's lock is taken") from None
                        raise
                finally:
                    cur.close()
        finally:
            if lock is not None:
                lock.release()
        if nowait and self._own:
            self._after_inline_commit()

    def _after_inline_commit(self) -> None:
        """SQLite checkpoints the WAL into the database (copy, then fsync) when a commit finds
        it over ~1000 pages, in the committing connection. Inline connections have that off;
        instead, every CHECKPOINT_EVERY of their commits a short-lived thread checkpoints,
        holding this process's write lock so the WAL can restart from its beginning
        afterwards (meanwhile inline writes fail fast and wait in a thread). The loop never
        waits for a disk flush, and the WAL stays about as small as SQLite's default keeps
        it."""
        self._inline_commits += 1
        if self._inline_commits % CHECKPOINT_EVERY or not self._checkpointing.acquire(False):
            return

        def checkpoint() -> None:
            try:
                with self._write_lock or nullcontext(), self._connection() as conn:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:  # the next round tries again
                log.warning("store_checkpoint_failed", error=str(exc))
            finally:
                self._checkpointing.release()

        threading.Thread(target=checkpoint, name="ilinkbot-checkpoint", daemon=True).start()


def _begin_immediate(cur: Any, nowait: bool) -> None:
    try:
        cur.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if nowait and _is_busy(exc):
            raise StoreBusy("another process holds the database's write lock") from None
        raise


def _is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: would have waited for another connection."""
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


class Cursor:
    """A DBAPI cursor that decodes rows into dicts with the Core types' Python values."""

    def __init__(self, lane: DriverLane, cur: Any) -> None:
        self._lane = lane
        self._cur = cur

    def execute(self, statement: str, params: Sequence[Any] = ()) -> int:
        self._cur.execute(self._lane.sql(statement), tuple(params))
        return int(self._cur.rowcount)

    def row(self, statement: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        """The first row of a statement that always returns one, as a tuple."""
        self._cur.execute(self._lane.sql(statement), tuple(params))
        return tuple(self._cur.fetchone())

    def rows(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of ``statement`` as raw driver tuples (no type decoding)."""
        self._cur.execute(self._lane.sql(statement), tuple(params))
        return [tuple(r) for r in self._cur.fetchall()]

    def scalar(self, statement: str, params: Sequence[Any] = ()) -> Any:
        self._cur.execute(self._lane.sql(statement), tuple(params))
        row = self._cur.fetchone()
        return None if row is None else row[0]

    def one(
        self, table: Table, statement: str, params: Sequence[Any] = ()
    ) -> dict[str, Any] | None:
        """The first row of ``statement``, whose columns must be :func:`columns` of ``table``."""
        self._cur.execute(self._lane.sql(statement), tuple(params))
        row = self._cur.fetchone()
        return None if row is None else _decoder(table)(row)

    def all(self, table: Table, statement: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        self._cur.execute(self._lane.sql(statement), tuple(params))
        decode = _decoder(table)
        return [decode(r) for r in self._cur.fetchall()]


def columns(table: Table) -> str:
    """The column list every lane SELECT/RETURNING on ``table`` uses (decoder order)."""
    return ", ".join(c.name for c in table.columns)


Decoder = Callable[[Sequence[Any]], dict[str, Any]]
_DECODERS: dict[str, Decoder] = {}


def _decoder(table: Table) -> Decoder:
    cached = _DECODERS.get(table.name)
    if cached is not None:
        return cached
    names = [c.name for c in table.columns]
    kinds = [
        "ts"
        if isinstance(c.type, UTCDateTime)
        else "json"
        if isinstance(c.type, JSONText)
        else None
        for c in table.columns
    ]

    def decode(row: Sequence[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, kind, value in zip(names, kinds, row, strict=True):
            if value is not None and kind is not None:
                value = _read_ts(value) if kind == "ts" else json.loads(value)
            out[name] = value
        return out

    _DECODERS[table.name] = decode
    return decode


def _read_ts(value: str | datetime) -> datetime:
    if isinstance(value, str):  # SQLite: naive UTC text
        return datetime.fromisoformat(value + "+00:00")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
