"""4 processes x 300 mixed operations on one database (SQLite file, PostgreSQL schema).

Checks: no error, no lost update (exact counts, last-writer context tokens, one increment of
the reply-window counter per sent row), no outbox row claimed twice.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from ilinkbot.store import InboundRecord, OutboxState, Store
from ilinkbot.store.models import inbox

from ._workers import BATCH_USERS, BOT, OUT_USERS, SHARED_USERS, mixed_worker

PROCESSES = 4
OPS = 300
OUTBOX_ROWS = 300


@pytest.mark.slow
def test_four_processes_mixed_operations(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        store.save_account(BOT, token="t", base_url=None, owner_user_id=None)
        # the outbox users wrote once (so they have a reply window), then get 30 messages each
        store.record_batch(
            BOT, [InboundRecord(f"hello-{u}", u, f"tok-{u}", {}) for u in OUT_USERS], "cur-0"
        )
        for k in range(OUTBOX_ROWS // len(OUT_USERS)):
            for user in OUT_USERS:
                store.enqueue(BOT, user, [{"text": f"{user} {k}"}])

        ctx = mp.get_context("spawn")
        start_at = time.time() + 2.5
        with ctx.Pool(PROCESSES) as pool:
            results = pool.starmap(
                mixed_worker, [(db_url, p, OPS, start_at) for p in range(PROCESSES)]
            )

        # no error
        errors = [e for r in results for e in r["errors"]]
        assert errors == [], errors[:5]

        # no row claimed twice, and every claim is reflected exactly once
        claimed = [i for r in results for i in r["claimed"]]
        assert len(claimed) == len(set(claimed)), "an outbox row was claimed twice"
        sent = store.list_outbox(BOT, state=OutboxState.SENT)
        assert {r.id for r in sent} == set(claimed)
        assert all(r.attempts == 1 and r.message_id == f"srv-{r.id}" for r in sent)
        assert len(claimed) > OUTBOX_ROWS // 3  # the claims did real work
        pending = store.list_outbox(BOT, state=OutboxState.PENDING)
        assert len(sent) + len(pending) == OUTBOX_ROWS

        # per-user order: each user's sent rows are a prefix of that user's queue, sent in order
        for user in OUT_USERS:
            queue = [r.id for r in store.list_outbox(BOT, user_id=user)]
            mine = sorted((r for r in sent if r.user_id == user), key=lambda r: r.id)
            assert [r.id for r in mine] == queue[: len(mine)], user
            times = [r.sent_at for r in mine]
            assert times == sorted(times), user  # type: ignore[type-var]

        # reply-window counters: one increment per sent row, none lost
        per_user = Counter(r.user_id for r in sent)
        for user in OUT_USERS:
            peer = store.get_peer(BOT, user)
            assert peer is not None and peer.sent_since_inbound == per_user[user], user

        # inbox: every message exactly once, each reported new by exactly one process
        reported = [m for r in results for m in r["new_messages"]]
        assert len(reported) == len(set(reported)), "a message was inserted twice"
        common = {m for m in reported if m.startswith("common-")}
        assert common == {f"common-{n}" for n in range((OPS // 3 - 1) * 2 + 3)}
        own = [m for m in reported if m.startswith("p")]
        assert len(own) == PROCESSES * (OPS // 3)
        with store.engine.connect() as conn:
            total = conn.execute(
                select(func.count()).select_from(inbox).where(inbox.c.bot_id == BOT)
            ).scalar_one()
            # context tokens: the peer holds the token of its last committed message
            for user in SHARED_USERS + BATCH_USERS:
                last_token = conn.execute(
                    select(inbox.c.context_token)
                    .where(inbox.c.bot_id == BOT, inbox.c.user_id == user)
                    .order_by(inbox.c.id.desc())
                    .limit(1)
                ).scalar_one()
                peer = store.get_peer(BOT, user)
                assert peer is not None and peer.context_token == last_token, user
        assert total == len(reported) + len(OUT_USERS)

        # the cursor is one some process wrote
        written = {c for r in results for c in r["cursors"]}
        assert store.get_cursor(BOT) in written
    finally:
        store.close()
