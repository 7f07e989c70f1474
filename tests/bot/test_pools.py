"""Sends never wait behind long-polls (issue 15): the pools are separate."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ilinkbot.bot.config import Config
from ilinkbot.bot.outbox import Outbox
from ilinkbot.bot.push import PushRequest, catch_up, push
from ilinkbot.bot.service import Service
from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from ilinkbot.store import Store
from ilinkbot.testing import sandbox_login

ACCOUNTS = 60
HOLD = 4.0  # seconds the sandbox holds a long-poll with nothing to deliver


@pytest.mark.timeout(120)
async def test_a_send_is_prompt_while_60_accounts_long_poll(tmp_path: Path) -> None:
    sb = Sandbox(quota=1_000_000, longpoll_seconds=HOLD, qr_poll_seconds=0.2)
    with SandboxServer(sb) as srv:
        home = tmp_path / "home"
        store = Store.open(None, home=home)
        accounts = [
            await sandbox_login(sb, store, owner=f"owner{i}@im.wechat", base_url=srv.base_url)
            for i in range(ACCOUNTS)
        ]
        sender = accounts[0]
        sb.user_says("alice@im.wechat", "hi", bot_id=sender.bot_id)
        config = Config(home=home, base_url=srv.base_url, cdn_base_url=srv.cdn_base_url)
        svc = Service(config, store=store)
        assert await catch_up(Outbox(svc), sender, seconds=1) == 1

        async def poll(account: object) -> None:
            client = svc.client(account)
            cursor = store.get_cursor(account.bot_id)  # type: ignore[attr-defined]
            while True:
                batch = await client.get_updates(cursor)
                cursor = batch.cursor or cursor

        polls = [asyncio.create_task(poll(a)) for a in accounts]
        try:
            await asyncio.sleep(1.0)  # every account is now inside a held long-poll
            started = time.monotonic()
            result = await push(svc, PushRequest("ping"), to="alice@im.wechat", catch_up_seconds=0)
            elapsed = time.monotonic() - started
        finally:
            for task in polls:
                task.cancel()
            await asyncio.gather(*polls, return_exceptions=True)
            await svc.aclose()
            store.close()
    assert result.ok, result.to_dict()
    assert elapsed < 1.0, f"the send waited {elapsed:.2f} s behind long-polls"
    assert [d.get("text") for d in sb.delivered("alice@im.wechat")] == ["ping"]


async def test_each_kind_of_request_goes_to_its_own_pool() -> None:
    import httpx

    from ilinkbot.ilink import IlinkClient
    from ilinkbot.ilink.pools import PoolRouter

    seen: dict[str, list[str]] = {"longpoll": [], "api": [], "transfer": []}

    def pool(name: str) -> httpx.MockTransport:
        def answer(request: httpx.Request) -> httpx.Response:
            seen[name].append(request.url.path)
            return httpx.Response(200, json={"ret": 0, "message_id": 1, "status": "wait"})

        return httpx.MockTransport(answer)

    router = PoolRouter(longpoll=pool("longpoll"), api=pool("api"), transfer=pool("transfer"))
    async with httpx.AsyncClient(transport=router) as http:
        client = IlinkClient("http://ilink.test", "t", http=http)
        await client.get_updates("")
        await client.get_qrcode_status("q")
        await client.send_text("u@im.wechat", "hi", context_token="c")
        await client.notify_start()
        await http.get("http://cdn.test/c2c/download?encrypted_query_param=x")
    assert seen == {
        "longpoll": ["/ilink/bot/getupdates", "/ilink/bot/get_qrcode_status"],
        "api": ["/ilink/bot/sendmessage", "/ilink/bot/msg/notifystart"],
        "transfer": ["/c2c/download"],
    }
