"""Store.recent_inbox / last_inbox_id (what wechat_recent_messages and wait_reply read),
on both engines."""

from __future__ import annotations

from ilinkbot.store import InboundRecord, Store
from tests.store.conftest import db_url, pg_url  # noqa: F401 - fixtures used below

BOT = "b0f5860fdecb@im.bot"
ALICE = "alice@im.wechat"
BOB = "bob@im.wechat"


def _msg(mid: str, user: str, text: str) -> InboundRecord:
    raw = {"message_type": 1, "item_list": [{"type": 1, "text_item": {"text": text}}]}
    return InboundRecord(message_id=mid, user_id=user, context_token="ctx", raw=raw)


def test_recent_inbox_newest_first_by_user_and_after_id(db_url: str) -> None:  # noqa: F811
    store = Store.open(db_url)
    try:
        store.save_account(BOT, token="t", base_url=None, owner_user_id=ALICE)
        assert store.last_inbox_id(BOT) == 0
        assert store.recent_inbox(BOT) == []
        rows = store.record_batch(
            BOT, [_msg("1", ALICE, "a1"), _msg("2", BOB, "b1"), _msg("3", ALICE, "a2")], "c1"
        )
        ids = [r.id for r in rows]
        assert store.last_inbox_id(BOT) == ids[-1]
        assert [r.id for r in store.recent_inbox(BOT)] == ids[::-1]
        assert [r.message_id for r in store.recent_inbox(BOT, ALICE)] == ["3", "1"]
        assert [r.message_id for r in store.recent_inbox(BOT, limit=1)] == ["3"]
        assert [r.message_id for r in store.recent_inbox(BOT, ALICE, after_id=ids[0])] == ["3"]
        assert store.recent_inbox("other@im.bot") == []
        # Reading leaves every row to the bot that handles them.
        assert len(store.unhandled(BOT)) == 3
    finally:
        store.close()
