"""`ilinkbot mcp` over stdio, driven by the MCP SDK's client, with the sandbox as server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store

from tests.mcp.conftest import call, stdio_session
from tests.processes import OWNER

pytestmark = pytest.mark.slow


def _bot_tokens(sb: Sandbox) -> list[str]:
    return [b["bot_token"] for b in sb.bots() if b.get("bot_token")]


async def _bind(session, sb: Sandbox, owner: str = OWNER) -> dict:
    qr = await call(session, "wechat_login_start")
    sb.scan(qr["qrcode"])
    sb.confirm(owner, qr["qrcode"])
    return await call(session, "wechat_login_check", qrcode=qr["qrcode"])


async def test_bind_push_answer_wait_reply(sb: Sandbox, env: dict[str, str], home: Path) -> None:
    async with stdio_session(env) as session:
        tools = {t.name for t in (await session.list_tools()).tools}
        assert {
            "wechat_status",
            "wechat_login_start",
            "wechat_login_check",
            "wechat_disconnect",
            "send_to_wechat",
            "wechat_wait_reply",
            "wechat_recent_messages",
        } <= tools

        before = await call(session, "wechat_status")
        assert before["bound"] is False and before["ever_bound"] is False

        qr = await call(session, "wechat_login_start")
        assert Path(qr["png_path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert qr["url"] and qr["expires_at"]
        # Nothing polls: the server has not been asked about the code yet, and one
        # check before the scan says so.
        first = await call(session, "wechat_login_check", qrcode=qr["qrcode"])
        assert first["status"] == "wait"
        sb.scan(qr["qrcode"])
        sb.confirm(OWNER, qr["qrcode"])
        done = await call(session, "wechat_login_check", qrcode=qr["qrcode"])
        assert done["status"] == "confirmed"
        assert done["owner"] == OWNER and done["reconnected"] is False
        token = _bot_tokens(sb)[0]
        assert token not in json.dumps(done)

        sb.user_says(OWNER, "hello bot")
        sent = await call(session, "send_to_wechat", text="Deploy to prod?", title="Question")
        assert sent["state"] == "delivered" and all(sent["message_ids"])
        window = sent["window"][OWNER]
        assert window["open"] is True and window["messages_left"] == sb.quota - 1
        assert [d["text"] for d in sb.delivered(OWNER)][-1].endswith("Deploy to prod?")

        waiting = asyncio.create_task(call(session, "wechat_wait_reply", timeout_seconds=20))
        await asyncio.sleep(1.0)
        assert not waiting.done()
        sb.user_says(OWNER, "yes, go")
        reply = await asyncio.wait_for(waiting, 20)
        assert reply["status"] == "replied"
        assert [m["text"] for m in reply["messages"]] == ["yes, go"]

        recent = await call(session, "wechat_recent_messages", limit=5)
        assert [m["text"] for m in recent["messages"]] == ["yes, go", "hello bot"]

        status = await call(session, "wechat_status")
        assert status["bound"] is True and status["owner"] == OWNER
        assert token not in json.dumps(status)

    # Reading never consumes: a bot run later still handles both messages.
    with Store.open(None, home=home) as store:
        acc = store.list_accounts()[0]
        assert [r.user_id for r in store.unhandled(acc.bot_id)] == [OWNER, OWNER]
