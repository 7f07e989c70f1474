"""The typing-ticket cache (issue 13): refreshed at a random moment within 24 h, backed off
from 2 s doubling to 1 h after a failed getconfig, under a controlled clock."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from ilinkbot import Bot, filters
from ilinkbot.bot.config import Config
from ilinkbot.bot.runner import Runner
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from ilinkbot.testing import no_real_waiting
from tests.conftest import OWNER


class Clock:
    """Only ``now`` matters here (no schedules); it moves when the test says so."""

    def __init__(self) -> None:
        self.t = datetime(2026, 11, 21, tzinfo=UTC)

    def now(self) -> datetime:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await asyncio.Event().wait()

    def advance(self, **delta: float) -> None:
        self.t += timedelta(**delta)


class Counting(httpx.AsyncBaseTransport):
    """The sandbox transport, counting getconfig calls."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.getconfig = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/getconfig"):
            self.getconfig += 1
        return await self.inner.handle_async_request(request)


class Typist:
    """A running bot whose handler shows "typing…" for every message, then replies."""

    def __init__(self, config: Config, sb: Sandbox, store: Store) -> None:
        self.sb, self.clock, self.transport = sb, Clock(), Counting(sb.transport())
        self.bot = Bot(config, transport=self.transport, store=store, clock=self.clock)

        @self.bot.message(filters.text)
        async def typed(msg, ctx):  # type: ignore[no-untyped-def]
            async with ctx.typing():
                await asyncio.sleep(0.05)  # lets the keep-alive send its first "typing"
            await msg.reply("ok")

    async def __aenter__(self) -> Typist:
        self.runner = Runner(self.bot, install_signals=False)
        self.task = asyncio.create_task(self.runner.serve())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.runner.request_stop()
        await self.task

    async def say(self) -> tuple[int, int]:
        """One message handled: (getconfig calls, typing events) it caused."""
        calls, typed = self.transport.getconfig, len(self.sb.typing_events())
        done = len(self.sb.delivered(OWNER)) + 1
        self.sb.user_says(OWNER, "hi")
        deadline = asyncio.get_running_loop().time() + 10
        while len(self.sb.delivered(OWNER)) < done:
            assert asyncio.get_running_loop().time() < deadline, "not handled in time"
            await asyncio.sleep(0.02)
        return self.transport.getconfig - calls, len(self.sb.typing_events()) - typed


@pytest.fixture(autouse=True)
def _fast() -> Any:
    with no_real_waiting():
        yield


async def test_ticket_refreshed_at_a_random_moment_within_24h(
    config: Config, sb: Sandbox, store: Store, account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(random, "random", lambda: 0.75)  # this ticket: due after 18 h
    async with Typist(config, sb, store) as t:
        assert await t.say() == (1, 2)  # fetched; typing shown, then cancelled
        t.clock.advance(hours=13)
        assert await t.say() == (0, 2)  # not a fixed 12 h
        t.clock.advance(hours=4, minutes=59)
        assert await t.say() == (0, 2)
        t.clock.advance(minutes=1)
        assert await t.say() == (1, 2)  # 18 h: refreshed
    monkeypatch.setattr(random, "random", lambda: 0.999)
    async with Typist(config, sb, store) as t:
        await t.say()
        t.clock.advance(hours=24)
        assert await t.say() == (1, 2)  # never kept past 24 h


async def test_failed_getconfig_backs_off_from_2s_doubling_to_1h(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    sb.set_faults("getconfig", http_5xx_rate=1.0)
    async with Typist(config, sb, store) as t:
        assert await t.say() == (1, 0)  # failed: no ticket, no typing
        for delay in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600):
            t.clock.advance(seconds=delay - 1)
            assert await t.say() == (0, 0), f"retried before {delay} s"
            t.clock.advance(seconds=1)
            assert await t.say() == (1, 0), f"not retried after {delay} s"
        sb.clear_faults()
        t.clock.advance(hours=1)
        assert await t.say() == (1, 2)  # recovered: typing shown


async def test_a_failed_refresh_keeps_the_ticket_it_had(
    config: Config, sb: Sandbox, store: Store, account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(random, "random", lambda: 0.5)
    async with Typist(config, sb, store) as t:
        assert await t.say() == (1, 2)
        t.clock.advance(hours=12)
        sb.set_faults("getconfig", http_5xx_rate=1.0)
        assert await t.say() == (1, 2)  # refresh failed; the old ticket still shows typing
        assert await t.say() == (0, 2)  # and the retry waits
        sb.clear_faults()
        t.clock.advance(seconds=2)
        assert await t.say() == (1, 2)
