"""Code that runs in child processes for the concurrency and crash tests.

``mixed_worker`` is called through ``multiprocessing`` (spawn); the crash worker runs as
``python -m tests.store._workers crash <url> <bot_id>`` so that the parent can SIGKILL it.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ilinkbot.store import InboundRecord, Store

BOT = "concurrency@im.bot"
SHARED_USERS = [f"shared-{k}@im.wechat" for k in range(4)]
BATCH_USERS = [f"batch-{k}@im.wechat" for k in range(5)]
OUT_USERS = [f"out-{k}@im.wechat" for k in range(10)]
CRASH_BATCH = 20


def record(message_id: str, user: str, token: str | None) -> InboundRecord:
    raw = {"message_id": message_id, "from_user_id": user, "item_list": [{"type": 1}]}
    return InboundRecord(message_id, user, token, raw)


def mixed_worker(url: str, proc: int, ops: int, start_at: float) -> dict[str, Any]:
    """``ops`` operations cycling through: context-token upsert, batch record, claim+send."""
    store = Store.open(url)
    errors: list[str] = []
    new_messages: list[str] = []
    claimed: list[int] = []
    cursors: list[str] = []
    time.sleep(max(0.0, start_at - time.time()))
    try:
        for i in range(ops):
            kind = i % 3
            try:
                if kind == 0:
                    # a user writes: new message id, new context token for a shared user
                    user = SHARED_USERS[(i // 3) % len(SHARED_USERS)]
                    rows = store.record_batch(
                        BOT, [record(f"p{proc}-{i}", user, f"tok-p{proc}-{i}")], ""
                    )
                    new_messages += [r.message_id for r in rows]
                elif kind == 1:
                    # every process records the same batches (overlapping message ids)
                    base = (i // 3) * 2
                    records = [
                        record(f"common-{n}", BATCH_USERS[n % len(BATCH_USERS)], f"ctok-{n}")
                        for n in range(base, base + 3)
                    ]
                    cursor = f"cur-p{proc}-{i}"
                    rows = store.record_batch(BOT, records, cursor)
                    cursors.append(cursor)
                    new_messages += [r.message_id for r in rows]
                else:
                    got = store.claim(BOT, limit=2, lease_seconds=600)
                    for row in got:
                        store.mark_sent(row.id, f"srv-{row.id}")
                    claimed += [r.id for r in got]
            except Exception as exc:
                errors.append(f"op {i} ({kind}): {type(exc).__name__}: {exc}")
    finally:
        store.close()
    return {
        "proc": proc,
        "errors": errors,
        "new_messages": new_messages,
        "claimed": claimed,
        "cursors": cursors,
    }


def crash_worker(url: str, bot_id: str) -> None:
    """Record batches of CRASH_BATCH messages forever; the cursor names the last message."""
    import structlog

    # stdout is the "ready" channel to the parent; logs go to stderr
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    store = Store.open(url)
    cursor = store.get_cursor(bot_id)
    n = int(cursor.split("-")[1]) + 1 if cursor else 0
    print("ready", flush=True)
    while True:
        records = [
            record(str(m), f"u{m % 7}@im.wechat", f"t{m}") for m in range(n, n + CRASH_BATCH)
        ]
        n += CRASH_BATCH
        store.record_batch(bot_id, records, f"msg-{n - 1}")


if __name__ == "__main__":
    if sys.argv[1] == "crash":
        crash_worker(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(f"unknown worker {sys.argv[1]!r}")
