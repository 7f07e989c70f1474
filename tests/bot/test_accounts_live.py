"""A running bot follows the store: accounts logged in elsewhere are polled, those logged out
or expired are dropped, without a restart; scheduled jobs never guess an account."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ilinkbot import Bot, filters
from ilinkbot.bot.config import Config
from ilinkbot.bot.runner import Runner
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from ilinkbot.testing import no_real_waiting, sandbox_login
from tests.conftest import OWNER

from .test_runner import FakeClock

BOSS = "boss@im.wechat"


@pytest.fixture(autouse=True)
def _fast() -> Any:
    with no_real_waiting():
        yield


async def until(pred: Any, timeout: float) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not pred():
        assert loop.time() - start < timeout, "condition not met in time"
        await asyncio.sleep(0.05)
    return loop.time() - start


def echo_bot(config: Config, sb: Sandbox, store: Store, **kw: Any) -> Bot:
    bot = Bot(config, transport=sb.transport(), store=store, **kw)

    @bot.message(filters.text)
    async def echo(msg: Any, ctx: Any) -> None:
        await msg.reply(f"echo {msg.text}")

    return bot


async def test_accounts_logged_in_and_out_elsewhere_are_followed_within_5s(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    runner = Runner(echo_bot(config, sb, store), install_signals=False)
    task = asyncio.create_task(runner.serve())
    try:
        await until(lambda: runner.pollers.get(account.bot_id) is not None, 5)
        # another process (the CLI, the web page) logs a second bot in
        second = await sandbox_login(sb, store, owner=BOSS)
        took = await until(lambda: second.bot_id in runner.pollers, 5.0)
        assert took < 5.0
        sb.user_says(BOSS, "hello", bot_id=second.bot_id)
        await until(lambda: [d["text"] for d in sb.delivered(BOSS)] == ["echo hello"], 5)
        # ... and logs the first one out: it is no longer polled, the other still is
        store.logout(account.bot_id)
        await until(lambda: not runner.pollers[account.bot_id].polling, 5.0)
        sb.user_says(BOSS, "still here", bot_id=second.bot_id)
        await until(lambda: len(sb.delivered(BOSS)) == 2, 5)
        assert not task.done()
    finally:
        runner.request_stop()
        assert await task == 0


async def test_run_ends_when_its_last_account_expires(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    runner = Runner(echo_bot(config, sb, store), install_signals=False)
    task = asyncio.create_task(runner.serve())
    await until(lambda: account.bot_id in runner.pollers, 5)
    sb.expire_session(account.bot_id)
    assert await asyncio.wait_for(task, 10) == 6  # Exit.SESSION_EXPIRED


async def test_jobs_run_for_their_account_each_account_or_never_a_guess(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    second = await sandbox_login(sb, store, owner=BOSS)
    sb.user_says(OWNER, "hi", bot_id=account.bot_id)
    sb.user_says(BOSS, "hi", bot_id=second.bot_id)
    clock = FakeClock(datetime(2026, 11, 21, 8, 59, tzinfo=UTC))
    bot = Bot(config, transport=sb.transport(), store=store, clock=clock)
    ran: list[tuple[str, str]] = []

    @bot.schedule("0 9 * * *")
    async def unassigned(ctx: Any) -> None:
        ran.append(("unassigned", ctx.account.bot_id))

    @bot.schedule("0 9 * * *", per_account=True)
    async def everyone(ctx: Any) -> None:
        ran.append(("everyone", ctx.account.bot_id))
        await ctx.send("good morning")

    @bot.schedule("0 9 * * *", account=second.bot_id)
    async def boss_only(ctx: Any) -> None:
        ran.append(("boss_only", ctx.account.bot_id))

    runner = Runner(bot, install_signals=False)
    task = asyncio.create_task(runner.serve())
    try:
        await until(lambda: all(p.polling for p in runner.pollers.values()), 5)
        await until(lambda: len(runner.pollers) == 2, 5)
        await until(
            lambda: store.get_peer(account.bot_id, OWNER) and store.get_peer(second.bot_id, BOSS),
            5,
        )
        clock.advance(timedelta(minutes=1))
        await until(lambda: len(sb.delivered()) >= 2, 5)
        await asyncio.sleep(0.3)
    finally:
        runner.request_stop()
        await task
    assert sorted(ran) == sorted(
        [
            ("everyone", account.bot_id),
            ("everyone", second.bot_id),
            ("boss_only", second.bot_id),
        ]
    ), "the unassigned job does not run for a guessed account"
    assert {d["user_id"] for d in sb.delivered()} == {OWNER, BOSS}


def test_a_job_cannot_be_both_for_one_account_and_for_each() -> None:
    with pytest.raises(ValueError, match="not both"):
        Bot().schedule("0 9 * * *", account="a@im.bot", per_account=True)(lambda ctx: None)
