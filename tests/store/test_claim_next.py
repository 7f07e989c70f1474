"""``Store.claim_next``: a send whose rows were stored while another went out to the same
user claims them when its turn comes, but never ahead of anything of that user that waits."""

from __future__ import annotations

from ilinkbot.store import OutboxState, Store

from .conftest import USER


def text(t: str) -> dict[str, object]:
    return {"item": {"type": 1, "text_item": {"text": t}}}


def test_rows_next_in_the_users_queue_are_claimed_in_order(store: Store, bot: str) -> None:
    rows = store.enqueue(bot, USER, [text("a"), text("b")])
    claimed = store.claim_next(bot, USER, [r.id for r in reversed(rows)], lease_seconds=30)
    assert [r.id for r in claimed] == [r.id for r in rows]
    assert all(r.state == OutboxState.SENDING and r.attempts == 1 for r in claimed)


def test_nothing_is_claimed_ahead_of_a_row_that_waits(store: Store, bot: str) -> None:
    (earlier,) = store.enqueue(bot, USER, [text("earlier")])
    (held,) = store.enqueue(bot, "held@im.wechat", [text("x")], state="held")
    (mine,) = store.enqueue(bot, USER, [text("mine")])
    assert store.claim_next(bot, USER, [mine.id]) == []  # "earlier" goes first
    assert store.get_outbox(mine.id).state == OutboxState.PENDING
    # another user's held row is no obstacle; this user's is
    store.mark_sent(store.claim(bot, ids=[earlier.id])[0].id, "m1")
    assert [r.id for r in store.claim_next(bot, USER, [mine.id])] == [mine.id]
    assert held.state == OutboxState.HELD
    (held_mine,) = store.enqueue(bot, USER, [text("held")], state="held")
    (later,) = store.enqueue(bot, USER, [text("later")])
    assert store.claim_next(bot, USER, [later.id]) == []
    assert held_mine.state == OutboxState.HELD


def test_a_row_sent_meanwhile_by_another_sender_is_not_claimed_again(
    store: Store, bot: str
) -> None:
    a, b = store.enqueue(bot, USER, [text("a"), text("b")])
    (taken,) = store.claim(bot, ids=[a.id])
    store.mark_sent(taken.id, "m1")  # the sender that had the turn sent it
    assert [r.id for r in store.claim_next(bot, USER, [a.id, b.id])] == [b.id]
