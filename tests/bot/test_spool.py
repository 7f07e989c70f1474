"""$ILINKBOT_HOME/spool: media kept for unsent messages, swept once no message needs it."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from ilinkbot import Bot
from ilinkbot.bot import spool
from ilinkbot.bot.config import Config
from ilinkbot.bot.runner import Runner
from ilinkbot.bot.serve import Gateway, create_app
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from tests.conftest import OWNER

HOURS_AGO = time.time() - 2 * 3600


def _age(path: Path) -> None:
    os.utime(path, (HOURS_AGO, HOURS_AGO))


def _media(path: Path) -> dict[str, Any]:
    return {"media": {"path": str(path), "kind": "file", "file_name": path.name, "upload": None}}


async def _until(pred: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_sweep_keeps_what_unsent_messages_need(
    home: Path, store: Store, account: Any
) -> None:
    bot_id = account.bot_id
    held = spool.keep(home, b"for a held message", "held.pdf")
    sent = spool.keep(home, b"already sent", "sent.pdf")
    orphan = spool.keep(home, b"no message names me", "orphan.pdf")
    fresh = spool.keep(home, b"a push is about to enqueue me", "fresh.pdf")
    assert held.stat().st_mode & 0o777 == 0o600
    assert spool.keep(home, b"already sent", "sent.pdf") == sent  # stored once
    for p in (held, sent, orphan):
        _age(p)
    store.enqueue(bot_id, OWNER, [_media(held)], state="held")
    (row,) = store.enqueue(bot_id, OWNER, [_media(sent)])
    store.mark_sent(store.claim(bot_id, ids=[row.id])[0].id, "42")

    removed = spool.sweep(store, home)

    assert sorted(removed) == sorted([sent, orphan])
    assert held.exists() and fresh.exists()
    assert not sent.exists() and not orphan.exists()
    # The held row still goes out later with its file; a second sweep changes nothing.
    assert spool.sweep(store, home) == []


async def test_serve_sweeps_when_it_starts(
    config: Config, store: Store, sb: Sandbox, account: Any
) -> None:
    orphan = spool.keep(config.home, b"left over from last week", "old.png")
    _age(orphan)
    gateway = Gateway(
        config, token="ilk_test-token-0123456789abcdef", store=store, transport=sb.transport()
    )
    app = create_app(gateway)
    async with app.router.lifespan_context(app):
        await _until(lambda: not orphan.exists())


async def test_run_sweeps_when_it_starts(
    config: Config, store: Store, sb: Sandbox, account: Any
) -> None:
    orphan = spool.keep(config.home, b"left over from last week", "old.png")
    _age(orphan)
    bot = Bot(config, transport=sb.transport(), store=store)
    runner = Runner(bot, install_signals=False)
    task = asyncio.create_task(runner.serve())
    try:
        await _until(lambda: not orphan.exists())
    finally:
        runner.request_stop()
        assert await asyncio.wait_for(task, 10) == 0
