"""Pushes that tell the truth (issue 5), in-process against the strict sandbox."""

from __future__ import annotations

import random

import pytest

from ilinkbot.bot.config import Config
from ilinkbot.bot.errors import NoContextError
from ilinkbot.bot.inbound import inbound_record
from ilinkbot.bot.outbox import Outbox
from ilinkbot.bot.push import PushRequest, push, send_to_wechat
from ilinkbot.bot.service import Service
from ilinkbot.ilink.models import WeixinMessage
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from ilinkbot.testing import capture_logs, no_real_waiting
from tests.conftest import OWNER


async def send(svc: Service, text: str, **kw: object):  # type: ignore[no-untyped-def]
    return await push(svc, PushRequest(text), catch_up_seconds=0.2, **kw)  # type: ignore[arg-type]


async def test_delivered_to_owner_with_the_right_context_token(
    sb: Sandbox, svc: Service, account: object, store: Store
) -> None:
    said = sb.user_says(OWNER, "hello bot")
    result = await send(svc, "build passed")
    assert result.state == "delivered" and result.ok
    (got,) = sb.delivered(OWNER)
    assert got["text"] == "build passed" and got["context_token_ok"]
    assert got["client_id"] == result.client_ids[0]
    assert got["message_id"] == result.message_ids[0]
    assert sb.violations() == []
    # the catch-up pass stored the inbound message for a later `run` to handle
    assert [r.message_id for r in store.unhandled(account.bot_id)] == [str(said["message_id"])]  # type: ignore[attr-defined]
    peer = store.get_peer(account.bot_id, OWNER)  # type: ignore[attr-defined]
    assert peer is not None and peer.context_token == said["context_token"]


async def test_a_push_to_an_alias_goes_to_the_user_it_names_with_their_token(
    sb: Sandbox, svc: Service, account: object, store: Store
) -> None:
    friend = "friend@im.wechat"
    sb.user_says(OWNER, "hi")
    sb.user_says(friend, "hello")
    await send(svc, "catch up first")  # both peers stored
    store.set_alias(account.bot_id, OWNER, friend)  # type: ignore[attr-defined]
    # the alias wins over the user id it spells, and the push reads that user's peer
    result = await push(svc, PushRequest("to the alias"), to=friend, catch_up_seconds=0)
    assert result.state == "delivered"
    got = sb.delivered(OWNER)[-1]
    assert got["text"] == "to the alias" and got["context_token_ok"]
    assert [d["text"] for d in sb.delivered(friend)] == []
    direct = await push(svc, PushRequest("by id"), to=OWNER, catch_up_seconds=0)
    assert direct.state == "delivered" and sb.delivered(OWNER)[-1]["text"] == "by id"


def test_a_lone_surrogate_a_user_sent_is_stored_as_one_replacement_character() -> None:
    # valid as a JSON escape ("\\ud800"), not encodable as UTF-8: the store could not keep it
    msg = WeixinMessage.from_dict(
        {
            "message_id": 7,
            "from_user_id": OWNER,
            "message_type": 1,
            "context_token": "AARtoken-7",
            "item_list": [{"type": 1, "text_item": {"text": "caf\ud800 ok \udfff"}}],
        }
    )
    record = inbound_record(msg)
    assert record.raw["item_list"][0]["text_item"]["text"] == "caf\ufffd ok \ufffd"
    assert record.user_id == OWNER and record.context_token == "AARtoken-7"


async def test_no_user_ever_wrote_is_a_clear_error(
    svc: Service, account: object, sb: Sandbox
) -> None:
    with pytest.raises(NoContextError, match="never written"):
        await send(svc, "anyone there?")
    assert sb.delivered() == []


async def test_eleventh_push_is_held_then_released_first_in_order(
    sb: Sandbox, svc: Service, account: object, store: Store
) -> None:
    sb.user_says(OWNER, "hi")
    for i in range(10):
        assert (await send(svc, f"alert {i}")).state == "delivered"
    held = await send(svc, "alert 10")
    assert held.state == "held"
    held2 = await send(svc, "alert 11")
    assert held2.state == "held"
    assert len(sb.delivered(OWNER)) == 10
    assert sb.refusals() == []  # predicted: the server was not asked
    rows = store.list_outbox(account.bot_id, state="held")  # type: ignore[attr-defined]
    assert [r.client_id for r in rows] == held.client_ids + held2.client_ids

    sb.user_says(OWNER, "I'm back")
    after = await send(svc, "alert 12")
    assert after.state == "delivered"
    texts = [d["text"] for d in sb.delivered(OWNER)]
    assert texts[10:] == ["alert 10", "alert 11", "alert 12"]
    assert store.list_outbox(account.bot_id, state="held") == []  # type: ignore[attr-defined]


async def test_server_ret_minus_2_is_held_not_delivered(
    sb: Sandbox, svc: Service, account: object, store: Store
) -> None:
    sb.user_says(OWNER, "hi")
    await send(svc, "first")
    sb.advance(25 * 3600)  # the server's clock says the window is over; ours does not know
    result = await send(
        svc,
        "too late",
    )
    assert result.state == "held"
    assert "ret=-2" in (result.messages[0].reason or "")
    assert [d["text"] for d in sb.delivered(OWNER)] == ["first"]
    assert store.get_outbox(result.messages[0].outbox_id).state == "held"  # type: ignore[union-attr]


async def test_5xx_and_reset_after_processing_retry_with_same_client_id(
    sb: Sandbox, svc: Service, account: object
) -> None:
    sb.user_says(OWNER, "hi")
    sb.queue_faults("sendmessage", ["500", "reset_after", "500"])
    result = await send(svc, "exactly once")
    assert result.state == "delivered"
    got = [d for d in sb.delivered(OWNER) if d["text"] == "exactly once"]
    assert len(got) == 1 and got[0]["client_id"] == result.client_ids[0]
    fired = [f["fault"] for f in sb.faults_fired()]
    assert fired == ["500", "reset_after", "500"]


async def test_ret0_without_message_id_is_unconfirmed(
    sb: Sandbox, svc: Service, account: object
) -> None:
    sb.user_says(OWNER, "hi")
    sb.configure(omit_message_id=True)
    result = await send(svc, "maybe")
    assert result.state == "unconfirmed" and not result.ok
    assert result.message_ids == [None]


async def test_long_chinese_text_is_split_and_reassembled_exactly(
    sb: Sandbox, svc: Service, account: object
) -> None:
    rng = random.Random(7)
    text = "".join(rng.choice("微信机器人消息推送测试，。！？\n") for _ in range(10_000))
    sb.user_says(OWNER, "hi")
    result = await send(svc, text)
    assert result.state == "delivered"
    parts = [d["text"] for d in sb.delivered(OWNER)]
    assert len(parts) == len(result.messages) >= 5
    assert all(len(p) <= 2000 for p in parts)
    assert "".join(parts) == text


async def test_no_poller_send_picks_up_a_fresh_context_token(
    sb: Sandbox, svc: Service, account: object, store: Store
) -> None:
    sb.user_says(OWNER, "one")
    await send(svc, "a")
    sb.advance(23 * 3600)
    fresh = sb.user_says(OWNER, "two")  # a new token, a new window
    sb.advance(2 * 3600)  # the first message's window is now over
    result = await send(svc, "b")
    assert result.state == "delivered"
    peer = store.get_peer(account.bot_id, OWNER)  # type: ignore[attr-defined]
    assert peer is not None and peer.context_token == fresh["context_token"]


async def test_poller_lease_means_no_getupdates(
    sb: Sandbox, svc: Service, account: object, store: Store
) -> None:
    sb.user_says(OWNER, "hi")
    await send(svc, "stored token")  # catch-up records the token
    assert store.acquire_lease(account.bot_id, "other-process", 60)  # type: ignore[attr-defined]
    sb.user_says(OWNER, "unseen")
    before = store.get_cursor(account.bot_id)  # type: ignore[attr-defined]
    assert (await send(svc, "uses what the poller stored")).state == "delivered"
    assert store.get_cursor(account.bot_id) == before  # type: ignore[attr-defined]


async def test_digest_merges_held_pushes(
    sb: Sandbox, config: object, store: Store, account: object
) -> None:
    from ilinkbot.testing import no_real_waiting

    cfg = config.with_overrides(held_digest=True, reply_quota=1)  # type: ignore[attr-defined]
    svc = Service(cfg, store=store, transport=sb.transport())
    try:
        with no_real_waiting():
            sb.user_says(OWNER, "hi")
            assert (await send(svc, "one")).state == "delivered"
            for t in ("two", "three", "four"):
                assert (await send(svc, t)).state == "held"
            sb.user_says(OWNER, "back")
            out = await Outbox(svc).drain(account)  # nothing pending yet
            assert out == []
            assert (await send(svc, "five")).state == "held"  # quota 1: digest took it
        texts = [d["text"] for d in sb.delivered(OWNER)]
        assert texts[0] == "one"
        assert texts[1].startswith("4 messages held") or texts[1].startswith("3 messages held")
        assert "two" in texts[1] and "three" in texts[1] and "four" in texts[1]
    finally:
        await svc.aclose()


async def test_transient_failure_keeps_later_rows_of_that_user_pending_in_order(
    sb: Sandbox, svc: Service, account: object, store: Store
) -> None:
    sb.user_says(OWNER, "hi")
    sb.queue_faults("sendmessage", ["500"] * 4)  # one whole pass of tries fails
    first = await send(svc, "A\n\n" + "x" * 2500)  # two rows
    assert first.state == "pending"
    states = [store.get_outbox(m.outbox_id).state for m in first.messages]  # type: ignore[union-attr]
    assert states == ["pending", "pending"]
    assert sb.delivered(OWNER) == []
    again = await send(svc, "B")
    assert again.state == "delivered"
    texts = [d["text"] for d in sb.delivered(OWNER)]
    assert texts[0].startswith("A") and texts[-1] == "B" and len(texts) == 3


async def test_4xx_is_not_retried(sb: Sandbox, svc: Service, account: object, store: Store) -> None:
    sb.user_says(OWNER, "hi")
    sb.queue_faults("sendmessage", ["400", "400"])
    result = await send(svc, "refused")
    assert result.state == "failed" and "HTTP 400" in (result.messages[0].reason or "")
    assert [f["fault"] for f in sb.faults_fired()] == ["400"]  # one attempt only
    assert store.get_outbox(result.messages[0].outbox_id).state == "failed"  # type: ignore[union-attr]
    assert sb.delivered() == []


async def test_a_push_waits_for_another_process_write_lock_without_freezing_the_loop(
    sb: Sandbox, svc: Service, account: object, store: Store, home: object
) -> None:
    """SQLite writes are tried in place without waiting; when another process holds the
    write lock the push waits in a thread, so the event loop (other handlers) keeps going."""
    import asyncio
    import sqlite3
    from pathlib import Path

    sb.user_says(OWNER, "hi")
    await send(svc, "warm")  # the catch-up pass has stored the peer
    other = sqlite3.connect(Path(str(home)) / "ilinkbot.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # e.g. `ilinkbot run` recording a batch
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    sending = asyncio.create_task(push(svc, PushRequest("after the lock"), catch_up_seconds=0))
    await asyncio.sleep(0.5)
    assert not sending.done()  # waiting for the lock...
    assert ticks >= 20  # ...while the loop runs on
    assert [d["text"] for d in sb.delivered(OWNER)] == ["warm"]
    other.execute("COMMIT")
    result = await asyncio.wait_for(sending, 10)
    tick_task.cancel()
    other.close()
    assert result.state == "delivered"
    assert [d["text"] for d in sb.delivered(OWNER)] == ["warm", "after the lock"]
    (row,) = store.list_outbox(account.bot_id, state="sent")[1:]  # type: ignore[attr-defined]
    assert row.message_id == result.message_ids[0]


async def _expire_after_first_push(sb: Sandbox, svc: Service) -> None:
    sb.user_says(OWNER, "hi")
    assert (await send(svc, "before")).state == "delivered"
    sb.expire_session()


async def test_minus_14_on_sendmessage_keeps_the_row_as_session_expired(
    sb: Sandbox, svc: Service, account: object, store: Store
) -> None:
    await _expire_after_first_push(sb, svc)
    result = await push(svc, PushRequest("during"), catch_up_seconds=0)
    assert result.state == "session_expired"
    (row,) = store.list_outbox(account.bot_id, state="session_expired")  # type: ignore[attr-defined]
    assert row.payload["item"]["text_item"]["text"] == "during"
    assert store.get_account(account.bot_id).state == "expired"  # type: ignore[attr-defined]


async def test_minus_14_on_getuploadurl_is_session_expired_not_failed(
    sb: Sandbox, svc: Service, account: object, store: Store, tmp_path: object
) -> None:
    from pathlib import Path

    doc = Path(str(tmp_path)) / "report.pdf"
    doc.write_bytes(b"%PDF-1.4 tiny")
    await _expire_after_first_push(sb, svc)
    result = await push(svc, PushRequest(file=doc), catch_up_seconds=0)
    assert result.state == "session_expired"
    (row,) = store.list_outbox(account.bot_id, state="session_expired")  # type: ignore[attr-defined]
    assert row.payload["media"]["path"] == str(doc.resolve())
    assert store.list_outbox(account.bot_id, state="failed") == []  # type: ignore[attr-defined]


async def test_minus_14_in_catch_up_stores_the_push_then_a_new_login_delivers_it(
    sb: Sandbox, svc: Service, account: object, store: Store
) -> None:
    import asyncio

    import httpx

    from ilinkbot.bot.login import run_login
    from ilinkbot.ilink.client import IlinkClient

    await _expire_after_first_push(sb, svc)
    kept = await send(svc, "kept for later")  # the catch-up getupdates answers -14
    assert kept.state == "session_expired" and kept.messages[0].reason
    assert [r.state for r in store.list_outbox(account.bot_id)] == ["sent", "session_expired"]  # type: ignore[attr-defined]

    async with IlinkClient(sb.api_base, http=httpx.AsyncClient(transport=sb.transport())) as qr:
        issued = len(sb.qr_codes())
        login = asyncio.create_task(run_login(qr, store, interval=0.0, timeout=10))
        while len(sb.qr_codes()) == issued:
            await asyncio.sleep(0.01)
        sb.scan()
        sb.confirm(user_id=OWNER)
        new = await asyncio.wait_for(login, 10)
    assert new.bot_id != account.bot_id  # type: ignore[attr-defined]
    # the old account keeps its history; the kept row waits, held, on the new one
    assert [r.state for r in store.list_outbox(account.bot_id)] == ["sent"]  # type: ignore[attr-defined]
    (held,) = store.list_outbox(new.bot_id)
    assert held.state == "held" and held.client_id == kept.client_ids[0]

    sb.user_says(OWNER, "back", bot_id=new.bot_id)
    after = await send(svc, "after")  # its catch-up sees the owner and releases first
    assert after.state == "delivered"
    texts = [(d["bot_id"], d["text"]) for d in sb.delivered(OWNER)]
    assert texts[-2:] == [(new.bot_id, "kept for later"), (new.bot_id, "after")]
    assert sb.violations() == []


def test_send_to_wechat_replaces_a_lone_surrogate_and_sends(
    sb: Sandbox, config: Config, account: object, store: Store
) -> None:
    sb.user_says(OWNER, "hi")
    with no_real_waiting(), capture_logs() as logs:
        result = send_to_wechat(
            "bad \ud800 char", title="t\udcff", config=config, transport=sb.transport()
        )
    assert result.state == "delivered"
    assert [d["text"] for d in sb.delivered(OWNER)] == ["t\ufffd\n\nbad \ufffd char"]
    warned = [e for e in logs if e["event"] == "text_not_utf8"]
    assert [(e["field"], e["replaced"]) for e in warned] == [("text", 1), ("title", 1)]
    (row,) = store.list_outbox(account.bot_id, state="sent")  # type: ignore[attr-defined]
    assert row.payload["item"]["text_item"]["text"] == "t\ufffd\n\nbad \ufffd char"
