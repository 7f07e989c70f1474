"""``-14`` in the middle of a run: the run stops cleanly with the session-expired exit
code, nothing is lost or reported delivered; after a new login the run resumes and the
reply that met -14 goes out on the new bot once its user writes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ilinkbot import filters
from ilinkbot.bot.app import Bot
from ilinkbot.bot.config import Config
from ilinkbot.bot.exitcodes import Exit
from ilinkbot.bot.runner import Runner
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from ilinkbot.testing import capture_logs, no_real_waiting, sandbox_login

OWNER = "owner@im.wechat"
FRIEND = "friend@im.wechat"


def make_bot(config: Config, sb: Sandbox, store: Store) -> Bot:
    bot = Bot(config, transport=sb.transport(), store=store)

    @bot.message(filters.text)
    async def echo(msg: Any, ctx: Any) -> None:
        if msg.text == "expire now":
            sb.expire_session()  # the server drops the session while we handle a message
        await msg.reply(f"echo: {msg.text}")

    return bot


async def until(pred: Any, what: str, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)


@pytest.mark.timeout(60)
async def test_minus_14_mid_run_then_new_login_and_the_run_resumes(
    sb: Sandbox, config: Config, store: Store
) -> None:
    old = await sandbox_login(sb, store, owner=OWNER)
    runner = Runner(make_bot(config, sb, store), install_signals=False)
    with no_real_waiting(), capture_logs() as logs:
        task = asyncio.create_task(runner.serve())
        for i in range(5):
            sb.user_says(OWNER, f"a{i}", bot_id=old.bot_id)
            sb.user_says(FRIEND, f"f{i}", bot_id=old.bot_id)
        await until(lambda: len(sb.delivered()) == 10, "10 echoes")
        sb.user_says(OWNER, "expire now", bot_id=old.bot_id)
        code = await asyncio.wait_for(task, 15)
    assert code == Exit.SESSION_EXPIRED
    events = [e["event"] for e in logs]
    assert "session_expired" in events and "all_sessions_expired" in events
    assert store.get_account(old.bot_id).state == "expired"
    # the reply that met -14 is kept for later, never reported delivered
    texts = [d["text"] for d in sb.delivered()]
    assert "echo: expire now" not in texts and len(texts) == 10
    (row,) = [
        r
        for r in store.list_outbox(old.bot_id)
        if r.payload["item"]["text_item"]["text"] == "echo: expire now"
    ]
    assert row.state == "session_expired" and "session expired" in (row.last_error or "")
    assert store.unhandled(old.bot_id) == [] and store.dead_inbox(old.bot_id) == []

    # a new QR login; then the run starts again and handles what users write now
    new = await sandbox_login(sb, store, owner=OWNER)
    store.hand_over(new.bot_id, [old.bot_id])  # what `ilinkbot login` does for the same owner
    assert store.get_account(new.bot_id).state == "active"
    assert store.get_outbox(row.id).state == "held"
    runner = Runner(make_bot(config, sb, store), install_signals=False)
    with no_real_waiting():
        task = asyncio.create_task(runner.serve())
        try:
            for i in range(3):
                sb.user_says(OWNER, f"b{i}", bot_id=new.bot_id)
                sb.user_says(FRIEND, f"g{i}", bot_id=new.bot_id)
            await until(lambda: len(sb.delivered()) == 17, "the kept reply and 6 more echoes")
            await asyncio.sleep(0.3)  # nothing more must come
        finally:
            runner.request_stop()
            assert await asyncio.wait_for(task, 15) == Exit.OK
    after = [(d["bot_id"], d["text"]) for d in sb.delivered()][10:]
    assert sorted(after) == sorted(
        [(new.bot_id, f"echo: {t}") for t in ("expire now", "b0", "b1", "b2", "g0", "g1", "g2")]
    )
    owner_texts = [d["text"] for d in sb.delivered(OWNER)][5:]
    assert owner_texts[0] == "echo: expire now"  # released first, before the new replies
    assert store.unhandled(new.bot_id) == []
    assert sb.violations() == []
