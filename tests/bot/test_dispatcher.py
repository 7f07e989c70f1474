"""The runtime's named parts: ``Dispatcher.feed`` handles an update with no poll loop, and a
``Poller`` never waits for the delivery of held messages."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from ilinkbot import Bot, filters
from ilinkbot.bot.config import Config
from ilinkbot.bot.dispatcher import Dispatcher
from ilinkbot.bot.runner import Runner
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from ilinkbot.testing import no_real_waiting
from tests.conftest import OWNER


@pytest.fixture(autouse=True)
def _fast() -> Any:
    with no_real_waiting():
        yield


async def test_feed_handles_one_update_without_a_poll_loop(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    bot = Bot(config.with_overrides(handler_max_attempts=2), transport=sb.transport(), store=store)

    @bot.message(filters.text)
    async def echo(msg: Any, ctx: Any) -> None:
        if msg.text == "bad":
            raise ValueError("bug")
        await msg.reply(f"echo {msg.text}")

    dispatcher = Dispatcher(bot, bot.runtime)
    try:
        update = sb.user_says(OWNER, "hello")
        row = await dispatcher.feed(account, update)
        assert row.handled_at is not None
        assert [d["text"] for d in sb.delivered(OWNER)] == ["echo hello"]
        assert await dispatcher.feed(account, update) is None, "a message is handled once"
        dead = await dispatcher.feed(account, sb.user_says(OWNER, "bad"))
        assert dead.dead_at is not None and dead.attempts == 2
        assert store.get_cursor(account.bot_id) == "", "feeding never moves the cursor"
    finally:
        await bot.aclose()


async def test_a_slow_held_delivery_does_not_stall_other_users(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    bot = Bot(config.with_overrides(reply_quota=1), transport=sb.transport(), store=store)

    @bot.message(filters.text)
    async def echo(msg: Any, ctx: Any) -> None:
        await msg.reply(f"echo {msg.text}")

    runner = Runner(bot, install_signals=False)
    task = asyncio.create_task(runner.serve())
    loop = asyncio.get_running_loop()

    async def until(pred: Any, timeout: float = 10.0) -> float:
        start = loop.time()
        while not pred():
            assert loop.time() - start < timeout, "condition not met in time"
            await asyncio.sleep(0.02)
        return loop.time() - start

    def texts(user: str) -> list[str]:
        return [d["text"] for d in sb.delivered(user)]

    try:
        sb.user_says(OWNER, "one")
        await until(lambda: texts(OWNER) == ["echo one"])
        held = await bot.send("news", to=OWNER)  # the one reply of this window is used
        assert held.state == "held"
        sb.queue_faults("sendmessage", ["delay:4"])  # the held message's delivery is slow
        sb.user_says(OWNER, "two")  # releases "news"
        await until(lambda: sb.faults_fired() != [])
        # another user writes while "news" is still on its way
        sb.user_says("other@im.wechat", "hi")
        took = await until(lambda: texts("other@im.wechat") == ["echo hi"], timeout=3.0)
        assert took < 3.0
        assert texts(OWNER) == ["echo one"], "news is still being delivered"
        # the released message goes first (and uses the new window's one reply)
        await until(lambda: texts(OWNER) == ["echo one", "news"])
    finally:
        runner.request_stop()
        assert await task == 0


async def test_data_writes_in_async_handlers_do_not_block_the_loop(
    config: Config, sb: Sandbox, store: Store, account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_set = store.set_user_value

    def slow_set(*args: Any) -> None:
        import time

        time.sleep(0.4)  # a slow database
        real_set(*args)

    monkeypatch.setattr(store, "set_user_value", slow_set)
    bot = Bot(config, transport=sb.transport(), store=store)
    ticks: list[float] = []

    @bot.message(filters.text)
    async def count(msg: Any, ctx: Any) -> None:
        ctx.data["plain"] = 1  # sync syntax, written in the background
        ctx.data["plain"] = 2  # ... in order
        await ctx.data.set("awaited", msg.text)
        assert store.get_user_data(account.bot_id, OWNER)["awaited"] == msg.text

    async def ticker() -> None:
        while True:
            ticks.append(asyncio.get_running_loop().time())
            await asyncio.sleep(0.05)

    tick = asyncio.create_task(ticker())
    try:
        row = await Dispatcher(bot, bot.runtime).feed(account, sb.user_says(OWNER, "hi"))
    finally:
        tick.cancel()
        await bot.aclose()
    assert row.handled_at is not None
    assert store.get_user_data(account.bot_id, OWNER) == {"plain": 2, "awaited": "hi"}
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) > 10 and max(gaps) < 0.3, "the event loop kept running during writes"
