"""A handler's ``msg.download()`` with the CDN answering on another Tencent host (issue 13)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from ilinkbot import Bot
from ilinkbot.bot.config import Config
from ilinkbot.bot.runner import Runner
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from ilinkbot.testing import capture_logs, no_real_waiting
from tests.conftest import OWNER

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(2000)
TENCENT_CDN = "https://novac2c.cdn.weixin.qq.com/c2c"


@pytest.fixture
def sb() -> Sandbox:
    """The sandbox hands out ``full_url``s on an edge host, not on the configured CDN base."""
    return Sandbox(
        longpoll_seconds=0.3,
        qr_poll_seconds=0.3,
        cdn_base="https://szc2c.cdn.weixin.qq.com/c2c",
    )


async def download_once(bot: Bot, sb: Sandbox) -> Any:
    got: list[Any] = []

    @bot.message()
    async def grab(msg, ctx):  # type: ignore[no-untyped-def]
        got.append(await msg.download())

    runner = Runner(bot, install_signals=False)
    with no_real_waiting():
        task = asyncio.create_task(runner.serve())
        sb.user_says(OWNER, image=PNG)
        deadline = asyncio.get_running_loop().time() + 10
        while not got and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        runner.request_stop()
        await task
    assert len(got) == 1
    return got[0]


async def test_media_on_another_tencent_host_is_downloaded(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    assert sb.cdn_base.startswith("https://szc2c.")
    bot = Bot(
        config.with_overrides(cdn_base_url=TENCENT_CDN), transport=sb.transport(), store=store
    )
    media = await download_once(bot, sb)
    assert media is not None, "media on szc2c.cdn.weixin.qq.com was refused"
    assert media.data == PNG and media.mime == "image/png"


async def test_media_outside_the_configured_domains_is_refused(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    config = config.with_overrides(cdn_base_url=TENCENT_CDN, cdn_download_domains=("example.org",))
    bot = Bot(config, transport=sb.transport(), store=store)
    with capture_logs() as logs:
        assert await download_once(bot, sb) is None
    (failed,) = [e for e in logs if e["event"] == "download_failed"]
    assert "szc2c.cdn.weixin.qq.com" in failed["error"]
