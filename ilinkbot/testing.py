"""Helpers for testing code built on ilinkbot (shipped, like ``structlog.testing``).

- :func:`sandbox_login`: log a bot in against an :class:`ilinkbot.ilink.sandbox.Sandbox`
  without a terminal, and store its credentials.
- :func:`feed`: hand one update to a bot's handlers, with no poll loop: the update is stored
  as a poll would store it, the matching handler runs (with retries and dead-lettering as
  under ``ilinkbot run``), and the inbox row comes back.
- :func:`no_real_waiting`: every retry/back-off pause returns at once.
- :func:`capture_logs`: structlog's log capture, re-exported.

A handler test, against the sandbox (no network)::

    from ilinkbot import Bot, Config
    from ilinkbot.ilink.sandbox import Sandbox
    from ilinkbot.testing import feed, sandbox_login

    async def test_echo(tmp_path):
        sb = Sandbox()
        bot = Bot(Config(home=tmp_path, base_url=sb.api_base, cdn_base_url=sb.cdn_base),
                  transport=sb.transport())

        @bot.message()
        async def echo(msg, ctx):
            await msg.reply(msg.text)

        account = await sandbox_login(sb, bot.store)
        row = await feed(bot, account, sb.user_says("me@im.wechat", "hi"))
        assert row.handled_at is not None
        assert [d["text"] for d in sb.delivered("me@im.wechat")] == ["hi"]
        await bot.aclose()
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from structlog.testing import capture_logs

from ilinkbot.bot.app import Bot
from ilinkbot.bot.dispatcher import Dispatcher
from ilinkbot.bot.simulator import sandbox_login
from ilinkbot.bot.waiting import real_waiting, set_real_waiting
from ilinkbot.ilink import WeixinMessage

__all__ = ["capture_logs", "feed", "no_real_waiting", "sandbox_login"]


@contextmanager
def no_real_waiting() -> Iterator[None]:
    previous = real_waiting()
    set_real_waiting(False)
    try:
        yield
    finally:
        set_real_waiting(previous)


async def feed(bot: Bot, account: Any, update: WeixinMessage | dict[str, Any]) -> Any:
    """Handle ``update`` with ``bot``'s handlers as ``ilinkbot run`` would, without polling;
    returns the inbox row as it ends (handled or dead-lettered), ``None`` if seen before."""
    return await Dispatcher(bot, bot.runtime).feed(account, update)
