"""The repository API, run against SQLite and PostgreSQL (see conftest.db_url)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from ilinkbot.store import (
    SCHEMA_VERSION,
    AccountState,
    InboundRecord,
    InvalidTransitionError,
    NotFoundError,
    OutboxState,
    Store,
    UnknownAccountError,
)

from .conftest import BOT, USER, FakeClock

BOB = "bob@im.wechat"


def rec(mid: str | int, user: str = USER, token: str | None = "ctx", **kw: object) -> InboundRecord:
    raw = {"message_id": int(mid), "from_user_id": user, "item_list": [{"type": 1}]}
    return InboundRecord(str(mid), user, token, raw, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- accounts


def test_open_reports_schema_version_and_dialect(store: Store) -> None:
    assert store.schema_version == SCHEMA_VERSION
    assert store.dialect in ("sqlite", "postgresql")


def test_save_and_get_account(store: Store) -> None:
    assert store.get_account(BOT) is None
    acc = store.save_account(BOT, token="t1", base_url="https://a", owner_user_id=USER)
    assert acc.state is AccountState.ACTIVE
    assert (acc.token, acc.base_url, acc.owner_user_id) == ("t1", "https://a", USER)
    assert acc.created_at.tzinfo is UTC and acc.last_used_at.tzinfo is UTC
    assert store.get_account(BOT) == acc
    assert "t1" not in repr(acc)


def test_save_account_merges_and_reactivates(store: Store, clock: FakeClock) -> None:
    store = Store.open(store.engine.url.render_as_string(hide_password=False), clock=clock)
    try:
        first = store.save_account(BOT, token="t1", base_url="https://a", owner_user_id=USER)
        store.set_account_state(BOT, "expired")
        assert store.get_account(BOT).state is AccountState.EXPIRED  # type: ignore[union-attr]
        clock.advance(5)
        again = store.save_account(BOT, token="t2", base_url=None, owner_user_id="")
        assert again.state is AccountState.ACTIVE
        assert again.token == "t2"
        assert again.base_url == "https://a" and again.owner_user_id == USER  # kept
        assert again.created_at == first.created_at
        assert again.updated_at == again.last_used_at == clock.now
    finally:
        store.close()


def test_list_accounts_and_local_tokens(make_store: Callable[..., Store], clock: FakeClock) -> None:
    store = make_store(clock=clock)
    for name in ("a@im.bot", "b@im.bot", "c@im.bot"):
        store.save_account(name, token=f"tok-{name[0]}", base_url=None, owner_user_id=None)
        clock.advance(1)
    store.touch_account("a@im.bot")
    assert [a.bot_id for a in store.list_accounts()] == ["a@im.bot", "c@im.bot", "b@im.bot"]
    assert store.local_tokens() == ["tok-c", "tok-b", "tok-a"]  # newest registration first
    assert store.local_tokens(limit=2) == ["tok-c", "tok-b"]
    store.logout("b@im.bot")
    acc = store.get_account("b@im.bot")
    assert acc is not None and acc.token is None and acc.state is AccountState.LOGGED_OUT
    assert store.local_tokens() == ["tok-c", "tok-a"]


def test_logout_keeps_history_delete_removes_everything(store: Store, bot: str) -> None:
    store.record_batch(bot, [rec(1)], "cur-1")
    store.enqueue(bot, USER, [{"text": "hi"}])
    store.set_user_value(bot, USER, "k", 1)
    store.logout(bot)
    assert store.get_cursor(bot) == "cur-1"
    assert len(store.unhandled(bot)) == 1 and len(store.list_outbox(bot)) == 1
    assert store.get_peer(bot, USER) is not None
    assert store.delete_account(bot) is True
    assert store.get_account(bot) is None
    assert store.get_cursor(bot) == "" and store.unhandled(bot) == []
    assert store.list_outbox(bot) == [] and store.list_peers(bot) == []
    assert store.get_user_data(bot, USER) == {}
    assert store.delete_account(bot) is False


def test_unknown_account_errors(store: Store) -> None:
    with pytest.raises(UnknownAccountError):
        store.set_account_state("nobody@im.bot", AccountState.EXPIRED)
    with pytest.raises(UnknownAccountError):
        store.logout("nobody@im.bot")
    with pytest.raises(UnknownAccountError):
        store.record_batch("nobody@im.bot", [rec(1)], "c")
    with pytest.raises(UnknownAccountError):
        store.enqueue("nobody@im.bot", USER, [{"text": "x"}])
    assert store.get_cursor("nobody@im.bot") == ""


def test_pending_login_roundtrip(store: Store) -> None:
    assert store.get_pending_login() is None
    issued = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    store.save_pending_login(
        qrcode="q1",
        qr_url="https://qr/1",
        poll_base="https://p",
        png_path="/tmp/q.png",
        issued_at=issued,
    )
    store.save_pending_login(
        qrcode="q2",
        qr_url="https://qr/2",
        poll_base="https://p2",
        png_path=None,
        issued_at=issued + timedelta(minutes=1),
    )
    got = store.get_pending_login()
    assert got is not None
    assert (got.qrcode, got.qr_url, got.poll_base, got.png_path) == (
        "q2",
        "https://qr/2",
        "https://p2",
        None,
    )
    assert got.issued_at == issued + timedelta(minutes=1)
    store.clear_pending_login()
    assert store.get_pending_login() is None


# ---------------------------------------------------------------------------- inbound


def test_record_batch_inserts_new_and_advances_cursor(store: Store, bot: str) -> None:
    assert store.get_cursor(bot) == ""
    big = str(2**64 - 1)  # message ids are uint64: kept as text
    new = store.record_batch(bot, [rec(1), rec(big), rec(1)], "cur-1")
    assert [r.message_id for r in new] == ["1", big]
    assert new[0].raw["item_list"] == [{"type": 1}]
    assert new[0].received_at.tzinfo is UTC and not new[0].handled
    assert store.get_cursor(bot) == "cur-1"
    again = store.record_batch(bot, [rec(1), rec(3)], "cur-2")
    assert [r.message_id for r in again] == ["3"]
    # empty cursor leaves the old one; empty batch with a cursor just moves it
    assert store.record_batch(bot, [rec(4)], "")[0].message_id == "4"
    assert store.get_cursor(bot) == "cur-2"
    assert store.record_batch(bot, [], "cur-3") == []
    assert store.get_cursor(bot) == "cur-3"
    assert [r.message_id for r in store.unhandled(bot)] == ["1", big, "3", "4"]


def test_record_batch_accepts_raw_json_text(store: Store, bot: str) -> None:
    row = store.record_batch(bot, [InboundRecord("9", USER, None, '{"a": "\u4f60\u597d"}')], "")[0]
    assert row.raw == {"a": "你好"}
    with pytest.raises(ValueError):
        store.record_batch(bot, [InboundRecord("10", USER, None, "[1, 2]")], "c")
    assert store.get_cursor(bot) == ""


def test_inbound_record_refuses_naive_time() -> None:
    with pytest.raises(ValueError):
        InboundRecord("1", USER, None, {}, datetime(2025, 1, 1))


def test_record_batch_updates_peers(make_store: Callable[..., Store], clock: FakeClock) -> None:
    store = make_store(clock=clock)
    store.save_account(BOT, token="t", base_url=None, owner_user_id=USER)
    t0 = clock.now
    batch = [
        rec(1, token="c1", created_at=t0 - timedelta(seconds=30)),
        rec(2, token="c2", created_at=t0 - timedelta(seconds=10)),
        rec(3, user=BOB, token="b1"),
    ]
    store.record_batch(BOT, batch, "x")
    alice = store.get_peer(BOT, USER)
    assert alice is not None
    assert alice.context_token == "c2"
    assert alice.last_inbound_at == t0 - timedelta(seconds=10)
    assert alice.first_seen_at == alice.last_seen_at == t0
    assert alice.sent_since_inbound == 0
    assert "c2" not in repr(alice)
    bob = store.get_peer(BOT, BOB)
    assert bob is not None and bob.last_inbound_at == t0  # no create time: arrival time

    # sends count against the window; a new user message resets it
    rows = store.enqueue(BOT, USER, [{"t": 1}, {"t": 2}])
    for row in store.claim(BOT, limit=5):
        store.mark_sent(row.id, f"srv-{row.id}")
    assert store.get_peer(BOT, USER).sent_since_inbound == 2  # type: ignore[union-attr]
    assert store.get_peer(BOT, BOB).sent_since_inbound == 0  # type: ignore[union-attr]
    clock.advance(60)
    # a replayed (known) message changes nothing; a token-less new message keeps the token
    store.record_batch(BOT, [rec(2, token="stale")], "y")
    assert store.get_peer(BOT, USER).sent_since_inbound == 2  # type: ignore[union-attr]
    store.record_batch(BOT, [rec(4, token=None)], "z")
    alice = store.get_peer(BOT, USER)
    assert alice is not None
    assert alice.context_token == "c2" and alice.sent_since_inbound == 0
    assert alice.last_inbound_at == clock.now and alice.first_seen_at == t0
    # a create time in the future is capped at now; an old one never moves the window back
    store.record_batch(BOT, [rec(5, created_at=clock.now + timedelta(hours=1))], "")
    assert store.get_peer(BOT, USER).last_inbound_at == clock.now  # type: ignore[union-attr]
    store.record_batch(BOT, [rec(6, created_at=clock.now - timedelta(days=3))], "")
    assert store.get_peer(BOT, USER).last_inbound_at == clock.now  # type: ignore[union-attr]
    assert len(rows) == 2


def test_bot_authored_messages_do_not_touch_the_window(store: Store, bot: str) -> None:
    store.record_batch(bot, [rec(1, token="c1")], "")
    store.enqueue(bot, USER, [{"t": 1}])
    store.mark_sent(store.claim(bot)[0].id, "m")
    new = store.record_batch(bot, [rec(2, token="echo", is_user=False)], "")
    assert len(new) == 1
    peer = store.get_peer(bot, USER)
    assert peer is not None and peer.sent_since_inbound == 1 and peer.context_token == "c1"


def test_handled_failures_and_dead_letters(store: Store, bot: str) -> None:
    rows = store.record_batch(bot, [rec(1), rec(2), rec(3)], "c")
    store.mark_handled(rows[0].id)
    store.mark_handled(rows[0].id)  # idempotent
    assert [r.message_id for r in store.unhandled(bot)] == ["2", "3"]
    assert [r.message_id for r in store.unhandled(bot, limit=1)] == ["2"]
    first = store.record_handler_failure(rows[1].id, "boom 1", max_attempts=2)
    assert first.attempts == 1 and first.last_error == "boom 1" and not first.dead
    second = store.record_handler_failure(rows[1].id, "boom 2", max_attempts=2)
    assert second.attempts == 2 and second.dead and second.dead_at is not None
    assert [r.message_id for r in store.unhandled(bot)] == ["3"]
    assert [r.message_id for r in store.dead_inbox(bot)] == ["2"]
    got = store.get_inbox(rows[0].id)
    assert got is not None and got.handled
    with pytest.raises(NotFoundError):
        store.mark_handled(10**9)
    with pytest.raises(NotFoundError):
        store.record_handler_failure(10**9, "x", max_attempts=1)


# ---------------------------------------------------------------------------- peers


def test_a_reference_names_a_peer_by_alias_first_then_by_user_id(store: Store, bot: str) -> None:
    store.record_batch(bot, [rec(1), rec(2, user=BOB)], "")
    assert store.peer_named(bot, BOB).user_id == BOB  # type: ignore[union-attr]
    assert store.peer_named(bot, "nobody@im.wechat") is None
    store.set_alias(bot, USER, BOB)  # an alias that is also another user's id
    named = store.peer_named(bot, BOB)
    assert named is not None and named.user_id == USER and named.context_token
    assert store.peer_named("other@im.bot", BOB) is None


def test_aliases(store: Store, bot: str) -> None:
    store.record_batch(bot, [rec(1), rec(2, user=BOB)], "")
    store.set_alias(bot, USER, "alice")
    assert store.resolve_alias(bot, "alice") == USER
    assert store.get_peer(bot, USER).alias == "alice"  # type: ignore[union-attr]
    with pytest.raises(InvalidTransitionError):
        store.set_alias(bot, BOB, "alice")
    store.set_alias(bot, USER, "alice")  # same user again: fine
    store.set_alias(bot, USER, None)
    assert store.resolve_alias(bot, "alice") is None
    store.set_alias(bot, "owner@im.wechat", "me")  # a peer that never wrote
    me = store.get_peer(bot, "owner@im.wechat")
    assert me is not None and me.last_inbound_at is None and me.context_token is None
    assert {p.user_id for p in store.list_peers(bot)} == {USER, BOB, "owner@im.wechat"}
    # the alias-only peer becomes a normal one when the user writes
    store.record_batch(bot, [rec(3, user="owner@im.wechat", token="o1")], "")
    me = store.get_peer(bot, "owner@im.wechat")
    assert me is not None and me.alias == "me" and me.first_seen_at is not None


# ---------------------------------------------------------------------------- outbox


def test_enqueue_orders_and_fixes_client_ids(store: Store, bot: str) -> None:
    rows = store.enqueue(bot, USER, [{"text": "a"}, {"text": "b"}, {"text": "c"}], group="turn-1")
    assert [r.payload["text"] for r in rows] == ["a", "b", "c"]
    assert [r.seq for r in rows] == [0, 1, 2]
    assert rows[0].id < rows[1].id < rows[2].id
    assert all(r.group == "turn-1" and r.state is OutboxState.PENDING for r in rows)
    assert all(re.fullmatch(r"ilinkbot:\d{13}-[0-9a-f]{8}", r.client_id) for r in rows)
    assert len({r.client_id for r in rows}) == 3
    assert rows[0].created_at.tzinfo is UTC
    assert store.get_outbox(rows[1].id) == rows[1]
    assert store.get_outbox(10**9) is None


def test_enqueue_same_client_id_returns_existing_row(store: Store, bot: str) -> None:
    first = store.enqueue(bot, USER, [{"text": "a"}, {"text": "b"}], client_ids=["c-1", "c-2"])
    store.mark_sent(store.claim(bot, ids=[first[0].id])[0].id, "m-1")
    # a handler re-run after a crash enqueues the same ids again (plus one new)
    again = store.enqueue(
        bot, USER, [{"text": "a2"}, {"text": "b2"}, {"text": "c"}], client_ids=["c-1", "c-2", "c-3"]
    )
    assert [r.id for r in again[:2]] == [r.id for r in first]
    assert again[0].state is OutboxState.SENT and again[0].payload == {"text": "a"}
    assert again[2].client_id == "c-3"
    assert len(store.list_outbox(bot)) == 3
    with pytest.raises(ValueError):
        store.enqueue(bot, USER, [{"a": 1}], client_ids=["x", "y"])
    with pytest.raises(ValueError):
        store.enqueue(bot, USER, [{"a": 1}], state="sent")


def test_claim_is_ordered_per_user_and_exclusive(store: Store, bot: str) -> None:
    a = store.enqueue(bot, USER, [{"n": i} for i in range(3)])
    b = store.enqueue(bot, BOB, [{"n": i} for i in range(2)])
    first = store.claim(bot, limit=2)
    assert [r.id for r in first] == [a[0].id, a[1].id]
    assert all(r.state is OutboxState.SENDING and r.attempts == 1 for r in first)
    assert all(r.claimed_until is not None for r in first)
    # alice has rows in flight: her third row waits; bob's come out
    second = store.claim(bot, limit=10)
    assert [r.id for r in second] == [b[0].id, b[1].id]
    assert store.claim(bot, limit=10) == []
    for row in first:
        store.mark_sent(row.id, None)
    assert [r.id for r in store.claim(bot)] == [a[2].id]


def test_claim_filters(store: Store, bot: str) -> None:
    a = store.enqueue(bot, USER, [{"n": i} for i in range(3)])
    b = store.enqueue(bot, BOB, [{"n": 0}])
    assert [r.id for r in store.claim(bot, user_id=BOB)] == [b[0].id]
    got = store.claim(bot, ids=[a[2].id, a[1].id], limit=1)  # limit ignored with ids
    assert [r.id for r in got] == [a[1].id, a[2].id]
    assert store.claim(bot, ids=[a[1].id]) == []  # already claimed
    assert store.claim(bot, ids=[]) == []
    assert store.claim("other@im.bot") == []


def test_expired_lease_is_reclaimed(make_store: Callable[..., Store], clock: FakeClock) -> None:
    store = make_store(clock=clock)
    store.save_account(BOT, token="t", base_url=None, owner_user_id=None)
    row = store.enqueue(BOT, USER, [{"n": 1}])[0]
    assert len(store.claim(BOT, lease_seconds=30)) == 1
    clock.advance(29)
    assert store.claim(BOT) == []
    with pytest.raises(InvalidTransitionError):
        store.retry_outbox(row.id)  # in flight
    clock.advance(2)  # the sender crashed: lease over
    again = store.claim(BOT, lease_seconds=30)
    assert [r.id for r in again] == [row.id] and again[0].attempts == 2


def test_mark_states(store: Store, bot: str) -> None:
    store.record_batch(bot, [rec(1)], "")
    rows = store.enqueue(bot, USER, [{"n": i} for i in range(4)])
    store.claim(bot, ids=[r.id for r in rows])
    sent = store.mark_sent(rows[0].id, "srv-1")
    assert sent.state is OutboxState.SENT and sent.message_id == "srv-1"
    assert sent.sent_at is not None and sent.claimed_until is None
    assert store.mark_sent(rows[0].id, "srv-1").state is OutboxState.SENT  # idempotent
    unc = store.mark_unconfirmed(rows[1].id, "ret=0 without message_id")
    assert unc.state is OutboxState.UNCONFIRMED and unc.last_error.startswith("ret=0")  # type: ignore[union-attr]
    assert store.get_peer(bot, USER).sent_since_inbound == 2  # type: ignore[union-attr]
    held = store.mark_held(rows[2].id, "window closed")
    assert held.state is OutboxState.HELD and held.last_error == "window closed"
    retry = store.mark_failed(rows[3].id, "timeout", retryable=True, max_attempts=3)
    assert retry.state is OutboxState.PENDING and retry.attempts == 1
    store.claim(bot, ids=[rows[3].id])
    store.claim(bot, ids=[rows[3].id])  # not claimable while in flight
    assert store.get_outbox(rows[3].id).attempts == 2  # type: ignore[union-attr]
    store.mark_failed(rows[3].id, "timeout", retryable=True, max_attempts=3)
    store.claim(bot, ids=[rows[3].id])
    final = store.mark_failed(rows[3].id, "timeout", retryable=True, max_attempts=3)
    assert final.state is OutboxState.FAILED and final.attempts == 3
    # terminal rows are not downgraded
    kept = store.mark_failed(rows[0].id, "x", retryable=False, max_attempts=1)
    assert kept.state is OutboxState.SENT
    assert store.mark_held(rows[0].id, "x").state is OutboxState.SENT
    assert store.get_peer(bot, USER).sent_since_inbound == 2  # type: ignore[union-attr]
    with pytest.raises(NotFoundError):
        store.mark_sent(10**9, None)


def test_non_retryable_failure(store: Store, bot: str) -> None:
    row = store.enqueue(bot, USER, [{"n": 1}])[0]
    store.claim(bot)
    failed = store.mark_failed(row.id, "ret=-14", retryable=False, max_attempts=5)
    assert failed.state is OutboxState.FAILED and failed.last_error == "ret=-14"


def test_release_held(store: Store, bot: str) -> None:
    rows = store.enqueue(bot, USER, [{"n": i} for i in range(3)], state="held")
    other = store.enqueue(bot, BOB, [{"n": 0}], state=OutboxState.HELD)
    assert store.claim(bot) == []
    released = store.release_held(bot, USER)
    assert [r.id for r in released] == [r.id for r in rows]
    assert all(r.state is OutboxState.PENDING for r in released)
    assert store.release_held(bot, USER) == []
    assert store.get_outbox(other[0].id).state is OutboxState.HELD  # type: ignore[union-attr]
    assert [r.id for r in store.claim(bot)] == [r.id for r in rows]


def test_retry_drop_and_payload(store: Store, bot: str) -> None:
    rows = store.enqueue(bot, USER, [{"n": 1}, {"n": 2}])
    store.claim(bot)
    store.mark_failed(rows[0].id, "x", retryable=False, max_attempts=1)
    retried = store.retry_outbox(rows[0].id)
    assert retried.state is OutboxState.PENDING and retried.attempts == 0
    assert store.retry_outbox(rows[0].id) == retried  # already pending
    dropped = store.drop_outbox(rows[0].id)
    assert dropped.state is OutboxState.DEAD
    assert store.drop_outbox(rows[0].id).state is OutboxState.DEAD
    assert store.retry_outbox(rows[0].id).state is OutboxState.PENDING
    store.mark_sent(rows[1].id, "m")
    with pytest.raises(InvalidTransitionError):
        store.retry_outbox(rows[1].id)
    with pytest.raises(InvalidTransitionError):
        store.drop_outbox(rows[1].id)
    updated = store.update_outbox_payload(rows[0].id, {"n": 1, "cdn": {"param": "abc"}})
    assert updated.payload == {"n": 1, "cdn": {"param": "abc"}}
    with pytest.raises(NotFoundError):
        store.update_outbox_payload(10**9, {})


def test_list_outbox_filters(store: Store, bot: str) -> None:
    store.save_account("x@im.bot", token="t", base_url=None, owner_user_id=None)
    a = store.enqueue(bot, USER, [{"n": 1}, {"n": 2}])
    b = store.enqueue(bot, BOB, [{"n": 3}], state="held")
    c = store.enqueue("x@im.bot", USER, [{"n": 4}])
    assert [r.id for r in store.list_outbox()] == [a[0].id, a[1].id, b[0].id, c[0].id]
    assert [r.id for r in store.list_outbox(bot)] == [a[0].id, a[1].id, b[0].id]
    assert [r.id for r in store.list_outbox(bot, state="held")] == [b[0].id]
    assert [r.id for r in store.list_outbox(state=["held", OutboxState.PENDING], limit=2)] == [
        a[0].id,
        a[1].id,
    ]
    assert [r.id for r in store.list_outbox(user_id=USER)] == [a[0].id, a[1].id, c[0].id]


# ---------------------------------------------------------------------------- user data


def test_user_data(store: Store, bot: str) -> None:
    assert store.get_user_data(bot, USER) == {}
    store.set_user_value(bot, USER, "lang", "zh")
    store.set_user_value(bot, USER, "prefs", {"n": [1, 2], "ok": True})
    store.set_user_value(bot, USER, "lang", "en")
    store.set_user_value(bot, BOB, "lang", "fr")
    assert store.get_user_data(bot, USER) == {"lang": "en", "prefs": {"n": [1, 2], "ok": True}}
    assert store.delete_user_value(bot, USER, "lang") is True
    assert store.delete_user_value(bot, USER, "lang") is False
    assert store.get_user_data(bot, USER) == {"prefs": {"n": [1, 2], "ok": True}}
    assert store.get_user_data(bot, BOB) == {"lang": "fr"}


# ---------------------------------------------------------------------------- leases


def test_leases(make_store: Callable[..., Store], clock: FakeClock) -> None:
    store = make_store(clock=clock)
    assert store.lease_holder(BOT) is None
    assert store.acquire_lease(BOT, "proc-a", 30) is True
    assert store.acquire_lease(BOT, "proc-b", 30) is False
    assert store.lease_holder(BOT) == "proc-a"
    clock.advance(20)
    assert store.acquire_lease(BOT, "proc-a", 30) is True  # renew
    clock.advance(20)
    assert store.acquire_lease(BOT, "proc-b", 30) is False  # renewed, still alive
    clock.advance(11)
    assert store.lease_holder(BOT) is None  # expired: proc-a crashed
    assert store.acquire_lease(BOT, "proc-b", 30) is True
    store.release_lease(BOT, "proc-a")  # not the holder: no effect
    assert store.lease_holder(BOT) == "proc-b"
    store.release_lease(BOT, "proc-b")
    assert store.lease_holder(BOT) is None
    assert store.acquire_lease(BOT, "proc-a", 30) is True


# ---------------------------------------------------------------------------- threads


def test_store_is_shared_across_threads(store: Store, bot: str) -> None:
    rows = store.enqueue(bot, USER, [{"n": i} for i in range(40)])
    claimed: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        try:
            for i in range(10):
                store.record_batch(bot, [rec(f"{k}{i:03d}")], f"cur-{k}-{i}")
                got = store.claim(bot, ids=[r.id for r in rows])
                with lock:
                    claimed.extend(r.id for r in got)
                store.set_user_value(bot, USER, f"k{k}", i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(claimed) == sorted(r.id for r in rows)
    assert len(store.unhandled(bot)) == 40
    assert store.get_user_data(bot, USER) == {f"k{k}": 9 for k in range(1, 5)}


def test_unclaim_hands_rows_back_untouched(store: Store, bot: str) -> None:
    rows = store.enqueue(bot, USER, [{"n": 1}, {"n": 2}])
    claimed = store.claim(bot, limit=2)
    assert [r.attempts for r in claimed] == [1, 1]
    back = store.unclaim(rows[1].id)
    assert back.state is OutboxState.PENDING and back.attempts == 0
    assert back.claimed_until is None
    assert store.unclaim(rows[1].id) == back  # not sending: unchanged
    store.mark_sent(rows[0].id, "m")
    assert store.unclaim(rows[0].id).state is OutboxState.SENT
    again = store.claim(bot)
    assert [r.id for r in again] == [rows[1].id] and again[0].attempts == 1
