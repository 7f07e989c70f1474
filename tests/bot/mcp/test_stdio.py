"""`ilinkbot mcp` over stdio, driven by the MCP SDK's client, with the sandbox as server."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from tests.bot.mcp.conftest import ToolFailed, call, stdio_session
from tests.processes import OWNER, write_config

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
        (user,) = status["accounts"][0]["users"]
        assert user["user_id"] == OWNER and user["window_open"] is True
        assert user["window_messages_left"] == sb.quota  # the answer reopened it
        assert token not in json.dumps(status)

    # Reading never consumes: a bot run later still handles both messages.
    with Store.open(None, home=home) as store:
        acc = store.list_accounts()[0]
        assert [r.user_id for r in store.unhandled(acc.bot_id)] == [OWNER, OWNER]


async def test_bad_input_is_a_clear_tool_error(
    sb: Sandbox, env: dict[str, str], home: Path
) -> None:
    async with stdio_session(env) as session:
        with pytest.raises(ToolFailed, match="unknown qrcode 'nope'"):
            await call(session, "wechat_login_check", qrcode="nope")
        with pytest.raises(ToolFailed, match="no account"):
            await call(session, "send_to_wechat", text="hi")

        old = await call(session, "wechat_login_start")
        done = await _bind(session, sb)
        assert done["status"] == "confirmed"
        expiring = await call(session, "wechat_login_start")
        sb.expire_qr(expiring["qrcode"])
        expired = await call(session, "wechat_login_check", qrcode=expiring["qrcode"])
        assert expired["status"] == "expired" and "wechat_login_start" in expired["next"]
        with pytest.raises(ToolFailed, match="unknown qrcode"):  # it is over
            await call(session, "wechat_login_check", qrcode=expiring["qrcode"])
        # The code made before the last wechat_login_start is no longer the login.
        with pytest.raises(ToolFailed, match="unknown qrcode"):
            await call(session, "wechat_login_check", qrcode=old["qrcode"])

        with pytest.raises(ToolFailed, match="confirm=true"):
            await call(session, "wechat_disconnect", account=done["account"])
        with pytest.raises(ToolFailed, match="confirm=true"):
            await call(session, "wechat_disconnect", account=done["account"], confirm=False)
        with pytest.raises(ToolFailed, match=re.escape("no account 'ghost@im.bot'")):
            await call(session, "wechat_disconnect", account="ghost@im.bot", confirm=True)
        assert (await call(session, "wechat_status"))["bound"] is True

        sb.user_says(OWNER, "hi")
        with pytest.raises(
            ToolFailed, match=re.escape("image_path '/no/such/file.png': no such file")
        ):
            await call(session, "send_to_wechat", image_path="/no/such/file.png")
        with pytest.raises(ToolFailed, match="file_path"):
            await call(session, "send_to_wechat", text="x", file_path="/no/such/report.pdf")
        with pytest.raises(ToolFailed, match=re.escape("no account 'nobody@im.bot'")):
            await call(session, "send_to_wechat", text="hi", account="nobody@im.bot")
        with pytest.raises(ToolFailed, match="unknown recipient 'stranger'"):
            await call(session, "send_to_wechat", text="hi", to="stranger")
        with pytest.raises(ToolFailed, match="nothing to send"):
            await call(session, "send_to_wechat")
        with pytest.raises(ToolFailed, match="unknown recipient 'stranger'"):
            await call(session, "wechat_wait_reply", to="stranger", timeout_seconds=1)
        with pytest.raises(ToolFailed, match=re.escape("no account 'nobody@im.bot'")):
            await call(session, "wechat_recent_messages", account="nobody@im.bot")
        with pytest.raises(ToolFailed, match="timeout_seconds"):
            await call(session, "wechat_wait_reply", timeout_seconds=0)
        with pytest.raises(ToolFailed, match="limit"):
            await call(session, "wechat_recent_messages", limit=0)
        assert sb.delivered(OWNER) == []  # nothing went out on any of these

        quiet = await call(session, "wechat_wait_reply", timeout_seconds=1)
        assert quiet == {"status": "timeout", "account": done["account"], "messages": []}

        gone = await call(session, "wechat_disconnect", account=done["account"], confirm=True)
        assert gone["changed"] is True
        again = await call(session, "wechat_disconnect", account=done["account"], confirm=True)
        assert again["changed"] is False
        status = await call(session, "wechat_status")
        assert status["bound"] is False and status["ever_bound"] is True
        with pytest.raises(ToolFailed, match="no account is logged in"):
            await call(session, "send_to_wechat", text="hi")

        (home / "login-qr.png").unlink()
        (home / "login-qr.png").mkdir()  # the image cannot be written there
        with pytest.raises(ToolFailed, match="cannot write the QR image"):
            await call(session, "wechat_login_start")
        assert (await call(session, "wechat_status"))["ever_bound"] is True


async def test_verify_code_and_reconnect_after_expiry(sb: Sandbox, env: dict[str, str]) -> None:
    async with stdio_session(env) as session:
        first = await _bind(session, sb)
        sb.user_says(OWNER, "hi")
        assert (await call(session, "send_to_wechat", text="one"))["state"] == "delivered"

        sb.expire_session(first["account"])
        kept = await call(session, "send_to_wechat", text="two")
        assert kept["state"] == "session_expired"  # kept for the next login, not lost
        status = await call(session, "wechat_status")
        assert status["bound"] is False and status["ever_bound"] is True
        assert status["accounts"][0]["state"] == "expired"

        qr = await call(session, "wechat_login_start")
        sb.scan(qr["qrcode"])
        sb.require_verify_code("4321", qr["qrcode"])
        asked = await call(session, "wechat_login_check", qrcode=qr["qrcode"])
        assert asked["status"] == "need_verifycode" and "verify_code" in asked["next"]
        wrong = await call(session, "wechat_login_check", qrcode=qr["qrcode"], verify_code="0000")
        assert wrong["status"] == "need_verifycode"
        right = await call(session, "wechat_login_check", qrcode=qr["qrcode"], verify_code="4321")
        assert right["status"] == "scaned"
        sb.confirm(OWNER, qr["qrcode"])
        back = await call(session, "wechat_login_check", qrcode=qr["qrcode"])
        assert back["status"] == "confirmed" and back["reconnected"] is True
        assert back["owner"] == OWNER

        status = await call(session, "wechat_status")
        assert status["bound"] is True and status["account"] == back["account"]
        sb.user_says(OWNER, "back again")
        assert (await call(session, "send_to_wechat", text="three"))["state"] == "delivered"
        # "two" moved to the new account and went out first, when the owner wrote again
        assert [d["text"] for d in sb.delivered(OWNER)] == ["one", "two", "three"]


async def test_outcomes_held_then_released_unconfirmed_and_file(
    sb: Sandbox, env: dict[str, str], home: Path, tmp_path: Path
) -> None:
    write_config(home, reply_quota=2)
    sb.quota = 2
    async with stdio_session(env) as session:
        await _bind(session, sb)
        with pytest.raises(ToolFailed, match="has never written to this bot"):
            await call(session, "send_to_wechat", text="too early")

        sb.user_says(OWNER, "hi")
        first = await call(session, "send_to_wechat", text="one")
        assert first["window"][OWNER]["messages_left"] == 1
        report = tmp_path / "report.txt"
        report.write_text("all green\n")
        second = await call(session, "send_to_wechat", file_path=str(report))
        assert second["state"] == "delivered"
        assert second["window"][OWNER]["open"] is False  # quota used

        held = await call(session, "send_to_wechat", text="three")
        assert held["state"] == "held" and "next writes" in held["goes_out"]
        status = await call(session, "wechat_status")
        assert status["accounts"][0]["held_messages"] == 1
        assert [d.get("text") for d in sb.delivered(OWNER)].count("three") == 0

        # The user's answer releases the held push, and wait_reply returns it.
        waiting = asyncio.create_task(call(session, "wechat_wait_reply", timeout_seconds=20))
        await asyncio.sleep(1.5)
        sb.user_says(OWNER, "ok")
        reply = await asyncio.wait_for(waiting, 20)
        assert [m["text"] for m in reply["messages"]] == ["ok"]
        await asyncio.sleep(0.5)
        assert [d.get("text") for d in sb.delivered(OWNER)].count("three") == 1
        assert (await call(session, "wechat_status"))["accounts"][0]["held_messages"] == 0

        sb.omit_message_id = True
        maybe = await call(session, "send_to_wechat", text="four")
        assert maybe["state"] == "unconfirmed" and maybe["message_ids"] == [None]

        sb.omit_message_id = False
        sb.force_ret = -3  # a refusal: not retried
        sb.user_says(OWNER, "again")  # a fresh window: the refusal is the server's
        refused = await call(session, "send_to_wechat", text="five")
        assert refused["state"] == "failed" and "-3" in refused["reason"]
