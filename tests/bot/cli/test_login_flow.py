"""``bot.login.run_login`` in-process (the interface a web login page will drive)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from ilinkbot.bot.login import LoginEvent, LoginFailed, redirect_base, run_login
from ilinkbot.ilink.client import IlinkClient
from ilinkbot.ilink.sandbox import Sandbox

pytestmark = pytest.mark.timeout(60)


async def _until(pred: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():  # type: ignore[operator]
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.01)


def _client(sb: Sandbox) -> IlinkClient:
    return IlinkClient(sb.api_base, http=httpx.AsyncClient(transport=sb.transport()))


async def test_events_and_result_without_a_store() -> None:
    sb = Sandbox(qr_poll_seconds=0.2)
    events: list[LoginEvent] = []
    async with _client(sb) as client:
        task = asyncio.create_task(
            run_login(client, on_event=events.append, interval=0.0, local_tokens=[])
        )
        await _until(lambda: sb.qr_codes())
        sb.scan()
        await _until(lambda: any(e.kind == "scanned" for e in events))
        confirmed = sb.confirm(user_id="web@im.wechat")
        result = await asyncio.wait_for(task, 10)
    assert [e.kind for e in events] == ["qr", "scanned", "confirmed"]
    assert events[0].ticket.url.endswith(events[0].ticket.qrcode)
    assert result.status == "confirmed"
    assert result.bot_id == confirmed["bot_id"]
    assert result.owner == "web@im.wechat"
    assert result.token == confirmed["bot_token"]
    assert confirmed["bot_token"] not in repr(result)


async def test_verify_blocked_three_times_fails() -> None:
    sb = Sandbox(qr_poll_seconds=0.2)
    asked: list[bool] = []

    async def code(retry: bool) -> str:
        asked.append(retry)
        return "0000"

    async with _client(sb) as client:
        task = asyncio.create_task(
            run_login(client, read_verify_code=code, interval=0.0, local_tokens=[])
        )
        for n in (1, 2, 3):
            await _until(lambda n=n: len(sb.qr_codes()) >= n)  # type: ignore[misc]
            sb.scan()
            sb.require_verify_code("1234")
        with pytest.raises(LoginFailed) as info:
            await asyncio.wait_for(task, 20)
    assert info.value.reason == "verify_code_blocked"
    assert len(sb.qr_codes()) == 3
    assert asked[:3] == [False, True, True]


async def test_no_verify_code_reader_fails_cleanly() -> None:
    sb = Sandbox(qr_poll_seconds=0.2)
    async with _client(sb) as client:
        task = asyncio.create_task(run_login(client, interval=0.0, local_tokens=[]))
        await _until(lambda: sb.qr_codes())
        sb.scan()
        sb.require_verify_code("1234")
        with pytest.raises(LoginFailed) as info:
            await asyncio.wait_for(task, 10)
    assert info.value.reason == "no_verify_code"
    assert info.value.ticket is not None


def test_redirect_base_keeps_https_and_the_sandbox_scheme() -> None:
    assert redirect_base("https://ilinkai.weixin.qq.com", "sh.ilink.qq.com") == (
        "https://sh.ilink.qq.com"
    )
    assert redirect_base("http://127.0.0.1:8780", "127.0.0.1:9999") == "http://127.0.0.1:9999"
    assert redirect_base("http://x", "https://y/") == "https://y"
