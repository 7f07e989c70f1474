"""Figure 5, ``store``: context-token upserts and batch records per second through ``Store``,
against hand-written SQL on the same engine (SQLite, and PostgreSQL when reachable)."""

from __future__ import annotations

import json
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import OWNER, Row, pg_schema

NAME = "store"
TARGET = "reported (no target)"


def _records(start: int, n: int, users: list[str]) -> list[Any]:
    from ilinkbot.store import InboundRecord

    return [
        InboundRecord(
            message_id=f"m{i}",
            user_id=users[i % len(users)],
            context_token=f"AAR{secrets.token_hex(30)}",
            raw={
                "message_id": i,
                "from_user_id": users[i % len(users)],
                "item_list": [{"type": 1, "text_item": {"text": f"t{i}"}}],
            },
        )
        for i in range(start, start + n)
    ]


def _store_rates(
    url: str | None, home: Path, n_single: int, n_batches: int, batch: int
) -> dict[str, float]:
    from ilinkbot.store import Store

    users = [f"s{u:02d}@im.wechat" for u in range(50)]
    store = Store.open(url, home=home)
    try:
        store.save_account("bench@im.bot", token="t" * 40, base_url=None, owner_user_id=OWNER)
        singles = _records(0, n_single, users)
        started = time.perf_counter()
        for i, rec in enumerate(singles):
            store.record_batch("bench@im.bot", [rec], f"c{i}")
        single_s = time.perf_counter() - started
        batches = [_records(n_single + b * batch, batch, users) for b in range(n_batches)]
        started = time.perf_counter()
        for b, recs in enumerate(batches):
            store.record_batch("bench@im.bot", recs, f"b{b}")
        batch_s = time.perf_counter() - started
    finally:
        store.close()
    return {
        "upserts_per_s": n_single / single_s,
        "batch_records_per_s": n_batches * batch / batch_s,
    }


_FLOOR_DDL = [
    "CREATE TABLE f_inbox (id INTEGER{auto} PRIMARY KEY, bot_id TEXT NOT NULL, "
    "message_id TEXT NOT NULL, user_id TEXT NOT NULL, context_token TEXT, raw TEXT NOT NULL, "
    "received_at TEXT NOT NULL, UNIQUE (bot_id, message_id))",
    "CREATE TABLE f_peers (bot_id TEXT NOT NULL, user_id TEXT NOT NULL, context_token TEXT, "
    "last_inbound_at TEXT, sent INTEGER NOT NULL, PRIMARY KEY (bot_id, user_id))",
    "CREATE TABLE f_cursors (bot_id TEXT PRIMARY KEY, cursor TEXT NOT NULL)",
]
_FLOOR_SQL = [
    "INSERT INTO f_inbox (bot_id, message_id, user_id, context_token, raw, received_at) "
    "VALUES ({p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (bot_id, message_id) DO NOTHING",
    "INSERT INTO f_peers VALUES ({p}, {p}, {p}, {p}, 0) ON CONFLICT (bot_id, user_id) DO UPDATE "
    "SET context_token = excluded.context_token, last_inbound_at = excluded.last_inbound_at, "
    "sent = 0",
    "INSERT INTO f_cursors VALUES ({p}, {p}) ON CONFLICT (bot_id) DO UPDATE "
    "SET cursor = excluded.cursor",
]


def _floor_rates(
    connect: Callable[[], Any],
    p: str,
    auto: str,
    begin: str | None,
    n_single: int,
    n_batches: int,
    batch: int,
) -> dict[str, float]:
    """The same three statements per batch in hand-written SQL through the raw driver."""
    conn = connect()
    cur = conn.cursor()
    for ddl in _FLOOR_DDL:
        cur.execute(ddl.format(auto=auto))
    conn.commit()
    ins, peer, cursor_sql = (s.format(p=p) for s in _FLOOR_SQL)
    users = [f"s{u:02d}@im.wechat" for u in range(50)]
    now = "2025-01-01T00:00:00+00:00"

    def one_batch(recs: list[Any], cursor: str) -> None:
        if begin:
            cur.execute(begin)
        for r in recs:
            cur.execute(
                ins, ("b", r.message_id, r.user_id, r.context_token, json.dumps(r.raw), now)
            )
        for r in {r.user_id: r for r in recs}.values():
            cur.execute(peer, ("b", r.user_id, r.context_token, now))
        cur.execute(cursor_sql, ("b", cursor))
        conn.commit()

    singles = _records(0, n_single, users)
    started = time.perf_counter()
    for i, rec in enumerate(singles):
        one_batch([rec], f"c{i}")
    single_s = time.perf_counter() - started
    batches = [_records(n_single + b * batch, batch, users) for b in range(n_batches)]
    started = time.perf_counter()
    for b, recs in enumerate(batches):
        one_batch(recs, f"b{b}")
    batch_s = time.perf_counter() - started
    conn.close()
    return {
        "upserts_per_s": n_single / single_s,
        "batch_records_per_s": n_batches * batch / batch_s,
    }


def measure(quick: bool) -> dict[str, Any]:
    n_single, n_batches, batch = (300, 5, 100) if quick else (2000, 20, 100)
    out: dict[str, Any] = {"single_batches": n_single, "batches": n_batches, "batch_size": batch}
    with tempfile.TemporaryDirectory(prefix="ilinkbot-bench-") as tmp:
        ours = _store_rates(None, Path(tmp) / "home", n_single, n_batches, batch)
        db = Path(tmp) / "floor.db"

        def connect_sqlite() -> Any:
            conn = sqlite3.connect(db, isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            return conn

        floor = _floor_rates(connect_sqlite, "?", "", "BEGIN IMMEDIATE", n_single, n_batches, batch)
        out["sqlite"] = _store_row(ours, floor)
    pg = pg_schema()
    if pg is not None:
        import psycopg

        url, libpq, schema = pg
        try:
            with tempfile.TemporaryDirectory(prefix="ilinkbot-bench-") as tmp:
                ours = _store_rates(url, Path(tmp), n_single, n_batches, batch)
            floor = _floor_rates(
                lambda: psycopg.connect(libpq),
                "%s",
                " GENERATED ALWAYS AS IDENTITY",
                None,
                n_single,
                n_batches,
                batch,
            )
            out["postgresql"] = _store_row(ours, floor)
        finally:
            with psycopg.connect(libpq, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    out["target"] = TARGET
    out["met"] = None
    return out


def _store_row(ours: dict[str, float], floor: dict[str, float]) -> dict[str, Any]:
    return {
        "upserts_per_s": round(ours["upserts_per_s"], 1),
        "floor_upserts_per_s": round(floor["upserts_per_s"], 1),
        "upsert_ratio": round(ours["upserts_per_s"] / floor["upserts_per_s"], 3),
        "batch_records_per_s": round(ours["batch_records_per_s"], 1),
        "floor_batch_records_per_s": round(floor["batch_records_per_s"], 1),
        "batch_ratio": round(ours["batch_records_per_s"] / floor["batch_records_per_s"], 3),
    }


def rows(result: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for engine in ("sqlite", "postgresql"):
        s = result.get(engine)
        if s is None:
            continue
        rows.append(
            (
                f"store {engine}: context-token upserts",
                f"{s['upserts_per_s']}/s",
                f"{s['floor_upserts_per_s']}/s",
                f"{s['upsert_ratio']:.2f}",
                "-",
            )
        )
        rows.append(
            (
                f"store {engine}: batch records",
                f"{s['batch_records_per_s']}/s",
                f"{s['floor_batch_records_per_s']}/s",
                f"{s['batch_ratio']:.2f}",
                "-",
            )
        )
    return rows
