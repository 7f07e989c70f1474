"""What a user sees when a handler runs more than once (issue 13): every message sent while
handling one inbound message goes out once, however often the handler or the error handler
runs; and ``skip_backlog``, which runs no handler for messages stored before the start.
In-process against the sandbox."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from ilinkbot import Bot, filters
from ilinkbot.bot.config import Config
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from ilinkbot.testing import no_real_waiting
from tests.conftest import OWNER

from .test_runner import start, wait_for


@pytest.fixture(autouse=True)
def _fast() -> Any:
    with no_real_waiting():
        yield


def texts(sb: Sandbox) -> list[str]:
    return [d["text"] for d in sb.delivered(OWNER)]


async def test_replies_of_a_retried_handler_go_out_once(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    bot = Bot(
        config.with_overrides(handler_max_attempts=3, chunk_size=20),
        transport=sb.transport(),
        store=store,
    )
    attempts: list[int] = []

    @bot.message(filters.text)
    async def flaky(msg, ctx):  # type: ignore[no-untyped-def]
        attempts.append(1)
        await msg.reply("got it")
        await ctx.send("working on it")
        await msg.reply("a" * 20 + "b" * 20)  # two chunks of 20
        if len(attempts) < 3:
            raise RuntimeError("flaky backend")
        await msg.reply("done")

    runner, task = await start(bot)
    sb.user_says(OWNER, "please")
    await wait_for(lambda: store.unhandled(account.bot_id) == [] and len(attempts) == 3)
    runner.request_stop()
    assert await task == 0
    assert texts(sb) == ["got it", "working on it", "a" * 20, "b" * 20, "done"]
    assert store.dead_inbox(account.bot_id) == []


async def test_error_handler_reply_goes_out_once(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    bot = Bot(config.with_overrides(handler_max_attempts=5), transport=sb.transport(), store=store)
    calls: list[str] = []

    @bot.message(filters.text)
    async def broken(msg, ctx):  # type: ignore[no-untyped-def]
        raise ValueError("bug")

    @bot.error
    async def sorry(exc, msg, ctx):  # type: ignore[no-untyped-def]
        calls.append(msg.text)
        await msg.reply("sorry, something went wrong")
        await ctx.send("the team was told")

    runner, task = await start(bot)
    sb.user_says(OWNER, "hi")
    await wait_for(lambda: len(store.dead_inbox(account.bot_id)) == 1)
    runner.request_stop()
    assert await task == 0
    assert calls == ["hi"] * 5
    assert texts(sb) == ["sorry, something went wrong", "the team was told"]


async def test_two_inbound_messages_get_distinct_reply_ids(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    bot = Bot(config, transport=sb.transport(), store=store)

    @bot.message(filters.text)
    def same_reply(msg, ctx):  # type: ignore[no-untyped-def]  # plain def: a worker thread
        msg.reply("ok")
        ctx.send("noted")

    runner, task = await start(bot)
    sb.user_says(OWNER, "one")
    sb.user_says(OWNER, "two")
    await wait_for(lambda: len(sb.delivered(OWNER)) == 4)
    runner.request_stop()
    assert await task == 0
    assert Counter(texts(sb)) == {"ok": 2, "noted": 2}
    ids = [d["client_id"] for d in sb.delivered(OWNER)]
    assert len(set(ids)) == 4 and all(i.startswith("openclaw-weixin:") for i in ids)


async def test_skip_backlog_marks_older_messages_handled_without_running_handlers(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    from ilinkbot.bot.outbox import Outbox
    from ilinkbot.bot.push import catch_up
    from ilinkbot.testing import capture_logs

    # What a `send` catch-up stored while no bot ran: three old messages.
    for text in ("old 1", "old 2", "old 3"):
        sb.user_says(OWNER, text)
    early = Bot(config, transport=sb.transport(), store=store)
    assert await catch_up(Outbox(early.service), account, seconds=0.3) == 3
    await early.aclose()

    bot = Bot(config.with_overrides(skip_backlog=True), transport=sb.transport(), store=store)
    seen: list[str] = []

    @bot.message(filters.text)
    async def echo(msg, ctx):  # type: ignore[no-untyped-def]
        seen.append(msg.text)
        await msg.reply(f"echo {msg.text}")

    with capture_logs() as logs:
        runner, task = await start(bot)
        await wait_for(lambda: any(e["event"] == "backlog_skipped" for e in logs))
        sb.user_says(OWNER, "new")
        await wait_for(lambda: len(sb.delivered(OWNER)) == 1)
        runner.request_stop()
        assert await task == 0
    assert seen == ["new"]
    assert texts(sb) == ["echo new"]
    assert store.unhandled(account.bot_id) == []
    (skipped,) = [e for e in logs if e["event"] == "backlog_skipped"]
    assert skipped["count"] == 3
