"""The send path's statements run on the driver connection (store/driver.py): what they write
must read back the same through SQLAlchemy Core and the other way round, and a ``nowait``
write must fail at once, writing nothing, when another writer holds SQLite's lock."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ilinkbot.store import InboundRecord, OutboxState, Store, StoreBusy, UnknownAccountError


def _seen(store: Store, bot: str, user: str) -> None:
    store.record_batch(
        bot,
        [
            InboundRecord(
                message_id=f"m-{user}", user_id=user, context_token="ctx", raw={}, created_at=None
            )
        ],
        "c",
    )


def test_lane_rows_read_back_identically_through_core(store: Store, bot: str) -> None:
    payload = {"item": {"type": 1, "text_item": {"text": 'héllo ✓ "quoted"'}}, "n": [1, None]}
    rows, claimed = store.enqueue_claimed(bot, "u@im.wechat", [payload], lease_seconds=30)
    (row,) = rows
    # list_outbox is Core; get_outbox is the lane: both equal the row enqueue returned.
    (core,) = store.list_outbox(bot_id=bot)
    assert core == row == store.get_outbox(row.id)
    assert core.payload == payload and core.state is OutboxState.SENDING and core.attempts == 1
    assert core.claimed_until is not None and core.claimed_until.tzinfo is UTC
    assert claimed == [row]
    # A Core write (mark_held) is read back by the lane; a lane write (mark_sent) by Core.
    held = store.mark_held(row.id, "window closed")
    assert store.get_outbox(row.id) == held
    retried = store.retry_outbox(row.id)
    again = store.claim(bot, ids=[retried.id])[0]
    (sent,) = store.mark_sent_many([(again.id, "42")])
    assert store.list_outbox(bot_id=bot) == [sent]
    assert sent.state is OutboxState.SENT and sent.message_id == "42"
    assert sent.sent_at is not None and abs(sent.sent_at - datetime.now(UTC)).total_seconds() < 60


def test_lane_reads_match_core_for_accounts_and_peers(store: Store, bot: str) -> None:
    _seen(store, bot, "u@im.wechat")
    store.set_alias(bot, "u@im.wechat", "mum")
    (listed,) = [a for a in store.list_accounts() if a.bot_id == bot]
    assert listed == store.get_account(bot)
    assert listed.state == "active" and listed.last_used_at.tzinfo is UTC
    assert store.resolve_alias(bot, "mum") == "u@im.wechat"
    assert store.resolve_alias(bot, "nobody") is None
    (peer,) = store.list_peers(bot)  # Core
    assert store.get_peer(bot, "u@im.wechat") == peer  # lane
    assert peer.context_token == "ctx" and peer.alias == "mum"


def test_recorded_batches_read_back_identically_through_core(store: Store, bot: str) -> None:
    from datetime import timedelta, timezone

    east = timezone(timedelta(hours=8))  # a non-UTC creation time comes back in UTC
    created = datetime(2026, 11, 21, 20, 0, 0, 123456, tzinfo=east)
    records = [
        InboundRecord(
            message_id="1",
            user_id="u@im.wechat",
            context_token="c1",
            raw={"text": "héllo", "n": [1, None]},
            created_at=created,
        ),
        InboundRecord(
            message_id="2",
            user_id="u@im.wechat",
            context_token=None,
            raw='{"text": "no token"}',
            created_at=None,
        ),
        InboundRecord(
            message_id="1", user_id="u@im.wechat", context_token="dup", raw={}, created_at=None
        ),  # a duplicate within the batch
    ]
    rows = store.record_batch(bot, records, "cursor-1")
    assert [r.message_id for r in rows] == ["1", "2"]
    assert store.unhandled(bot) == rows  # Core reads what the lane wrote
    assert rows[0].created_at == created and rows[0].created_at.tzinfo is UTC
    assert rows[1].raw == {"text": "no token"}
    peer = store.get_peer(bot, "u@im.wechat")
    assert peer is not None and peer.context_token == "c1"  # "2" had none: "1"'s is kept
    assert peer.last_inbound_at is not None and peer.sent_since_inbound == 0
    assert store.get_cursor(bot) == "cursor-1"
    assert store.record_batch(bot, records[:1], "") == []  # a replay adds nothing
    assert store.get_cursor(bot) == "cursor-1"  # an empty cursor does not move it


def test_enqueue_for_an_unknown_account_writes_nothing(store: Store, bot: str) -> None:
    with pytest.raises(UnknownAccountError):
        store.enqueue_claimed("nobody@im.bot", "u@im.wechat", [{"n": 1}])
    assert store.list_outbox() == []


def test_a_failed_write_rolls_back_and_the_next_one_works(store: Store, bot: str) -> None:
    rows, _ = store.enqueue_claimed(bot, "u@im.wechat", [{"n": 1}], client_ids=["fixed-1"])
    with pytest.raises(TypeError):  # a second payload that cannot be stored (not JSON)
        store.enqueue_claimed(bot, "v@im.wechat", [{"n": 2}, {"bad": object()}])
    assert [r.id for r in store.list_outbox()] == [rows[0].id]
    more, _ = store.enqueue_claimed(bot, "v@im.wechat", [{"n": 3}])
    assert [r.id for r in store.list_outbox()] == [rows[0].id, more[0].id]


# ---- nowait (SQLite only: PostgreSQL has no database-wide write lock)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    store = Store.open(None, home=tmp_path)
    store.save_account("b@im.bot", token="t", base_url=None, owner_user_id=None)
    return store


def test_nowait_fails_at_once_while_another_process_holds_the_lock(
    sqlite_store: Store, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "ilinkbot.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # as another ilinkbot process mid-write
    started = time.monotonic()
    with pytest.raises(StoreBusy):
        sqlite_store.enqueue_claimed("b@im.bot", "u@im.wechat", [{"n": 1}], nowait=True)
    with pytest.raises(StoreBusy):
        sqlite_store.mark_sent_many([(1, "x")], nowait=True)
    assert time.monotonic() - started < 1.0  # not the 30 s busy timeout
    # Without nowait the write waits for the lock, then goes through.
    done: list[object] = []
    waiter = threading.Thread(
        target=lambda: done.append(
            sqlite_store.enqueue_claimed("b@im.bot", "u@im.wechat", [{"n": 2}])
        )
    )
    waiter.start()
    time.sleep(0.3)
    assert done == []  # still waiting
    other.execute("COMMIT")
    waiter.join(10)
    assert len(done) == 1
    assert [r.payload for r in sqlite_store.list_outbox()] == [{"n": 2}]  # nothing from nowait
    # And nowait works again once the lock is free.
    rows, _ = sqlite_store.enqueue_claimed("b@im.bot", "v@im.wechat", [{"n": 3}], nowait=True)
    assert rows[0].payload == {"n": 3}
    other.close()
    sqlite_store.close()


def test_nowait_fails_at_once_while_another_thread_writes(sqlite_store: Store) -> None:
    inside, leave = threading.Event(), threading.Event()

    def slow_writer() -> None:
        with sqlite_store._db.lane.write():  # a writer of this process, mid-transaction
            inside.set()
            leave.wait(10)

    t = threading.Thread(target=slow_writer)
    t.start()
    assert inside.wait(10)
    try:
        with pytest.raises(StoreBusy):
            sqlite_store.enqueue_claimed("b@im.bot", "u@im.wechat", [{"n": 1}], nowait=True)
    finally:
        leave.set()
        t.join(10)
    rows, _ = sqlite_store.enqueue_claimed("b@im.bot", "u@im.wechat", [{"n": 1}], nowait=True)
    assert [r.id for r in sqlite_store.list_outbox()] == [rows[0].id]
    sqlite_store.close()


def test_inline_writes_checkpoint_the_wal_in_the_background(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inline (nowait) connections never checkpoint themselves (a checkpoint fsyncs, which
    would stall an event loop); a background thread does, so the WAL stays small."""
    import ilinkbot.store.driver as driver

    monkeypatch.setattr(driver, "CHECKPOINT_EVERY", 250)  # the mechanism, at a test's size

    def write(fn, *args):  # type: ignore[no-untyped-def]
        try:  # as bot.service.Service.write: in place, or wait when busy
            return fn(*args, nowait=True)
        except StoreBusy:
            return fn(*args)

    wal = tmp_path / "ilinkbot.db-wal"
    pairs = 5 * driver.CHECKPOINT_EVERY  # 10 checkpoint rounds' worth of commits
    for i in range(pairs):
        _, claimed = write(
            sqlite_store.enqueue_claimed, "b@im.bot", f"u{i % 10}@im.wechat", [{"text": "x" * 200}]
        )
        write(sqlite_store.mark_sent_many, [(claimed[0].id, str(i))])
    deadline = time.monotonic() + 10
    while sqlite_store._db.lane._checkpointing.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    # Without checkpoints the WAL would hold every page of 2 x `pairs` commits (~40 MB).
    assert wal.stat().st_size < 12 * 2**20, wal.stat().st_size
    assert len(sqlite_store.list_outbox(state="sent")) == pairs
    sqlite_store.close()


def test_a_lock_wait_mid_transaction_is_busy_and_writes_nothing(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With busy_timeout 0 any statement of a nowait write that would wait fails; that too
    is StoreBusy (the caller retries in a thread), after a rollback."""
    import ilinkbot.store.driver as driver

    real = driver.Cursor.scalar

    def locked_insert(self, sql, /, **params):  # type: ignore[no-untyped-def]
        if "payload" in params:  # the outbox insert
            raise sqlite3.OperationalError("database is locked")
        return real(self, sql, **params)

    monkeypatch.setattr(driver.Cursor, "scalar", locked_insert)
    with pytest.raises(StoreBusy):
        sqlite_store.enqueue_claimed("b@im.bot", "u@im.wechat", [{"n": 1}], nowait=True)
    with pytest.raises(sqlite3.OperationalError):  # a waiting write reports it as it is
        sqlite_store.enqueue_claimed("b@im.bot", "u@im.wechat", [{"n": 1}])
    monkeypatch.setattr(driver.Cursor, "scalar", real)
    assert sqlite_store.list_outbox() == []
    rows, _ = sqlite_store.enqueue_claimed("b@im.bot", "u@im.wechat", [{"n": 2}], nowait=True)
    assert [r.payload for r in sqlite_store.list_outbox()] == [{"n": 2}] == [rows[0].payload]
    sqlite_store.close()


def test_sqlite_timestamps_are_stored_as_sqlalchemy_writes_them(sqlite_store: Store) -> None:
    """UTCDateTime formats SQLite text itself (faster than SQLAlchemy's DATETIME): the text
    must be SQLAlchemy's own, so ordering and rows written by other tools agree."""
    from datetime import timedelta, timezone

    from sqlalchemy import DateTime, text
    from sqlalchemy.dialects import sqlite

    core = DateTime().dialect_impl(sqlite.dialect()).bind_processor(sqlite.dialect())
    assert core is not None
    east = timezone(timedelta(hours=8))
    whole = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)  # no microseconds: still six digits
    for when in (whole, datetime(2026, 11, 21, 20, 0, 0, 123456, tzinfo=east)):
        sqlite_store.save_pending_login(
            qrcode="q", qr_url="u", poll_base="p", png_path=None, issued_at=when
        )
        with sqlite_store.engine.connect() as conn:
            stored = conn.execute(text("SELECT issued_at FROM pending_login")).scalar_one()
        assert stored == core(when.astimezone(UTC).replace(tzinfo=None))
        pending = sqlite_store.get_pending_login()
        assert pending is not None and pending.issued_at == when
    with pytest.raises(ValueError, match="timezone-aware"):
        sqlite_store.save_pending_login(
            qrcode="q", qr_url="u", poll_base="p", png_path=None, issued_at=datetime(2026, 1, 1)
        )
    sqlite_store.close()


def test_the_lane_refuses_a_statement_whose_sql_is_not_fixed(sqlite_store: Store) -> None:
    """An expanding IN renders its SQL per call: the lane compiles once, so it says so."""
    from sqlalchemy import select

    from ilinkbot.store.driver import Sql
    from ilinkbot.store.models import outbox

    statement = Sql(lambda _: select(outbox.c.id).where(outbox.c.state.in_(["a", "b"])))
    with pytest.raises(ValueError, match="cannot run"), sqlite_store._db.lane.read() as cur:
        cur.rows(statement)
    sqlite_store.close()
