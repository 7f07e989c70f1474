"""``ilinkbot.testing`` as its docstring shows it: a user's handler test with no poll loop."""

from __future__ import annotations

from pathlib import Path

from ilinkbot import Bot, Config
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.testing import feed, sandbox_login


async def test_the_documented_handler_test_runs(tmp_path: Path) -> None:
    sb = Sandbox()
    bot = Bot(
        Config(home=tmp_path, base_url=sb.api_base, cdn_base_url=sb.cdn_base),
        transport=sb.transport(),
    )

    @bot.message()
    async def echo(msg, ctx):  # type: ignore[no-untyped-def]
        await msg.reply(msg.text)

    account = await sandbox_login(sb, bot.store)
    row = await feed(bot, account, sb.user_says("me@im.wechat", "hi"))
    assert row.handled_at is not None
    assert [d["text"] for d in sb.delivered("me@im.wechat")] == ["hi"]
    await bot.aclose()
