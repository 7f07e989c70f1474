"""What survives a stale session (-14) and a new login, and claims whose holder is gone:
``mark_session_expired``, ``hand_over`` and the dead-holder takeover in ``claim``."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import text

from ilinkbot.store import AccountState, InboundRecord, OutboxState, Store
from ilinkbot.store.holders import this_holder

OWNER = "owner@im.wechat"
FRIEND = "friend@im.wechat"
NEW = "new-bot@im.bot"


def _text(n: int) -> dict[str, object]:
    return {"item": {"type": 1, "text_item": {"text": f"m{n}"}}}


def _wrote(store: Store, bot_id: str, user: str, message_id: str) -> None:
    raw = {"message_id": message_id, "from_user_id": user, "context_token": f"ctx-{message_id}"}
    store.record_batch(bot_id, [InboundRecord(message_id, user, f"ctx-{message_id}", raw)], "")


def _texts(rows: list) -> list[str]:  # type: ignore[type-arg]
    return [r.payload["item"]["text_item"]["text"] for r in rows]


def test_session_expired_rows_move_to_the_new_login_held_with_aliases(
    store: Store, bot: str
) -> None:
    _wrote(store, bot, OWNER, "1")
    _wrote(store, bot, FRIEND, "2")
    store.set_alias(bot, OWNER, "me")
    store.set_alias(bot, FRIEND, "pal")
    sent = store.enqueue(bot, OWNER, [_text(0)])[0]
    store.mark_sent(sent.id, "mid-0")
    store.enqueue(bot, FRIEND, [_text(1)])
    claimed = store.claim(bot, limit=10)
    expired = store.mark_session_expired([r.id for r in claimed], "session expired (-14)")
    assert _texts(expired) == ["m1"] and expired[0].state == OutboxState.SESSION_EXPIRED
    kept = store.enqueue(bot, OWNER, [_text(2)], state="session_expired")
    assert kept[0].state == OutboxState.SESSION_EXPIRED
    store.enqueue(bot, FRIEND, [_text(3)], state="held")
    store.enqueue(bot, OWNER, [_text(4)])
    store.set_account_state(bot, "expired")

    store.save_account(NEW, token="t2", base_url=None, owner_user_id=OWNER)
    store.set_alias(NEW, FRIEND, "buddy")  # the new account's own naming wins
    store.set_default_account(bot)
    assert store.hand_over(NEW, [bot]) == 4
    assert store.default_account() == NEW  # the owner's default follows the new login

    old = store.get_account(bot)
    assert old is not None and old.state == AccountState.LOGGED_OUT and old.token is None
    # history stays readable on the old account; the unsent rows moved, held, in order
    assert _texts(store.list_outbox(bot)) == ["m0"]
    moved = store.list_outbox(NEW)
    assert _texts(moved) == ["m1", "m2", "m3", "m4"]
    assert {r.state for r in moved} == {OutboxState.HELD}
    assert [r.user_id for r in moved] == [FRIEND, OWNER, FRIEND, OWNER]
    assert store.resolve_alias(NEW, "me") == OWNER and store.resolve_alias(bot, "me") is None
    assert store.resolve_alias(NEW, "buddy") == FRIEND and store.resolve_alias(NEW, "pal") is None
    peer = store.get_peer(NEW, OWNER)
    assert peer is not None and peer.context_token is None  # tokens belong to the old bot

    # the owner writes to the new bot: their held rows go back to pending, in order
    _wrote(store, NEW, OWNER, "3")
    assert _texts(store.release_held(NEW, OWNER)) == ["m2", "m4"]


def test_same_bot_id_login_again_holds_its_session_expired_rows(store: Store, bot: str) -> None:
    _wrote(store, bot, OWNER, "1")
    store.enqueue(bot, OWNER, [_text(0), _text(1)], state="session_expired")
    pending = store.enqueue(bot, FRIEND, [_text(2)])
    store.save_account(bot, token="fresh", base_url=None, owner_user_id=OWNER)
    assert store.hand_over(bot, [bot]) == 2
    assert [r.state for r in store.list_outbox(bot)] == ["held", "held", "pending"]
    assert store.get_outbox(pending[0].id).state == OutboxState.PENDING  # type: ignore[union-attr]
    assert store.get_account(bot).state == AccountState.ACTIVE  # type: ignore[union-attr]


def test_a_client_id_the_new_account_has_stays_with_the_old_one(store: Store, bot: str) -> None:
    row = store.enqueue(bot, OWNER, [_text(0)], client_ids=["same-id"], state="session_expired")[0]
    store.save_account(NEW, token="t2", base_url=None, owner_user_id=OWNER)
    store.enqueue(NEW, OWNER, [_text(1)], client_ids=["same-id"])
    assert store.hand_over(NEW, [bot]) == 0
    assert store.get_outbox(row.id).bot_id == bot  # type: ignore[union-attr]


def _gone_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(proc.stdout)


def _set_holder(store: Store, outbox_id: int, holder: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            text("UPDATE outbox SET claimed_by = :h WHERE id = :i"), {"h": holder, "i": outbox_id}
        )


def test_a_claim_whose_process_is_gone_is_taken_over_at_once(store: Store, bot: str) -> None:
    first, _ = store.enqueue_claimed(bot, OWNER, [_text(0)], lease_seconds=60)
    assert first[0].claimed_by == this_holder()
    host = this_holder().rpartition("/")[0]
    _set_holder(store, first[0].id, f"{host}/{_gone_pid()}")
    # the next sender does not wait out the 60 s lease: the row comes back first, in order
    rows, claimed_now = store.enqueue_claimed(bot, OWNER, [_text(1)], lease_seconds=60)
    assert claimed_now == [] and store.get_outbox(first[0].id).state == "pending"  # type: ignore[union-attr]
    taken = store.claim(bot, limit=10, lease_seconds=60)
    assert [r.id for r in taken] == [first[0].id, rows[0].id]
    assert all(r.claimed_by == this_holder() for r in taken)


def test_claims_of_live_or_remote_holders_wait_for_their_lease(store: Store, bot: str) -> None:
    a = store.enqueue_claimed(bot, OWNER, [_text(0)], lease_seconds=60)[1][0]
    b = store.enqueue_claimed(bot, FRIEND, [_text(1)], lease_seconds=60)[1][0]
    host = this_holder().rpartition("/")[0]
    _set_holder(store, a.id, f"{host}/{os.getppid()}")  # alive
    _set_holder(store, b.id, f"other-host.example/{_gone_pid()}")  # cannot be checked here
    store.enqueue(bot, OWNER, [_text(2)])
    store.enqueue(bot, FRIEND, [_text(3)])
    assert store.claim(bot, limit=10) == []
    assert {store.get_outbox(i).state for i in (a.id, b.id)} == {"sending"}  # type: ignore[union-attr]
