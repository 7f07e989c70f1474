"""QR login statuses (PROTOCOL.md §2), in-process and over the two real sockets."""

from __future__ import annotations

import asyncio
import re

import pytest

from ilinkbot.ilink.sandbox import Sandbox, SandboxError, SandboxServer

from .helpers import Api


async def test_wait_scan_confirm(api: Api, sb: Sandbox) -> None:
    qr = await api.get_qrcode()
    assert qr["qrcode_img_content"].startswith(sb.api_base + "/_sandbox/qr/")
    assert (await api.qr_status(qr["qrcode"]))["status"] == "wait"
    sb.scan()
    assert (await api.qr_status(qr["qrcode"]))["status"] == "scaned"
    creds = sb.confirm("alice@im.wechat")
    st = await api.qr_status(qr["qrcode"])
    assert st["status"] == "confirmed"
    assert re.fullmatch(r"[0-9a-f]{12}@im\.bot", st["ilink_bot_id"])
    assert st["bot_token"] == creds["bot_token"]
    assert st["ilink_bot_id"] == creds["bot_id"]
    assert st["baseurl"] == sb.api_base
    assert st["ilink_user_id"] == "alice@im.wechat"
    assert sb.violations() == []


async def test_status_long_poll_wakes_on_change(sb: Sandbox, api: Api) -> None:
    sb.configure(qr_poll_seconds=5)
    qr = await api.get_qrcode()
    assert (await api.qr_status(qr["qrcode"]))["status"] == "wait"  # unchanged: answered at once
    poll = asyncio.create_task(api.qr_status(qr["qrcode"]))
    await asyncio.sleep(0.1)
    assert not poll.done()  # long-polling: nothing changed
    sb.scan()
    st = await asyncio.wait_for(poll, 2)
    assert st["status"] == "scaned"


async def test_expire_and_ttl(api: Api, sb: Sandbox) -> None:
    qr = await api.get_qrcode()
    sb.expire_qr()
    assert (await api.qr_status(qr["qrcode"]))["status"] == "expired"
    qr2 = await api.get_qrcode()
    sb.advance(299)
    assert (await api.qr_status(qr2["qrcode"]))["status"] == "wait"
    sb.advance(2)
    assert (await api.qr_status(qr2["qrcode"]))["status"] == "expired"
    with pytest.raises(SandboxError):
        sb.confirm()
    assert (await api.qr_status("no-such-code"))["status"] == "expired"


async def test_verify_code_right(api: Api, sb: Sandbox) -> None:
    qr = await api.get_qrcode()
    sb.scan()
    sb.require_verify_code("42")
    assert (await api.qr_status(qr["qrcode"]))["status"] == "need_verifycode"
    with pytest.raises(SandboxError):
        sb.confirm()  # the user has not typed the code yet
    assert (await api.qr_status(qr["qrcode"], "41"))["status"] == "need_verifycode"
    assert (await api.qr_status(qr["qrcode"], "42"))["status"] == "scaned"
    sb.confirm()
    assert (await api.qr_status(qr["qrcode"]))["status"] == "confirmed"


async def test_verify_code_blocked_after_three_wrong(api: Api, sb: Sandbox) -> None:
    qr = await api.get_qrcode()
    sb.require_verify_code("1234")
    for _ in range(2):
        assert (await api.qr_status(qr["qrcode"], "0000"))["status"] == "need_verifycode"
    assert (await api.qr_status(qr["qrcode"], "0000"))["status"] == "verify_code_blocked"
    assert (await api.qr_status(qr["qrcode"], "1234"))["status"] == "verify_code_blocked"


async def test_block_verify_admin(api: Api, sb: Sandbox) -> None:
    qr = await api.get_qrcode()
    sb.block_verify()
    assert (await api.qr_status(qr["qrcode"]))["status"] == "verify_code_blocked"


async def test_redirect_in_process(api: Api, sb: Sandbox) -> None:
    qr = await api.get_qrcode()
    sb.redirect()
    st = await api.qr_status(qr["qrcode"])
    assert st == {"ret": 0, "status": "scaned_but_redirect", "redirect_host": "idc2.ilink.sandbox"}
    other = "https://" + st["redirect_host"]
    assert (await api.qr_status(qr["qrcode"], base=other))["status"] == "scaned"
    sb.confirm()
    assert (await api.qr_status(qr["qrcode"]))["status"] == "scaned_but_redirect"
    real = await api.qr_status(qr["qrcode"], base=other)
    assert real["status"] == "confirmed" and real["bot_token"]


async def test_redirect_over_real_http(sb: Sandbox, server: SandboxServer, http_api: Api) -> None:
    qr = await http_api.get_qrcode()
    assert server.redirect_host != f"127.0.0.1:{server.port}"
    sb.redirect()
    st = await http_api.qr_status(qr["qrcode"])
    assert st["status"] == "scaned_but_redirect"
    assert st["redirect_host"] == server.redirect_host
    other = "http://" + st["redirect_host"]
    assert (await http_api.qr_status(qr["qrcode"], base=other))["status"] == "scaned"
    sb.confirm("bob@im.wechat")
    assert (await http_api.qr_status(qr["qrcode"]))["status"] == "scaned_but_redirect"
    real = await http_api.qr_status(qr["qrcode"], base=other)
    assert real["status"] == "confirmed"
    assert real["baseurl"] == server.base_url


async def test_binded_redirect_via_local_token_list(api: Api, sb: Sandbox) -> None:
    first = await api.login("carol@im.wechat")
    qr = await api.get_qrcode([first["bot_token"]])
    result = sb.confirm("carol@im.wechat")
    assert result["status"] == "binded_redirect"
    st = await api.qr_status(qr["qrcode"])
    assert st["status"] == "binded_redirect"
    assert "bot_token" not in st
    assert len(sb.bots()) == 1
    # the same token presented while another user scans: a new bot is minted
    qr = await api.get_qrcode([first["bot_token"]])
    assert sb.confirm("dave@im.wechat")["status"] == "confirmed"
    assert (await api.qr_status(qr["qrcode"]))["status"] == "confirmed"
    assert len(sb.bots()) == 2


async def test_qr_endpoint_rules(api: Api, sb: Sandbox) -> None:
    ok = {"local_token_list": []}
    qr_path = "ilink/bot/get_bot_qrcode?bot_type=3"
    cases: list[tuple[str, dict[str, object], tuple[str, ...], str]] = [
        ("ilink/bot/get_bot_qrcode", ok, (), "query.bot_type"),
        (qr_path, {**ok, "base_info": {"channel_version": "2.4.9"}}, (), "base_info.forbidden"),
        (qr_path, {}, (), "qrcode.local_token_list"),
        (qr_path, {"local_token_list": ["t"] * 11}, (), "qrcode.local_token_list"),
        (qr_path, {"local_token_list": [""]}, (), "qrcode.local_token_list"),
        (qr_path, ok, ("X-WECHAT-UIN",), "header.x_wechat_uin"),
        (qr_path, ok, ("AuthorizationType",), "header.authorizationtype"),
        (qr_path, ok, ("iLink-App-ClientVersion",), "header.ilink_app_clientversion"),
    ]
    for path, obj, drop, rule in cases:
        r = await api.post(path, obj, drop=drop)
        assert r.status_code == 200 and r.json() == {}, rule
        assert sb.violations()[-1]["rule"] == rule
    assert sb.qr_codes() == []
    # the status GET without the app headers
    r = await api.client.get(sb.api_base + "/ilink/bot/get_qrcode_status?qrcode=x")
    assert r.json() == {}
    assert sb.violations()[-1]["rule"] == "header.ilink_app_id"
    # 1.0.3-style GET of get_bot_qrcode
    r = await api.client.get(
        sb.api_base + "/ilink/bot/get_bot_qrcode?bot_type=3",
        headers={"iLink-App-Id": "bot", "iLink-App-ClientVersion": "1"},
    )
    assert r.json() == {}
    assert sb.violations()[-1]["rule"] == "http.method"
