"""The admin surface refuses what it does not understand; user messages never guess a bot."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ilinkbot.ilink.sandbox import Sandbox, SandboxError, SandboxServer

from .helpers import Api

USER = "u1@im.wechat"


async def test_user_message_skips_a_logged_out_newest_bot(api: Api, sb: Sandbox) -> None:
    old = await api.login("old@im.wechat")
    new = await api.login("new@im.wechat")
    sb.expire_session(new["ilink_bot_id"])
    msg = sb.user_says("old@im.wechat", "hi")
    assert msg["to_user_id"] == old["ilink_bot_id"]
    with pytest.raises(SandboxError, match="logged out"):
        sb.user_says(USER, "hi", bot_id=new["ilink_bot_id"])
    assert [b["queued"] for b in sb.state()["bots"]] == [1, 0]


async def test_user_message_goes_to_the_bot_the_user_is_bound_to(api: Api, sb: Sandbox) -> None:
    first = await api.login("a@im.wechat")
    second = await api.login("b@im.wechat")
    assert sb.user_says("a@im.wechat", "mine")["to_user_id"] == first["ilink_bot_id"]
    sb.user_says(USER, "hello", bot_id=first["ilink_bot_id"])
    assert sb.user_says(USER, "again")["to_user_id"] == first["ilink_bot_id"]
    assert sb.user_says("b@im.wechat", "mine")["to_user_id"] == second["ilink_bot_id"]


async def test_user_message_refuses_to_guess_between_live_bots(api: Api, sb: Sandbox) -> None:
    with pytest.raises(SandboxError, match="no bot is logged in"):
        sb.user_says(USER, "anyone?")
    await api.login("a@im.wechat")
    await api.login("b@im.wechat")
    with pytest.raises(SandboxError, match="pass bot_id"):
        sb.user_says(USER, "which one?")
    assert [b["queued"] for b in sb.state()["bots"]] == [0, 0]


async def test_admin_user_message_to_logged_out_bot_is_a_conflict(
    sb: Sandbox, server: SandboxServer, http_api: Api
) -> None:
    creds = await http_api.login()
    sb.expire_session(creds["ilink_bot_id"])
    r = await http_api.client.post(
        server.admin_url + f"/users/{USER}/messages", json={"text": "hi"}
    )
    assert r.status_code == 409 and "no bot is logged in" in r.json()["error"]
    assert sb.state()["bots"][0]["queued"] == 0


BAD_BODIES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/faults", {"endpoint": "getupdates", "queu": ["500"]}),
    ("POST", "/faults", {"endpoint": "getupdates", "queue": ["500:3"]}),
    ("POST", "/faults", {"endpoint": "getupdates", "queue": ["delay:-1"]}),
    ("POST", "/faults", {"endpoint": "getupdates", "queue": "500"}),
    ("POST", "/faults", {"endpoint": "getupdates", "http_5xx_rate": "1"}),
    ("POST", "/faults", {"endpoint": "getupdates", "http_5xx_rate": 2}),
    ("POST", "/faults", {"endpoint": "getupdates", "delay_seconds": True}),
    ("POST", "/faults", {"endpoint": 5, "queue": ["500"]}),
    ("POST", "/faults", {"endpoint": "getupdate", "queue": ["500"]}),
    ("POST", "/faults", {"http_5xx_rate": 1, "queue": ["boom"]}),
    ("POST", "/faults", {}),
    ("POST", "/config", {"quota": "5"}),
    ("POST", "/config", {"quota": True}),
    ("POST", "/config", {"omit_message_id": "no"}),
    ("POST", "/config", {"window_seconds": -1}),
    ("POST", "/config", {"qouta": 1}),
    ("POST", "/clock/advance", {"seconds": True}),
    ("POST", "/clock/advance", {"seconds": -5}),
    ("POST", "/clock/advance", {"second": 5}),
    ("POST", "/session/expire", {"bot": "x"}),
    ("POST", "/session/expire", {"bot_id": 1}),
    ("POST", "/login/scan", {"qr": "x"}),
    ("POST", "/login/confirm", {"user_id": 7}),
    ("POST", "/login/verify-code", {"code": "seven"}),
    ("POST", "/reset", {"everything": True}),
    ("POST", f"/users/{USER}/messages", {"txt": "hi"}),
    ("POST", f"/users/{USER}/messages", {"text": 5}),
    ("POST", f"/users/{USER}/messages", {"text": "hi", "bot_id": 3}),
    ("POST", f"/users/{USER}/messages", {"text": "hi", "file_name": "a.txt"}),
    ("POST", f"/users/{USER}/messages", {"image_b64": "aGk=", "image_key_form": "raw"}),
    ("POST", f"/users/{USER}/messages", {"voice_text": ["hi"]}),
    ("DELETE", "/faults", {"endpoint": "getupdates"}),
]


@pytest.mark.parametrize(("method", "route", "body"), BAD_BODIES)
async def test_malformed_admin_bodies_are_refused_and_change_nothing(
    sb: Sandbox, server: SandboxServer, http_api: Api, method: str, route: str, body: Any
) -> None:
    await http_api.login()
    sb.queue_faults("getconfig", ["500"])
    before = sb.state()
    r = await http_api.client.request(method, server.admin_url + route, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["ok"] is False and r.json()["error"]
    after = sb.state()
    assert after == {**before, "now": after["now"], "qrcodes": after["qrcodes"]}
    # the queued fault is still there: nothing was cleared or replaced
    creds = sb.bots()[0]
    got = await http_api.call("ilink/bot/getconfig", {"ilink_user_id": USER}, creds["bot_token"])
    assert got.status_code == 500
    assert [f["fault"] for f in sb.faults_fired()] == ["500"]


@pytest.mark.parametrize(
    "raw",
    [b'{"seconds": NaN}', b'{"seconds": Infinity}', b"[1]", b"not json"],
)
async def test_non_json_admin_bodies_are_refused(
    sb: Sandbox, server: SandboxServer, raw: bytes
) -> None:
    before = sb.now()
    async with httpx.AsyncClient() as c:
        r = await c.post(server.admin_url + "/clock/advance", content=raw)
    assert r.status_code == 400
    assert sb.now() - before < 60


@pytest.mark.parametrize(
    "url", ["/delivered?user=u1%40im.wechat", "/state?verbose=1", "/delivered?user_id=a&user_id=b"]
)
async def test_unknown_admin_query_parameters_are_refused(
    sb: Sandbox, server: SandboxServer, url: str
) -> None:
    async with httpx.AsyncClient() as c:
        r = await c.get(server.admin_url + url)
    assert r.status_code == 400 and "query parameter" in r.json()["error"]


def test_python_fault_api_refuses_garbage(sb: Sandbox) -> None:
    for bad in (["500:3"], ["reset_before:1"], ["delay:nan"], ["delay:inf"], ["delay:"]):
        with pytest.raises(ValueError, match="fault"):
            sb.queue_faults("sendmessage", bad)
    with pytest.raises(ValueError, match="between 0 and 1"):
        sb.set_faults("sendmessage", http_5xx_rate=1.5)
    with pytest.raises(ValueError, match="delay_seconds"):
        sb.set_faults("sendmessage", delay_rate=1.0, delay_seconds=-1)
    sb.queue_faults("sendmessage", ["delay:0.5", "delay"])
