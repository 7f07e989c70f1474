"""The hot paths' statements, run on the driver's connection beneath SQLAlchemy.

Through SQLAlchemy Core one short statement costs about 0.2 ms here (connection events,
the compiled-statement cache, type processing); straight on the DBAPI connection it costs
about 0.015 ms. A push runs around ten statements and recording a getupdates batch several
per message, which made the store, not the network, the slowest part of both
(``bench/run.py --only send,store``). Those statements (account and peer reads, enqueue,
mark sent, record_batch) therefore use this lane; everything else stays in Core.

Each statement is defined once, in Core (:class:`Sql`): Core connections run it as it is,
the lane runs it compiled once per dialect, with its values bound through the Core types'
bind processors and read back as :class:`store.models.UTCDateTime` and
:class:`store.models.JSONText` read them. So a row written by either lane reads the same
through the other, and no statement exists in two versions.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from datetime import UTC, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy import ClauseElement, Connection, Dialect, Engine, Executable, Table
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.compiler import SQLCompiler

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PgInsert

from .errors import StoreBusy
from .log import get_logger
from .models import JSONText, UTCDateTime

__all__ = [
    "CHECKPOINT_EVERY",
    "CoreRunner",
    "Cursor",
    "DriverLane",
    "InsertFactory",
    "Sql",
    "dialect_insert",
]

log = get_logger(__name__)

#: The dialect's ``insert`` (with ``on_conflict_do_nothing`` / ``on_conflict_do_update``).
DialectInsert: TypeAlias = "sqlite_dialect.Insert | PgInsert"
InsertFactory: TypeAlias = Callable[[Table], DialectInsert]

#: Inline (``nowait``) commits between background WAL checkpoints. A push commits twice,
#: ~4 pages each, so ~1000 commits is ~4000 pages (16 MB of WAL at most), four times
#: SQLite's default: the checkpoint's fsyncs, which hold this process's writers for
#: milliseconds, come a quarter as often (about 10 % more pushes a second one at a time,
#: ``docs/benchmarks.md``, figure ``official``).
CHECKPOINT_EVERY = 1000


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
        self.dialect = engine.dialect
        self.write_lock = write_lock
        self.pg = engine.dialect.name == "postgresql"
        self.own = not self.pg and not isinstance(engine.pool, StaticPool)
        self._idle: dict[bool, list[Any]] = {False: [], True: []}
        self._closed = False
        self._inline_commits = 0
        self._checkpointing = threading.Lock()

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().close()

    def take(self, nowait: bool = False) -> Any:
        """A connection: one of the lane's own idle ones (SQLite file), else the pool's."""
        if not self.own:
            return self._engine.raw_connection()
        try:
            return self._idle[nowait].pop()
        except IndexError:
            pass
        fairy = self._engine.raw_connection()
        conn: Any = fairy.dbapi_connection  # made by the engine, with its PRAGMAs
        fairy.detach()  # ours from now on: no pool reset; close() really closes it
        if nowait:
            # Tried on an event loop: never wait for a lock, never run a checkpoint
            # (its fsyncs take milliseconds); see :meth:`after_inline_commit`.
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        return conn

    def give(self, conn: Any, nowait: bool = False) -> None:
        """``conn`` back where :meth:`take` had it from. A connection left inside a
        transaction (a failed rollback) is closed, not reused."""
        if not self.own:
            conn.close()  # back to the pool
        elif self._closed or conn.in_transaction:
            conn.close()
        else:
            self._idle[nowait].append(conn)

    def read(self) -> _Read:
        """One read. On SQLite a lone SELECT is its own snapshot; WAL readers never wait."""
        return _Read(self)

    def write(self, *, nowait: bool = False) -> _Write:
        """One write transaction: ``BEGIN IMMEDIATE`` under the process's write lock on
        SQLite (as :meth:`store.Store._write`), the driver's implicit transaction on
        PostgreSQL. Committed on success, rolled back on any exception.

        ``nowait`` (SQLite): raise :class:`StoreBusy` at once instead of waiting when another
        thread or process holds the write lock, so a caller on an event loop can try the
        write in place and hand it to a thread only when it would wait.
        """
        return _Write(self, nowait)

    def after_inline_commit(self) -> None:
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
                with self.write_lock or nullcontext():
                    conn = self.take()
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    finally:
                        self.give(conn)
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


# The lane's transactions are context-manager classes, not generator functions: a push
# runs six of them, and @contextmanager's generator and frames were a third of a short
# read's cost.


class _Read:
    __slots__ = ("_conn", "_cur", "_lane")

    def __init__(self, lane: DriverLane) -> None:
        self._lane = lane

    def __enter__(self) -> Cursor:
        lane = self._lane
        self._conn = lane.take()
        try:
            self._cur = self._conn.cursor()
        except BaseException:
            lane.give(self._conn)
            raise
        return Cursor(lane.dialect, self._cur)

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        conn = self._conn
        try:
            self._cur.close()
            if kind is None and self._lane.pg:
                conn.rollback()  # end the implicit read transaction
        finally:
            self._lane.give(conn)


class _Write:
    __slots__ = ("_conn", "_cur", "_fail_fast", "_lane", "_nowait")

    def __init__(self, lane: DriverLane, nowait: bool) -> None:
        self._lane = lane
        self._nowait = nowait
        self._fail_fast = nowait and lane.own  # busy_timeout 0 on this connection

    def __enter__(self) -> Cursor:
        lane = self._lane
        lock = lane.write_lock
        if lock is not None and not lock.acquire(blocking=not self._nowait):
            raise StoreBusy("another writer of this process holds the lock")
        conn = cur = None
        try:
            conn = self._conn = lane.take(self._fail_fast)
            cur = self._cur = conn.cursor()
            if not lane.pg:
                _begin_immediate(cur, self._fail_fast)
        except BaseException:  # hand back what was taken, in reverse
            if cur is not None:
                cur.close()
            if conn is not None:
                lane.give(conn, self._fail_fast)
            if lock is not None:
                lock.release()
            raise
        return Cursor(lane.dialect, cur)

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        lane = self._lane
        conn = self._conn
        try:
            try:
                if kind is None:
                    try:
                        conn.commit()
                    except BaseException as failed:
                        self._roll_back(failed)
                        raise
                else:
                    self._roll_back(exc)  # then ``exc`` goes on (unless it became StoreBusy)
            finally:
                self._cur.close()
                lane.give(conn, self._fail_fast)
        finally:
            if lane.write_lock is not None:
                lane.write_lock.release()
        if kind is None and self._nowait and lane.own:
            lane.after_inline_commit()

    def _roll_back(self, exc: BaseException) -> None:
        """Roll back after ``exc``; a lock wait mid-transaction on a ``nowait`` connection
        is :class:`StoreBusy`."""
        self._conn.rollback()
        if self._fail_fast and _is_busy(exc):
            raise StoreBusy("the database's lock is taken") from None


def _is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: would have waited for another connection."""
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


def dialect_insert(dialect_name: str) -> InsertFactory:
    """The INSERT supporting ON CONFLICT of ``dialect_name`` (same API on both engines)."""
    if dialect_name == "postgresql":
        # imported here: the PostgreSQL dialect costs a SQLite user ~40 ms at start-up
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    return sqlite_dialect.insert


class Sql:
    """One statement, defined once in SQLAlchemy Core.

    ``build`` makes it for a dialect (it gets that dialect's ``insert``, whose
    ``ON CONFLICT`` clauses differ). A Core connection runs :meth:`core`; the lane runs the
    same statement compiled once per dialect, with the Core types' bind processing and its
    rows decoded as the Core types decode them.
    """

    def __init__(self, build: Callable[[InsertFactory], Executable]) -> None:
        self._build = build
        self._core: dict[str, Executable] = {}
        self._compiled: dict[str, _Compiled] = {}

    def core(self, dialect: Dialect) -> Executable:
        """The statement for ``dialect`` (built once)."""
        stmt = self._core.get(dialect.name)
        if stmt is None:
            stmt = self._core[dialect.name] = self._build(dialect_insert(dialect.name))
        return stmt

    def compiled(self, dialect: Dialect) -> _Compiled:
        """The statement as the driver's SQL text and parameter order (compiled once)."""
        found = self._compiled.get(dialect.name)
        if found is None:
            found = self._compiled[dialect.name] = _Compiled(self.core(dialect), dialect)
        return found


class _Compiled:
    __slots__ = ("_defaults", "_names", "_pick", "_positional", "_processors", "decode", "sql")

    def __init__(self, stmt: Executable, dialect: Dialect) -> None:
        assert isinstance(stmt, ClauseElement)
        compiled = stmt.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql = compiled.string
        if "POSTCOMPILE" in self.sql:  # an expanding IN: its SQL text is not fixed
            raise ValueError(f"the lane cannot run {self.sql!r}: use = ... OR = ...")
        self._positional = compiled.positional
        names = compiled.positiontup if compiled.positional else compiled.bind_names.values()
        self._names = list(names or ())
        # The statement's own values (a literal 0, say), which the caller does not give,
        # by position; the caller's values are picked in C (most of a short statement's
        # cost here).
        self._defaults: list[tuple[int, Any]] = []
        given_names: list[str] = []
        self._processors: list[tuple[int, Callable[[Any], Any]]] = []
        for i, name in enumerate(self._names):
            bind = compiled.binds[name]
            if bind.required:
                given_names.append(name)
            else:
                self._defaults.append((i, bind.effective_value))
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                self._processors.append((i, process))
        self._pick: Callable[[Mapping[str, Any]], Sequence[Any]]
        if len(given_names) > 1:
            self._pick = itemgetter(*given_names)
        elif given_names:
            only = given_names[0]
            self._pick = lambda given: (given[only],)
        else:
            self._pick = lambda _: ()
        selected = getattr(stmt, "exported_columns", None)
        self.decode = _decoder(list(selected)) if selected else None

    def params(self, given: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        """The driver's parameters: ``given`` by name (a missing one is a KeyError), the
        statement's own literals otherwise, each processed as its Core type binds it."""
        values: Sequence[Any] = self._pick(given)
        if self._defaults or self._processors:
            values = list(values)
            for i, own in self._defaults:  # ascending: each lands at its position
                values.insert(i, own)
            for i, process in self._processors:
                values[i] = process(values[i])
        if self._positional:
            return values
        return dict(zip(self._names, values, strict=True))


class Cursor:
    """A DBAPI cursor running :class:`Sql` statements; rows come back as the Core types
    read them (:meth:`one`, :meth:`all` as dicts by column name)."""

    def __init__(self, dialect: Dialect, cur: Any) -> None:
        self._dialect = dialect
        self._cur = cur

    def _run(self, sql: Sql, params: Mapping[str, Any]) -> _Compiled:
        compiled = sql.compiled(self._dialect)
        self._cur.execute(compiled.sql, compiled.params(params))
        return compiled

    def execute(self, sql: Sql, /, **params: Any) -> int:
        self._run(sql, params)
        return int(self._cur.rowcount)

    def row(self, sql: Sql, /, **params: Any) -> tuple[Any, ...]:
        """The first row of a statement that always returns one, as a raw driver tuple."""
        self._run(sql, params)
        return tuple(self._cur.fetchone())

    def rows(self, sql: Sql, /, **params: Any) -> list[tuple[Any, ...]]:
        """Every row of ``sql`` as raw driver tuples (no type decoding)."""
        self._run(sql, params)
        return [tuple(r) for r in self._cur.fetchall()]

    def scalar(self, sql: Sql, /, **params: Any) -> Any:
        self._run(sql, params)
        row = self._cur.fetchone()
        return None if row is None else row[0]

    def scalars_many(self, sql: Sql, each: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Run ``sql`` once per mapping in ``each``, in order, and return the first column
        of each run's first row (``None`` where it returned none).

        On PostgreSQL the runs go out in one pipeline: one round trip instead of one per
        run, which is most of a 100-message batch's time. SQLite is in-process and runs
        them one by one, as PostgreSQL does a single run (a pipeline costs more than it
        saves there)."""
        if self._dialect.name != "postgresql" or len(each) < 2:
            return [self.scalar(sql, **params) for params in each]
        compiled = sql.compiled(self._dialect)
        cur = self._cur
        found: list[Any] = []
        cur.executemany(compiled.sql, [compiled.params(p) for p in each], returning=True)
        while True:
            row = cur.fetchone()
            found.append(None if row is None else row[0])
            if not cur.nextset():
                return found

    def execute_many(self, sql: Sql, each: Sequence[Mapping[str, Any]]) -> None:
        """Run ``sql`` once per mapping in ``each``, in order (pipelined on PostgreSQL)."""
        if len(each) < 2:
            for params in each:
                self._run(sql, params)
            return
        compiled = sql.compiled(self._dialect)
        self._cur.executemany(compiled.sql, [compiled.params(p) for p in each])

    def one(self, sql: Sql, /, **params: Any) -> dict[str, Any] | None:
        compiled = self._run(sql, params)
        assert compiled.decode is not None, "the statement returns no rows"
        row = self._cur.fetchone()
        return None if row is None else compiled.decode(row)

    def all(self, sql: Sql, /, **params: Any) -> list[dict[str, Any]]:
        compiled = self._run(sql, params)
        assert compiled.decode is not None, "the statement returns no rows"
        decode = compiled.decode
        return [decode(r) for r in self._cur.fetchall()]


class CoreRunner:
    """:class:`Cursor`'s ``execute`` and ``rows`` on a Core connection, for code that runs
    the same statements in either kind of transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def execute(self, sql: Sql, /, **params: Any) -> int:
        return int(self._conn.execute(sql.core(self._conn.dialect), params).rowcount)

    def rows(self, sql: Sql, /, **params: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._conn.execute(sql.core(self._conn.dialect), params)]


Decoder = Callable[[Sequence[Any]], dict[str, Any]]


def _decoder(selected: Sequence[Any]) -> Decoder:
    names = [getattr(c, "name", None) or f"column_{i}" for i, c in enumerate(selected)]
    kinds = [
        "ts"
        if isinstance(c.type, UTCDateTime)
        else "json"
        if isinstance(c.type, JSONText)
        else None
        for c in selected
    ]

    def decode(row: Sequence[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, kind, value in zip(names, kinds, row, strict=True):
            if value is not None and kind is not None:
                value = _read_ts(value) if kind == "ts" else json.loads(value)
            out[name] = value
        return out

    return decode


def _read_ts(value: str | datetime) -> datetime:
    if isinstance(value, str):  # SQLite: naive UTC text
        return datetime.fromisoformat(value + "+00:00")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
