"""The protocol client against the strict sandbox, in-process and over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from ilinkbot.ilink import IlinkClient, ReplyWindowClosed, SessionExpired
from ilinkbot.ilink.sandbox import Sandbox, SandboxServer

OWNER = "owner@im.wechat"


@pytest.fixture(params=["in-process", "http"])
async def env(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Sandbox, str, httpx.AsyncClient]]:
    sb = Sandbox(longpoll_seconds=0.3, qr_poll_seconds=0.3)
    if request.param == "in-process":
        http = httpx.AsyncClient(transport=sb.transport())
        yield sb, sb.api_base, http
        await http.aclose()
    else:
        with SandboxServer(sb) as srv:
            http = httpx.AsyncClient()
            yield sb, srv.base_url, http
            await http.aclose()


async def login(sb: Sandbox, base: str, http: httpx.AsyncClient) -> IlinkClient:
    anon = IlinkClient(base, None, http=http)
    qr = await anon.get_bot_qrcode([])
    assert (await anon.get_qrcode_status(qr.qrcode)).status == "wait"
    sb.scan()
    assert (await anon.get_qrcode_status(qr.qrcode)).status == "scaned"
    sb.confirm(OWNER)
    st = await anon.get_qrcode_status(qr.qrcode)
    assert st.status == "confirmed" and st.ilink_user_id == OWNER and st.bot_token
    assert st.ilink_bot_id and st.ilink_bot_id.endswith("@im.bot")
    assert st.baseurl == base
    return IlinkClient(st.baseurl, st.bot_token, http=http)


async def test_text_round_trip_listed_by_sandbox_delivered(env: Any) -> None:
    sb, base, http = env
    client = await login(sb, base, http)
    sb.user_says(OWNER, "hi bot")
    batch = await client.get_updates("")
    (msg,) = batch.messages
    assert msg.from_user_id == OWNER and msg.items[0].text_item.text == "hi bot"
    ack = await client.send_text(OWNER, "你好, human", context_token=msg.context_token)
    assert ack.confirmed
    # the admin HTTP surface lists it, in order, with the same ids
    if base.startswith("http://127.0.0.1"):
        delivered = (await http.get(f"{base}/_sandbox/delivered")).json()
        delivered = (
            delivered.get("delivered", delivered) if isinstance(delivered, dict) else delivered
        )
    else:
        delivered = sb.delivered()
    (got,) = delivered
    assert got["text"] == "你好, human" and got["user_id"] == OWNER
    assert got["message_id"] == ack.message_id and got["client_id"] == ack.client_id
    assert sb.violations() == []


async def test_cursor_handling(env: Any) -> None:
    sb, base, http = env
    client = await login(sb, base, http)
    sb.user_says(OWNER, "one")
    first = await client.get_updates("")
    assert [m.items[0].text_item.text for m in first.messages] == ["one"]
    # re-polling with the old cursor replays (nothing was acknowledged yet)
    again = await client.get_updates("")
    assert [m.message_id for m in again.messages] == [m.message_id for m in first.messages]
    sb.user_says(OWNER, "two")
    nxt = await client.get_updates(first.cursor or "")
    assert [m.items[0].text_item.text for m in nxt.messages] == ["two"]
    # once "two"'s cursor is acknowledged, an older cursor does not bring "one" back
    await client.get_updates(nxt.cursor or "")
    stale = await client.get_updates("")
    assert stale.messages == []
    assert client.getupdates_timeout == 35.0  # longpolling_timeout_ms honoured


async def test_session_expired_is_minus_14_everywhere(env: Any) -> None:
    sb, base, http = env
    client = await login(sb, base, http)
    sb.user_says(OWNER, "hi")
    batch = await client.get_updates("")
    sb.expire_session()
    with pytest.raises(SessionExpired):
        await client.get_updates(batch.cursor or "")
    with pytest.raises(SessionExpired):
        await client.send_text(OWNER, "x", context_token=batch.messages[0].context_token)


async def test_reply_window_answers_ret_minus_2(env: Any) -> None:
    sb, base, http = env
    client = await login(sb, base, http)
    sb.user_says(OWNER, "hi")
    (msg,) = (await client.get_updates("")).messages
    for i in range(10):
        await client.send_text(OWNER, f"m{i}", context_token=msg.context_token)
    with pytest.raises(ReplyWindowClosed) as info:
        await client.send_text(OWNER, "m10", context_token=msg.context_token)
    assert info.value.ret == -2
    assert len(sb.delivered()) == 10


@pytest.mark.parametrize("path", ["expire", "verify", "redirect", "binded", "blocked"])
async def test_login_statuses(env: Any, path: str) -> None:
    sb, base, http = env
    anon = IlinkClient(base, None, http=http)
    if path == "binded":
        client = await login(sb, base, http)
        tokens = [client.token or ""]
    else:
        tokens = []
    qr = await anon.get_bot_qrcode(tokens)
    if path == "expire":
        sb.expire_qr()
        assert (await anon.get_qrcode_status(qr.qrcode)).status == "expired"
    elif path == "verify":
        sb.require_verify_code("4711")
        sb.scan()
        assert (await anon.get_qrcode_status(qr.qrcode)).status == "need_verifycode"
        wrong = await anon.get_qrcode_status(qr.qrcode, verify_code="1234")
        assert wrong.status == "need_verifycode"
        right = await anon.get_qrcode_status(qr.qrcode, verify_code="4711")
        assert right.status in ("scaned", "wait")
        sb.confirm(OWNER)
        assert (await anon.get_qrcode_status(qr.qrcode)).status == "confirmed"
    elif path == "blocked":
        sb.require_verify_code("4711")
        sb.scan()
        for code in ("1", "2", "3"):
            st = await anon.get_qrcode_status(qr.qrcode, verify_code=code)
        assert st.status == "verify_code_blocked"
    elif path == "redirect":
        sb.scan()
        sb.redirect()
        st = await anon.get_qrcode_status(qr.qrcode)
        assert st.status == "scaned_but_redirect" and st.redirect_host
        sb.confirm(OWNER)
        # the original host keeps answering the redirect; the new host has the truth
        assert (await anon.get_qrcode_status(qr.qrcode)).status == "scaned_but_redirect"
        scheme = base.split("://")[0]
        moved = await anon.get_qrcode_status(qr.qrcode, base_url=f"{scheme}://{st.redirect_host}")
        assert moved.status == "confirmed"
    elif path == "binded":
        sb.scan()
        sb.confirm(OWNER)
        st = await anon.get_qrcode_status(qr.qrcode)
        assert st.status == "binded_redirect" and st.bot_token is None


async def test_qr_status_long_poll_returns_on_change(env: Any) -> None:
    sb, base, http = env
    sb.qr_poll_seconds = 5.0
    anon = IlinkClient(base, None, http=http)
    qr = await anon.get_bot_qrcode([])
    assert (await anon.get_qrcode_status(qr.qrcode)).status == "wait"
    loop = asyncio.get_running_loop()
    started = loop.time()
    poll = asyncio.create_task(anon.get_qrcode_status(qr.qrcode))
    await asyncio.sleep(0.3)
    assert not poll.done()  # held by the server, not answered at once
    sb.scan()
    st = await asyncio.wait_for(poll, 3)
    assert st.status == "scaned" and loop.time() - started < 3
