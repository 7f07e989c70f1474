"""Routers: a registry that nests, and a bot that runs the handlers of included routers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ilinkbot import Bot, Router, filters
from ilinkbot.bot.config import Config
from ilinkbot.bot.runner import Runner
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from ilinkbot.testing import no_real_waiting
from tests.conftest import OWNER


def test_included_handlers_come_after_the_routers_own_in_order() -> None:
    root, a, b, a1 = Router(name="root"), Router(name="a"), Router(name="b"), Router(name="a1")

    @a1.message()
    def h_a1(msg: Any) -> None: ...

    @a.message()
    def h_a(msg: Any) -> None: ...

    @root.message()
    def h_root(msg: Any) -> None: ...

    @b.message()
    def h_b(msg: Any) -> None: ...

    @b.error
    def on_b_error(exc: Exception) -> None: ...

    @a.schedule("0 9 * * *")
    def morning(ctx: Any) -> None: ...

    a.include_router(a1)
    root.include_router(a)
    root.include_router(b)
    assert [h.name for h in root.handlers] == ["h_root", "h_a", "h_a1", "h_b"]
    assert root.error_handlers == [on_b_error]
    assert [j.name for j in root.jobs] == ["morning"]
    assert [h.name for h in a.handlers] == ["h_a", "h_a1"], "a child sees only its subtree"


def test_a_router_is_included_once_and_never_in_itself() -> None:
    root, child = Router(name="root"), Router(name="child")
    root.include_router(child)
    with pytest.raises(ValueError, match="already included"):
        Router(name="other").include_router(child)
    with pytest.raises(ValueError, match="loop"):
        child.include_router(root)
    with pytest.raises(ValueError, match="loop"):
        root.include_router(root)


async def test_a_bot_runs_the_handlers_of_routers_it_includes(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    admin = Router(name="admin")

    @admin.command("stats")
    async def stats(msg: Any, ctx: Any) -> None:
        await msg.reply("stats: 1 user")

    bot = Bot(config, transport=sb.transport(), store=store)

    @bot.message(filters.text & ~filters.startswith("/"))
    async def echo(msg: Any, ctx: Any) -> None:
        await msg.reply(f"echo {msg.text}")

    bot.include_router(admin)
    runner = Runner(bot, install_signals=False)
    with no_real_waiting():
        task = asyncio.create_task(runner.serve())
        sb.user_says(OWNER, "hi")
        sb.user_says(OWNER, "/stats")
        deadline = asyncio.get_running_loop().time() + 10
        while len(sb.delivered(OWNER)) < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        runner.request_stop()
        assert await task == 0
    assert [d["text"] for d in sb.delivered(OWNER)] == ["echo hi", "stats: 1 user"]
