"""Fan-out: one push to many users keeps ``send_concurrency`` in flight, each user's messages
in order, paced by ``fanout_per_second`` per account; all or nothing when one never wrote."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ilinkbot import Bot
from ilinkbot.bot.config import Config
from ilinkbot.bot.errors import NoContextError
from ilinkbot.bot.pacing import Pacer
from ilinkbot.ilink.client import IlinkClient
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from ilinkbot.testing import no_real_waiting

USERS = [f"user{i:02d}@im.wechat" for i in range(12)]
TEXT = "first part. " * 15 + "second part. " * 15


@pytest.fixture(autouse=True)
def _fast() -> Any:
    with no_real_waiting():
        yield


def fanout_bot(config: Config, sb: Sandbox, store: Store, **cfg: Any) -> Bot:
    for user in USERS:
        sb.user_says(user, "hi")
    return Bot(config.with_overrides(**cfg), transport=sb.transport(), store=store)


async def test_fan_out_keeps_send_concurrency_in_flight_in_order_per_user(
    config: Config, sb: Sandbox, store: Store, account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_flight = peak = 0
    real = IlinkClient.send_message

    async def counting(self: IlinkClient, msg: Any) -> Any:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.05)  # a round trip to the server
            return await real(self, msg)
        finally:
            in_flight -= 1

    monkeypatch.setattr(IlinkClient, "send_message", counting)
    bot = fanout_bot(config, sb, store, send_concurrency=4, fanout_per_second=1000, chunk_size=200)
    try:
        result = await bot.broadcast(TEXT, to=USERS)  # two chunks per user
    finally:
        await bot.aclose()
    assert result.state == "delivered"
    assert peak == 4, "send_concurrency users at a time"
    for user in USERS:
        chunks = [d["text"] for d in sb.delivered(user)]
        assert len(chunks) == 2 and "".join(chunks) == TEXT, "each user's chunks in order"


async def test_fan_out_is_all_or_nothing_when_a_user_never_wrote(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    bot = fanout_bot(config, sb, store)
    try:
        with pytest.raises(NoContextError, match="stranger"):
            await bot.broadcast("hello", to=[*USERS[:3], "stranger@im.wechat"])
    finally:
        await bot.aclose()
    assert sb.delivered() == [], "nobody got it"


async def test_fan_out_respects_the_accounts_pace(
    config: Config, sb: Sandbox, store: Store, account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    now = [0.0]

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    from ilinkbot.bot import service

    def paced(self: Any, bot_id: str) -> Pacer:
        return Pacer(self.config.fanout_per_second, clock=lambda: now[0], sleep=fake_sleep)

    monkeypatch.setattr(service.Service, "pacer", paced)
    bot = fanout_bot(config, sb, store, fanout_per_second=4)
    try:
        await bot.broadcast("hello", to=USERS)
    finally:
        await bot.aclose()
    assert len(sb.delivered()) == len(USERS)
    # 12 messages at 4 a second, with a burst of 4 to start: 8 waited for, 2 s in all
    assert len(slept) == 8
    assert sum(slept) == pytest.approx(2.0)


async def test_pacer_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    pacer = Pacer(5, clock=lambda: now[0], sleep=sleep)
    await pacer.take(5)
    assert waits == []
    await pacer.take(2)
    assert waits == pytest.approx([0.2, 0.2])
    now[0] += 10  # idle: the bucket refills to one second's burst, not more
    await pacer.take(6)
    assert waits[2:] == pytest.approx([0.2])
