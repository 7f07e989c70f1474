"""enqueue_claimed and mark_sent_many: the sender's two transactions per message."""

from __future__ import annotations

from ilinkbot.store import OutboxState, Store


def test_enqueue_claimed_claims_only_when_nothing_waits(store: Store, bot: str) -> None:
    rows, claimed = store.enqueue_claimed(
        bot, "u@im.wechat", [{"n": 1}, {"n": 2}], lease_seconds=30
    )
    assert [r.id for r in claimed] == [r.id for r in rows]
    assert all(r.state == OutboxState.SENDING and r.attempts == 1 for r in claimed)
    # the user's rows are in flight: the next ones queue behind them
    more, claimed2 = store.enqueue_claimed(bot, "u@im.wechat", [{"n": 3}], lease_seconds=30)
    assert claimed2 == [] and more[0].state == OutboxState.PENDING
    # another user is independent
    _, other = store.enqueue_claimed(bot, "v@im.wechat", [{"n": 4}], lease_seconds=30)
    assert len(other) == 1
    # a repeated client_id returns the existing row and never claims it again
    again, claimed3 = store.enqueue_claimed(
        bot, "w@im.wechat", [{"n": 5}], client_ids=[rows[0].client_id], lease_seconds=30
    )
    assert again[0].id == rows[0].id and claimed3 == []


def test_mark_sent_many_marks_all_and_counts_the_window(store: Store, bot: str) -> None:
    from ilinkbot.store import InboundRecord

    store.record_batch(
        bot,
        [
            InboundRecord(
                message_id="1", user_id="u@im.wechat", context_token="c", raw={}, created_at=None
            )
        ],
        "x",
    )
    _, claimed = store.enqueue_claimed(
        bot, "u@im.wechat", [{"n": i} for i in range(3)], lease_seconds=30
    )
    done = store.mark_sent_many([(r.id, str(100 + i)) for i, r in enumerate(claimed)])
    assert [r.state for r in done] == [OutboxState.SENT] * 3
    assert [r.message_id for r in done] == ["100", "101", "102"]
    peer = store.get_peer(bot, "u@im.wechat")
    assert peer is not None and peer.sent_since_inbound == 3
    # marking again changes nothing (and does not count twice)
    store.mark_sent_many([(claimed[0].id, "100")])
    assert store.get_peer(bot, "u@im.wechat").sent_since_inbound == 3  # type: ignore[union-attr]
