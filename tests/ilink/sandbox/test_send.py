"""sendmessage rules (§5, §8.3), the reply window (§8.4) and the authenticated extras."""

from __future__ import annotations

from typing import Any

import pytest

from ilinkbot.ilink.sandbox import Sandbox

from .helpers import DROP, Api, b64hex, new_client_id

USER = "u1@im.wechat"


@pytest.fixture
async def bot(api: Api) -> dict[str, Any]:
    return await api.login()


def assert_dropped(r: Any, sb: Sandbox, rule: str, before: int = 0) -> None:
    assert r.status_code == 200
    assert r.json() == {}
    assert sb.delivered() == []
    v = sb.violations()
    assert len(v) == before + 1, v
    assert v[-1]["rule"] == rule, v[-1]
    assert v[-1]["endpoint"] == "sendmessage"


async def test_valid_text_send_is_delivered(api: Api, sb: Sandbox, bot: dict[str, Any]) -> None:
    m = sb.user_says(USER, "hello")
    r = await api.send_text(bot["bot_token"], USER, m["context_token"], "你好 \u2028 ok")
    answer = r.json()
    assert answer["ret"] == 0
    assert isinstance(answer["message_id"], int) and answer["message_id"] > 2**53
    (d,) = sb.delivered(USER)
    assert d["text"] == "你好 \u2028 ok"
    assert d["kind"] == "text"
    assert d["message_id"] == str(answer["message_id"])
    assert d["context_token_ok"] is True and d["context_token_latest"] is True
    assert d["bot_id"] == bot["ilink_bot_id"]
    assert sb.violations() == []


async def test_older_token_of_same_user_is_accepted(
    api: Api, sb: Sandbox, bot: dict[str, Any]
) -> None:
    old = sb.user_says(USER, "one")["context_token"]
    sb.user_says(USER, "two")
    assert (await api.send_text(bot["bot_token"], USER, old)).json()["ret"] == 0
    assert sb.delivered()[0]["context_token_latest"] is False


@pytest.mark.parametrize(
    ("override", "rule"),
    [
        ({"client_id": DROP}, "msg.client_id"),
        ({"client_id": ""}, "msg.client_id"),
        ({"message_type": 1}, "msg.message_type"),
        ({"message_state": 1}, "msg.message_state"),
        ({"from_user_id": DROP}, "msg.from_user_id"),
        ({"from_user_id": "x@im.bot"}, "msg.from_user_id"),
        ({"context_token": DROP}, "msg.context_token"),
        ({"context_token": "AARinvented"}, "msg.context_token"),
        ({"to_user_id": "stranger@im.wechat"}, "msg.to_user_id"),
        ({"item_list": []}, "msg.item_list"),
    ],
)
async def test_msg_rule_violations_are_dropped(
    api: Api, sb: Sandbox, bot: dict[str, Any], override: dict[str, Any], rule: str
) -> None:
    m = sb.user_says(USER, "hello")
    r = await api.send_text(bot["bot_token"], USER, m["context_token"], **override)
    assert_dropped(r, sb, rule)


async def test_two_items_or_mismatched_item_dropped(
    api: Api, sb: Sandbox, bot: dict[str, Any]
) -> None:
    ctx = sb.user_says(USER, "hello")["context_token"]
    text = {"type": 1, "text_item": {"text": "a"}}
    r = await api.send_text(bot["bot_token"], USER, ctx, item_list=[text, text])
    assert_dropped(r, sb, "msg.item_list")
    r = await api.send(bot["bot_token"], USER, ctx, {"type": 2, "text_item": {"text": "a"}})
    assert_dropped(r, sb, "item.mismatch", 1)
    r = await api.send(bot["bot_token"], USER, ctx, {"type": 1, "text_item": {"text": ""}})
    assert_dropped(r, sb, "text.empty", 2)
    r = await api.send_text(bot["bot_token"], USER, ctx, "x" * (16 * 1024 + 1))
    assert_dropped(r, sb, "text.too_long", 3)
    assert (await api.send_text(bot["bot_token"], USER, ctx, "x" * 16 * 1024)).json()["ret"] == 0


async def test_context_token_of_another_user_dropped(
    api: Api, sb: Sandbox, bot: dict[str, Any]
) -> None:
    sb.user_says(USER, "hello")
    other = sb.user_says("u2@im.wechat", "hi")["context_token"]
    r = await api.send_text(bot["bot_token"], USER, other)
    assert_dropped(r, sb, "msg.context_token")
    assert "another user" in sb.violations()[-1]["detail"]


async def test_missing_base_info_dropped(api: Api, sb: Sandbox, bot: dict[str, Any]) -> None:
    ctx = sb.user_says(USER, "hello")["context_token"]
    msg = api.msg(USER, ctx, {"type": 1, "text_item": {"text": "hi"}})
    r = await api.post("ilink/bot/sendmessage", {"msg": msg}, bot["bot_token"])
    assert_dropped(r, sb, "base_info.missing")
    info = {"channel_version": "2.4.9", "bot_agent": "OpenClaw"}
    r = await api.post("ilink/bot/sendmessage", {"base_info": info, "msg": msg}, bot["bot_token"])
    assert_dropped(r, sb, "base_info.not_last", 1)
    bad_agent = {"channel_version": "2.4.9", "bot_agent": "hello MyBot/1.0"}
    r = await api.post(
        "ilink/bot/sendmessage", {"msg": msg, "base_info": bad_agent}, bot["bot_token"]
    )
    assert_dropped(r, sb, "base_info.bot_agent", 2)
    no_version = {"channel_version": "", "bot_agent": "OpenClaw"}
    r = await api.post(
        "ilink/bot/sendmessage", {"msg": msg, "base_info": no_version}, bot["bot_token"]
    )
    assert_dropped(r, sb, "base_info.channel_version", 3)


async def test_pretty_printed_json_dropped(api: Api, sb: Sandbox, bot: dict[str, Any]) -> None:
    import json

    ctx = sb.user_says(USER, "hello")["context_token"]
    body = {
        "msg": api.msg(USER, ctx, {"type": 1, "text_item": {"text": "你好"}}),
        "base_info": {"channel_version": "2.4.9", "bot_agent": "OpenClaw"},
    }
    pretty = json.dumps(body, ensure_ascii=False, indent=2).encode()
    r = await api.post("ilink/bot/sendmessage", raw=pretty, token=bot["bot_token"])
    assert_dropped(r, sb, "body.not_canonical")
    escaped = json.dumps(body, separators=(",", ":")).encode()  # \\u4f60 escapes
    r = await api.post("ilink/bot/sendmessage", raw=escaped, token=bot["bot_token"])
    assert_dropped(r, sb, "body.not_canonical", 1)
    assert "non-ASCII" in sb.violations()[-1]["detail"]
    body["msg"]["run_id"] = None
    nulls = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    r = await api.post("ilink/bot/sendmessage", raw=nulls, token=bot["bot_token"])
    assert_dropped(r, sb, "body.not_canonical", 2)
    assert "null" in sb.violations()[-1]["detail"]


async def test_header_rules(api: Api, sb: Sandbox, bot: dict[str, Any]) -> None:
    ctx = sb.user_says(USER, "hello")["context_token"]
    obj = {
        "msg": api.msg(USER, ctx, {"type": 1, "text_item": {"text": "hi"}}),
        "base_info": {"channel_version": "2.4.9", "bot_agent": "OpenClaw"},
    }
    t = bot["bot_token"]
    cases: list[tuple[dict[str, str], tuple[str, ...], str]] = [
        ({"Content-Type": "text/plain"}, (), "header.content_type"),
        ({}, ("AuthorizationType",), "header.authorizationtype"),
        ({}, ("iLink-App-Id",), "header.ilink_app_id"),
        ({"iLink-App-ClientVersion": "2.4.9"}, (), "header.ilink_app_clientversion"),
        ({"X-WECHAT-UIN": "123456789"}, (), "header.x_wechat_uin"),  # not base64 of decimal
        ({"X-WECHAT-UIN": "NDI5NDk2NzI5Ng=="}, (), "header.x_wechat_uin"),  # 4294967296
        ({"Content-Length": "3"}, (), "header.content_length"),
    ]
    for n, (headers, drop, rule) in enumerate(cases):
        r = await api.post("ilink/bot/sendmessage", obj, t, headers=headers, drop=drop)
        assert_dropped(r, sb, rule, n)
    # a fresh UIN is required on every request
    r1 = await api.post("ilink/bot/sendmessage", obj, t, headers={"X-WECHAT-UIN": "MTIzNDU2Nzg5"})
    assert r1.json()["ret"] == 0
    obj["msg"]["client_id"] = new_client_id()
    r2 = await api.post("ilink/bot/sendmessage", obj, t, headers={"X-WECHAT-UIN": "MTIzNDU2Nzg5"})
    assert r2.json() == {}
    assert sb.violations()[-1]["rule"] == "header.x_wechat_uin_reused"
    assert len(sb.delivered()) == 1


async def test_quota_of_ten_per_user_message(api: Api, sb: Sandbox, bot: dict[str, Any]) -> None:
    ctx = sb.user_says(USER, "hello")["context_token"]
    for i in range(10):
        assert (await api.send_text(bot["bot_token"], USER, ctx, f"m{i}")).json()["ret"] == 0
    r = await api.send_text(bot["bot_token"], USER, ctx, "eleventh")
    assert r.json()["ret"] == -2
    assert "message_id" not in r.json()
    assert len(sb.delivered()) == 10
    assert sb.violations() == []
    assert sb.refusals()[-1]["reason"] == "quota_exhausted"
    ctx = sb.user_says(USER, "again")["context_token"]  # a new user message reopens it
    assert (await api.send_text(bot["bot_token"], USER, ctx, "back")).json()["ret"] == 0


async def test_window_closes_after_24h(api: Api, sb: Sandbox, bot: dict[str, Any]) -> None:
    ctx = sb.user_says(USER, "hello")["context_token"]
    sb.advance(23 * 3600)
    assert (await api.send_text(bot["bot_token"], USER, ctx)).json()["ret"] == 0
    sb.advance(3600)  # the bot's own message did not extend the window
    assert (await api.send_text(bot["bot_token"], USER, ctx)).json()["ret"] == -2
    assert sb.refusals()[-1]["reason"] == "window_closed"
    ctx = sb.user_says(USER, "I'm back")["context_token"]
    assert (await api.send_text(bot["bot_token"], USER, ctx)).json()["ret"] == 0
    assert len(sb.delivered()) == 2


async def test_configured_quota_and_window(api: Api, sb: Sandbox, bot: dict[str, Any]) -> None:
    sb.configure(quota=2, window_seconds=60)
    ctx = sb.user_says(USER, "hello")["context_token"]
    rets = [(await api.send_text(bot["bot_token"], USER, ctx)).json()["ret"] for _ in range(3)]
    assert rets == [0, 0, -2]
    ctx = sb.user_says(USER, "hello")["context_token"]
    sb.advance(61)
    assert (await api.send_text(bot["bot_token"], USER, ctx)).json()["ret"] == -2


async def test_repeated_client_id_delivered_once(
    api: Api, sb: Sandbox, bot: dict[str, Any]
) -> None:
    sb.configure(quota=2)
    ctx = sb.user_says(USER, "hello")["context_token"]
    cid = new_client_id()
    first = (await api.send_text(bot["bot_token"], USER, ctx, client_id=cid)).json()
    again = (await api.send_text(bot["bot_token"], USER, ctx, client_id=cid)).json()
    assert first["ret"] == again["ret"] == 0
    assert first["message_id"] == again["message_id"]
    assert len(sb.delivered()) == 1
    # the duplicate did not use up the quota of 2
    assert (await api.send_text(bot["bot_token"], USER, ctx)).json()["ret"] == 0


async def test_risk_control_and_forced_ret(api: Api, sb: Sandbox, bot: dict[str, Any]) -> None:
    ctx = sb.user_says(USER, "hello")["context_token"]
    sb.configure(omit_message_id=True)
    assert (await api.send_text(bot["bot_token"], USER, ctx)).json() == {"ret": 0}
    sb.configure(omit_message_id=False, force_ret=-2)
    assert (await api.send_text(bot["bot_token"], USER, ctx)).json()["ret"] == -2
    assert sb.delivered() == []
    sb.configure(force_ret=None)
    assert (await api.send_text(bot["bot_token"], USER, ctx)).json()["ret"] == 0
    assert [r["reason"] for r in sb.refusals()] == ["risk_control", "forced_ret"]


async def test_expired_session_answers_minus_14(api: Api, sb: Sandbox, bot: dict[str, Any]) -> None:
    ctx = sb.user_says(USER, "hello")["context_token"]
    sb.expire_session()
    stale = {"ret": -14, "errcode": -14, "errmsg": "session timeout"}
    assert (await api.send_text(bot["bot_token"], USER, ctx)).json() == stale
    r = await api.call("ilink/bot/getupdates", {"get_updates_buf": ""}, bot["bot_token"])
    assert r.json() == stale
    r = await api.call("ilink/bot/getupdates", {"get_updates_buf": ""}, "invented-token")
    assert r.json() == stale
    assert sb.delivered() == [] and sb.violations() == []
    # header/body rules are checked before auth
    r = await api.post("ilink/bot/msg/notifystart", {}, bot["bot_token"])
    assert r.json() == {}


async def test_getconfig_sendtyping_notify(api: Api, sb: Sandbox, bot: dict[str, Any]) -> None:
    t = bot["bot_token"]
    r = await api.call("ilink/bot/getconfig", {"ilink_user_id": USER}, t)
    assert r.json() == {"ret": -4, "errmsg": "GetTypingTicket rpc failed"}
    ctx = sb.user_says(USER, "hello")["context_token"]
    r = await api.call("ilink/bot/getconfig", {"ilink_user_id": USER, "context_token": ctx}, t)
    ticket = r.json()["typing_ticket"]
    assert r.json()["ret"] == 0 and ticket
    body = {"ilink_user_id": USER, "typing_ticket": ticket, "status": 1}
    assert (await api.call("ilink/bot/sendtyping", body, t)).json() == {"ret": 0}
    body = {"ilink_user_id": USER, "typing_ticket": "bogus", "status": 2}
    assert (await api.call("ilink/bot/sendtyping", body, t)).json() == {}
    assert sb.violations()[-1]["rule"] == "sendtyping.typing_ticket"
    assert [e["status"] for e in sb.typing_events()] == [1]
    assert sb.bots()[0]["online"] is None
    assert (await api.call("ilink/bot/msg/notifystart", {}, t)).json() == {"ret": 0}
    assert sb.bots()[0]["online"] is True
    assert (await api.call("ilink/bot/msg/notifystop", {}, t)).json() == {"ret": 0}
    assert sb.bots()[0]["online"] is False


async def test_unknown_route_is_404(api: Api, sb: Sandbox) -> None:
    r = await api.post("ilink/bot/nosuch", {"base_info": {}})
    assert r.status_code == 404


async def test_media_send_with_raw_key_is_dropped(
    api: Api, sb: Sandbox, bot: dict[str, Any]
) -> None:
    import base64

    ctx = sb.user_says(USER, "hello")["context_token"]
    t = bot["bot_token"]
    cdn, key, cipher = await api.upload(t, USER, b"\x89PNG fake image", media_type=1)
    param = cdn.headers["x-encrypted-param"]
    media = {
        "encrypt_query_param": param,
        "aes_key": base64.b64encode(key).decode(),
        "encrypt_type": 1,
    }
    item = {"type": 2, "image_item": {"media": media, "mid_size": len(cipher)}}
    assert_dropped(await api.send(t, USER, ctx, item), sb, "media.aes_key_raw")
    media["aes_key"] = b64hex(key)
    item["image_item"]["mid_size"] = len(cipher) - 1
    assert_dropped(await api.send(t, USER, ctx, item), sb, "image.mid_size", 1)
    item["image_item"]["mid_size"] = len(cipher)
    r = await api.send(t, USER, ctx, item)
    assert r.json()["ret"] == 0
    (d,) = sb.delivered()
    import hashlib

    assert d["kind"] == "image"
    assert d["sha256"] == hashlib.sha256(b"\x89PNG fake image").hexdigest()
    assert d["size"] == len(b"\x89PNG fake image")
