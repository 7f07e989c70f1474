"""Concurrent sends share store transactions (group commit) and take turns per user, and
neither changes what a send promises: rows stored before the attempt, marked before the
send returns, one user's messages in the order they were sent."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ilinkbot.bot.config import Config
from ilinkbot.bot.push import PushRequest, push
from ilinkbot.bot.service import Service
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import ClaimedSend, Store, UnknownAccountError
from tests.conftest import OWNER

USERS = [f"user{i}@im.wechat" for i in range(6)]


async def send(svc: Service, text: str, to: str | None = None) -> Any:
    return await push(svc, PushRequest(text), to=to, catch_up_seconds=0)


async def everyone_wrote(sb: Sandbox, svc: Service) -> None:
    for user in [OWNER, *USERS]:
        sb.user_says(user, "hi")
    await push(svc, PushRequest("warm"), catch_up_seconds=1)  # stores every token


def transactions(monkeypatch: pytest.MonkeyPatch, store: Store, name: str) -> list[int]:
    """How many items each committed call of ``store.<name>`` wrote: one call is one
    transaction. (Set before the Service is made: it binds the method then.)"""
    sizes: list[int] = []
    real = getattr(store, name)

    def counting(items: Any, **kw: Any) -> Any:
        out = real(items, **kw)  # a try in place that found the lock taken raises here
        sizes.append(len(items))
        return out

    monkeypatch.setattr(store, name, counting)
    return sizes


@contextmanager
def another_writer(home: Path) -> Iterator[sqlite3.Connection]:
    """Another process's transaction holds SQLite's write lock until the block ends, so a
    send cannot write in place and waits for the lock in a thread."""
    conn = sqlite3.connect(home / "ilinkbot.db", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    finally:
        conn.execute("ROLLBACK")
        conn.close()


async def test_sends_in_flight_share_transactions_and_all_are_delivered(
    sb: Sandbox, config: Config, store: Store, account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    enqueues = transactions(monkeypatch, store, "enqueue_claimed_many")
    marks = transactions(monkeypatch, store, "mark_sent_groups")
    svc = Service(config, store=store, transport=sb.transport())
    try:
        await everyone_wrote(sb, svc)
        enqueues.clear()
        marks.clear()
        with another_writer(config.home):
            sends = [asyncio.create_task(send(svc, f"to {u}", to=u)) for u in USERS]
            await asyncio.sleep(0.3)  # every send is waiting for the lock by now
            assert not any(s.done() for s in sends)
        results = await asyncio.gather(*sends)
    finally:
        await svc.aclose()
    assert [r.state for r in results] == ["delivered"] * len(USERS)
    for user, result in zip(USERS, results, strict=True):
        (got,) = sb.delivered(user)[1:] or sb.delivered(user)
        assert got["text"] == f"to {user}" and got["client_id"] == result.client_ids[0]
    # the first send, alone in flight when it wrote, waited for the lock in a thread; the
    # five that came meanwhile were stored together, in one transaction, once it was free
    assert enqueues == [1, len(USERS) - 1]
    assert sum(marks) == len(USERS) and len(marks) < len(USERS)
    stored = store.list_outbox(account.bot_id, state="sent")
    assert {r.client_id for r in stored} >= {r.client_ids[0] for r in results}


async def test_a_send_to_an_unknown_account_fails_alone_in_a_shared_transaction(
    svc: Service, config: Config, store: Store, account: Any
) -> None:
    with another_writer(config.home):
        good = [
            asyncio.create_task(
                svc.enqueue_send(ClaimedSend(account.bot_id, u, [{"kind": "text"}]))
            )
            for u in USERS[:3]
        ]
        bad = asyncio.create_task(
            svc.enqueue_send(ClaimedSend("gone@im.bot", USERS[3], [{"kind": "text"}]))
        )
        await asyncio.sleep(0.2)
    stored = await asyncio.gather(*good)
    with pytest.raises(UnknownAccountError):
        await bad
    assert [len(rows) for rows, _ in stored] == [1, 1, 1]
    assert len(store.list_outbox(account.bot_id)) == 3


async def test_concurrent_sends_to_one_user_arrive_in_the_order_they_were_made(
    sb: Sandbox, svc: Service, account: Any
) -> None:
    await everyone_wrote(sb, svc)
    results = await asyncio.gather(*(send(svc, f"alert {i}") for i in range(6)))
    assert [r.state for r in results] == ["delivered"] * 6
    texts = [d["text"] for d in sb.delivered(OWNER)]
    assert texts == ["warm"] + [f"alert {i}" for i in range(6)]


async def test_a_cancelled_send_does_not_strand_the_sends_that_waited_on_its_commit(
    sb: Sandbox, svc: Service, config: Config, store: Store, account: Any
) -> None:
    await everyone_wrote(sb, svc)
    with another_writer(config.home):
        first = asyncio.create_task(send(svc, "first", to=USERS[0]))
        await asyncio.sleep(0.1)  # its write waits for the lock in a thread
        others = [asyncio.create_task(send(svc, f"to {u}", to=u)) for u in USERS[1:]]
        await asyncio.sleep(0.1)
        first.cancel()
    results = await asyncio.wait_for(asyncio.gather(*others), 10)
    with pytest.raises(asyncio.CancelledError):
        await first
    assert [r.state for r in results] == ["delivered"] * (len(USERS) - 1)
    # the cancelled send's row was stored all the same: kept for a later pass, not lost
    assert [r.user_id for r in store.list_outbox(account.bot_id, state="sending")] == [USERS[0]]


async def test_a_send_waiting_long_for_its_turn_is_stored_meanwhile(
    sb: Sandbox, svc: Service, store: Store, account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ilinkbot.ilink.client import IlinkClient

    monkeypatch.setattr("ilinkbot.bot.service.TURN_PATIENCE", 0.05)

    real = IlinkClient.send_message
    first_on_the_wire = asyncio.Event()

    async def slow(self: IlinkClient, msg: Any) -> Any:
        first_on_the_wire.set()
        await asyncio.sleep(0.3)  # a slow round trip to the server
        return await real(self, msg)

    await everyone_wrote(sb, svc)
    monkeypatch.setattr(IlinkClient, "send_message", slow)
    first = asyncio.create_task(send(svc, "first"))
    await first_on_the_wire.wait()
    second = asyncio.create_task(send(svc, "second"))
    await asyncio.sleep(0.1)  # the first is still on its way
    assert not first.done() and not second.done()
    # the second still waits for its turn, but its row is stored: a crash now would not
    # lose it
    waiting = store.list_outbox(account.bot_id, state="pending")
    assert [r.payload["item"]["text_item"]["text"] for r in waiting] == ["second"]
    results = await asyncio.gather(first, second)
    assert [r.state for r in results] == ["delivered", "delivered"]
    assert [d["text"] for d in sb.delivered(OWNER)] == ["warm", "first", "second"]
