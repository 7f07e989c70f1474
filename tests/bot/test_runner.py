"""The receive loop and handler API (issue 6), in-process against the sandbox."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ilinkbot import Bot, filters
from ilinkbot.bot.config import Config
from ilinkbot.bot.exitcodes import Exit
from ilinkbot.bot.runner import Runner
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from ilinkbot.testing import no_real_waiting, sandbox_login
from tests.clirun import run_cli
from tests.conftest import OWNER


def make_bot(config: Config, sb: Sandbox, store: Store) -> Bot:
    return Bot(config.with_overrides(handler_max_attempts=3), transport=sb.transport(), store=store)


async def wait_for(pred: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def start(bot: Bot, **kw: Any) -> tuple[Runner, asyncio.Task[int]]:
    runner = Runner(bot, install_signals=False, **kw)
    return runner, asyncio.create_task(runner.serve())


@pytest.fixture(autouse=True)
def _fast() -> Any:
    with no_real_waiting():
        yield


async def test_echo_round_trip_and_commands(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    bot = make_bot(config, sb, store)

    @bot.command("help")
    async def help_(msg, ctx):  # type: ignore[no-untyped-def]
        await msg.reply(f"help for {msg.args or 'everything'}")

    @bot.message(filters.text)
    def echo(msg, ctx):  # type: ignore[no-untyped-def]  # plain def: runs in a thread
        ctx.data["count"] = ctx.data.get("count", 0) + 1
        msg.reply(f"echo {msg.text} #{ctx.data['count']}")

    runner, task = await start(bot)
    sb.user_says(OWNER, "hello")
    sb.user_says(OWNER, "/help send")
    sb.user_says(OWNER, "again")
    await wait_for(lambda: len(sb.delivered(OWNER)) == 3)
    runner.request_stop()
    assert await task == 0
    assert [d["text"] for d in sb.delivered(OWNER)] == [
        "echo hello #1",
        "help for send",
        "echo again #2",
    ]
    assert store.get_user_data(account.bot_id, OWNER) == {"count": 2}
    assert store.unhandled(account.bot_id) == []
    assert sb.violations() == []
    assert any(b["online"] is False for b in sb.bots())  # notifystart then notifystop


async def test_message_seen_before_is_not_handled_twice(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    calls: list[str] = []
    bot = make_bot(config, sb, store)

    @bot.message()
    async def count(msg, ctx):  # type: ignore[no-untyped-def]
        calls.append(msg.message_id)

    runner, task = await start(bot)
    said = sb.user_says(OWNER, "once")
    await wait_for(lambda: len(calls) == 1)
    runner.request_stop()
    await task
    # the same message again from the server (e.g. an old cursor) is ignored
    from ilinkbot.bot.inbound import inbound_record
    from ilinkbot.ilink import WeixinMessage

    rec = inbound_record(WeixinMessage.from_dict(said))
    assert store.record_batch(account.bot_id, [rec], "") == []
    runner, task = await start(make_bot(config, sb, store))
    await asyncio.sleep(0.5)
    runner.request_stop()
    await task
    assert calls == [str(said["message_id"])]


async def test_failing_handler_goes_to_error_handler_then_dead_letter(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    bot = make_bot(config, sb, store)
    errors: list[str] = []

    @bot.message(filters.text)
    async def boom(msg, ctx):  # type: ignore[no-untyped-def]
        if msg.text == "bad":
            raise ValueError("handler bug")
        await msg.reply("fine")

    @bot.error
    async def on_error(exc, msg, ctx):  # type: ignore[no-untyped-def]
        errors.append(f"{type(exc).__name__}:{msg.text}")

    runner, task = await start(bot)
    sb.user_says(OWNER, "bad")
    sb.user_says(OWNER, "good")
    await wait_for(lambda: len(sb.delivered(OWNER)) == 1)
    runner.request_stop()
    assert await task == 0
    assert errors == ["ValueError:bad"] * 3
    (dead,) = store.dead_inbox(account.bot_id)
    assert dead.attempts == 3 and "handler bug" in (dead.last_error or "")
    assert [d["text"] for d in sb.delivered(OWNER)] == ["fine"]
    # the dead letter is visible in `ilinkbot status`
    import json
    import os

    env = {**os.environ, "ILINKBOT_HOME": str(config.home), "ILINKBOT_BASE_URL": sb.api_base}
    out = await asyncio.to_thread(run_cli, env, "status", "--json")  # its own event loop
    assert out.code == 0, out.stderr
    (acc,) = json.loads(out.stdout)["accounts"]
    assert acc["dead_inbox"] == 1


async def test_session_expired_mid_run_stops_that_account_only(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    second = await sandbox_login(sb, store, owner="boss@im.wechat")
    bot = make_bot(config, sb, store)

    @bot.message(filters.text)
    async def echo(msg, ctx):  # type: ignore[no-untyped-def]
        await msg.reply(msg.text)

    runner, task = await start(bot)
    sb.user_says(OWNER, "before", bot_id=account.bot_id)
    await wait_for(lambda: len(sb.delivered(OWNER)) == 1)
    sb.expire_session(account.bot_id)
    await wait_for(lambda: account.bot_id in runner.expired)
    assert store.get_account(account.bot_id).state == "expired"  # type: ignore[union-attr]
    sb.user_says("boss@im.wechat", "still here", bot_id=second.bot_id)
    await wait_for(lambda: len(sb.delivered("boss@im.wechat")) == 1)
    sb.expire_session(second.bot_id)
    assert await asyncio.wait_for(task, 10) == Exit.SESSION_EXPIRED


async def test_held_push_released_when_the_user_writes_to_a_running_bot(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    bot = make_bot(config.with_overrides(reply_quota=1), sb, store)
    runner, task = await start(bot)
    sb.user_says(OWNER, "hi")
    await wait_for(lambda: store.get_peer(account.bot_id, OWNER) is not None)
    assert (await bot.send("one")).state == "delivered"
    assert (await bot.send("two")).state == "held"
    sb.user_says(OWNER, "again")
    await wait_for(lambda: len(sb.delivered(OWNER)) == 2)
    runner.request_stop()
    await task
    assert [d["text"] for d in sb.delivered(OWNER)] == ["one", "two"]


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.t = start
        self.advanced = asyncio.Event()

    def now(self) -> datetime:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await self.advanced.wait()
        self.advanced.clear()

    def advance(self, delta: timedelta) -> None:
        self.t += delta
        self.advanced.set()


async def test_schedule_fires_under_a_controlled_clock(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    clock = FakeClock(datetime(2026, 11, 21, 0, 30, tzinfo=UTC))  # 08:30 in Shanghai
    bot = Bot(config, transport=sb.transport(), store=store, clock=clock)

    @bot.schedule("0 9 * * *", tz="Asia/Shanghai")
    async def morning(ctx):  # type: ignore[no-untyped-def]
        await ctx.send("good morning")

    sb.user_says(OWNER, "hi")
    runner, task = await start(bot)
    await asyncio.sleep(0.3)
    assert sb.delivered(OWNER) == []
    clock.advance(timedelta(minutes=29))
    await asyncio.sleep(0.3)
    assert sb.delivered(OWNER) == []  # 08:59
    clock.advance(timedelta(minutes=1))  # 09:00 Shanghai
    await wait_for(lambda: len(sb.delivered(OWNER)) == 1)
    clock.advance(timedelta(hours=1))
    await asyncio.sleep(0.3)
    runner.request_stop()
    await task
    assert [d["text"] for d in sb.delivered(OWNER)] == ["good morning"]


async def test_typing_uses_getconfig_ticket(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    bot = make_bot(config, sb, store)

    @bot.message(filters.text)
    async def slow(msg, ctx):  # type: ignore[no-untyped-def]
        async with ctx.typing():
            await asyncio.sleep(0.05)
        await msg.reply("typed")

    runner, task = await start(bot)
    sb.user_says(OWNER, "hi")
    await wait_for(lambda: len(sb.delivered(OWNER)) == 1)
    runner.request_stop()
    await task
    statuses = [e["status"] for e in sb.typing_events()]
    assert statuses[0] == 1 and statuses[-1] == 2


async def test_no_account_means_a_clear_error_not_a_qr_login(
    config: Config, sb: Sandbox, store: Store
) -> None:
    bot = make_bot(config, sb, store)
    runner = Runner(bot, install_signals=False)
    assert await runner.serve() == Exit.NO_ACCOUNT
    assert sb.qr_codes() == []


def test_bot_from_config_reads_the_file_and_applies_overrides(tmp_path: Any) -> None:
    import json

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"reply_quota": 4, "chunk_size": 500}))
    bot = Bot.from_config(path, reply_quota=2)
    assert bot.config.reply_quota == 2 and bot.config.chunk_size == 500
    assert bot.config.config_path == path


def test_filters_compose() -> None:
    from types import SimpleNamespace

    msg = SimpleNamespace(text="/deploy prod", kind="text", user="a@im.wechat", command="deploy")
    f = (filters.startswith("/") & filters.from_user("a@im.wechat")) | filters.image
    assert f(msg) and not (~f)(msg)
    assert filters.regex(r"prod$")(msg) and filters.command("Deploy")(msg)
    assert not filters.from_user("b@im.wechat")(msg)
