"""Measure read-then-write transactions on one SQLite file from several processes.

Every process runs ``increments`` transactions of ``SELECT value`` then
``UPDATE value = <read> + 1`` (the shape of any read-modify-write) on one counter row:

* ``legacy``: SQLAlchemy's default pysqlite setup (the driver's legacy transaction control,
  which emits no BEGIN before a SELECT), with WAL and the same 30 s busy timeout;
* ``deferred``: correct transaction boundaries but SQLite's default ``BEGIN`` (DEFERRED);
* ``immediate``: ilinkbot's recipe (:func:`store.engine.create_store_engine`:
  ``BEGIN IMMEDIATE``, WAL, synchronous=NORMAL, busy timeout).

A correct run ends with ``value == processes * increments`` and no error. Run it with
``.venv/bin/python -m tests.store.measure_sqlite_locking [--processes 4] [--increments 300]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text

from ilinkbot.store.engine import BUSY_TIMEOUT_MS, create_store_engine, resolve_url

MODES = ("legacy", "deferred", "immediate")


@dataclass(frozen=True)
class Result:
    mode: str
    processes: int
    increments: int
    expected: int
    final: int
    errors: int
    seconds: float
    first_error: str | None = None

    @property
    def lost(self) -> int:
        """Increments that committed without error yet are missing from the counter."""
        return self.expected - self.errors - self.final

    def line(self) -> str:
        return (
            f"{self.mode:<9} {self.processes}x{self.increments}: final={self.final} "
            f"expected={self.expected} errors={self.errors} lost_updates={self.lost} "
            f"({self.seconds:.2f}s)" + (f" first error: {self.first_error}" if self.errors else "")
        )


def make_engine(mode: str, path: Path) -> Engine:
    if mode == "immediate":
        return create_store_engine(resolve_url(f"sqlite:///{path}"))
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        if mode == "deferred":
            dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    if mode == "deferred":

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN")

    return engine


def _worker(mode: str, path: str, increments: int, start_at: float) -> tuple[int, str | None]:
    engine = make_engine(mode, Path(path))
    errors = 0
    first: str | None = None
    with engine.connect():
        pass  # connect (and set pragmas) before the start line
    time.sleep(max(0.0, start_at - time.time()))
    for _ in range(increments):
        try:
            with engine.begin() as conn:
                value = conn.execute(text("SELECT value FROM counter WHERE id = 1")).scalar_one()
                conn.execute(text("UPDATE counter SET value = :v WHERE id = 1"), {"v": value + 1})
        except Exception as exc:
            errors += 1
            first = first or f"{type(exc).__name__}: {getattr(exc, 'orig', exc)}"
    engine.dispose()
    return errors, first


def measure(
    mode: str, *, processes: int = 4, increments: int = 300, directory: Path | None = None
) -> Result:
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = Path(tmp) / f"{mode}.db"
        setup = make_engine("immediate", path)
        with setup.begin() as conn:
            conn.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER)"))
            conn.execute(text("INSERT INTO counter VALUES (1, 0)"))
        ctx = mp.get_context("spawn")
        start_at = time.time() + 2.0  # leaves time for the interpreters to spawn
        with ctx.Pool(processes) as pool:
            outcomes = pool.starmap(_worker, [(mode, str(path), increments, start_at)] * processes)
            seconds = time.time() - start_at
        with setup.begin() as conn:
            final = conn.execute(text("SELECT value FROM counter WHERE id = 1")).scalar_one()
        setup.dispose()
    messages = sorted({m for _, m in outcomes if m})
    return Result(
        mode,
        processes,
        increments,
        processes * increments,
        int(final),
        sum(n for n, _ in outcomes),
        seconds,
        messages[0] if messages else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--increments", type=int, default=300)
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    args = parser.parse_args()
    for mode in args.modes:
        print(
            measure(mode, processes=args.processes, increments=args.increments).line(), flush=True
        )


if __name__ == "__main__":
    main()
