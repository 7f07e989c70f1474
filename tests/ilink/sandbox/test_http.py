"""The real HTTP server: admin routes, Content-Length framing, CLI entry point."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from ilinkbot.ilink.wire import dumps, new_uin

from .helpers import BASE_INFO, VERSION, Api, aes_decrypt

USER = "u1@im.wechat"
ROOT = Path(__file__).resolve().parents[3]


async def test_server_urls_and_bases(sb: Sandbox, server: SandboxServer) -> None:
    assert server.base_url.startswith("http://127.0.0.1:")
    assert server.cdn_base_url == server.base_url + "/c2c"
    assert server.redirect_host.startswith("127.0.0.1:")
    assert sb.api_base == server.base_url and sb.cdn_base == server.cdn_base_url
    async with httpx.AsyncClient() as c:
        r = await c.get(server.base_url + "/nowhere")
        assert r.status_code == 404


async def test_admin_http_routes(sb: Sandbox, server: SandboxServer, http_api: Api) -> None:
    admin = server.base_url + "/_sandbox"
    c = http_api.client

    qr = await http_api.get_qrcode()
    page = await c.get(qr["qrcode_img_content"])
    assert page.status_code == 200 and qr["qrcode"] in page.text
    assert (await c.post(admin + "/login/scan")).json()["status"] == "scaned"
    assert (await c.post(admin + "/login/verify-code", json={"code": "77"})).json()["ok"]
    assert (await http_api.qr_status(qr["qrcode"], "77"))["status"] == "scaned"
    creds = (await c.post(admin + "/login/confirm", json={"user_id": "o@im.wechat"})).json()
    assert creds["status"] == "confirmed" and creds["bot_token"]
    assert (await c.post(admin + "/login/confirm")).status_code == 409  # already used

    await http_api.get_qrcode()
    assert (await c.post(admin + "/login/redirect")).json()["ok"]
    await http_api.get_qrcode()
    assert (await c.post(admin + "/login/block")).json()["ok"]
    await http_api.get_qrcode()
    assert (await c.post(admin + "/login/expire")).json()["ok"]
    statuses = [q["status"] for q in (await c.get(admin + "/qrcodes")).json()]
    assert statuses == ["confirmed", "scaned", "verify_code_blocked", "expired"]

    # users write to the bot
    msg = (await c.post(admin + f"/users/{USER}/messages", json={"text": "hi"})).json()
    assert msg["from_user_id"] == USER and msg["context_token"]
    img = base64.b64encode(b"picture").decode()
    m2 = (
        await c.post(
            admin + f"/users/{USER}/messages",
            json={"image_b64": img, "image_key_form": "base64_hex"},
        )
    ).json()
    assert m2["item_list"][0]["image_item"]["media"]["aes_key"]
    doc = base64.b64encode(b"document").decode()
    m3 = (
        await c.post(
            admin + "/users/u2%40im.wechat/messages",
            json={"file_b64": doc, "file_name": "d.txt", "bot_id": creds["bot_id"]},
        )
    ).json()
    f = m3["item_list"][0]["file_item"]
    key = bytes.fromhex(base64.b64decode(f["media"]["aes_key"]).decode())
    assert aes_decrypt(key, (await c.get(f["media"]["full_url"])).content) == b"document"
    assert m3["from_user_id"] == "u2@im.wechat"
    bad = await c.post(admin + f"/users/{USER}/messages", json={"file_b64": doc})
    assert bad.status_code == 400

    # config, delivery, violations, refusals
    assert (await c.post(admin + "/config", json={"quota": 1})).json()["quota"] == 1
    ctx = m2["context_token"]
    token = creds["bot_token"]
    assert (await http_api.send_text(token, USER, ctx, "one")).json()["ret"] == 0
    assert (await http_api.send_text(token, USER, ctx, "two")).json()["ret"] == -2
    assert (await http_api.send_text(token, USER, "bogus", "three")).json() == {}
    delivered = (await c.get(admin + "/delivered", params={"user_id": USER})).json()
    assert [d["text"] for d in delivered] == ["one"]
    assert (await c.get(admin + "/delivered", params={"user_id": "u2@im.wechat"})).json() == []
    violations = (await c.get(admin + "/violations")).json()
    assert violations[-1]["rule"] == "msg.context_token"
    assert (await c.get(admin + "/refusals")).json()[-1]["reason"] == "quota_exhausted"

    # clock
    now = (await c.post(admin + "/clock/advance", json={"seconds": 90000})).json()["now"]
    assert now > time.time() + 89000
    state = (await c.get(admin + "/state")).json()
    (bot,) = state["bots"]
    windows = {u["user_id"]: u["window_open"] for u in bot["users"]}
    assert windows == {USER: False, "u2@im.wechat": False}
    assert state["counts"]["delivered"] == 1

    # faults
    r = await c.post(admin + "/faults", json={"endpoint": "getconfig", "queue": ["500"]})
    assert r.json()["ok"]
    r = await http_api.call("ilink/bot/getconfig", {"ilink_user_id": USER}, token)
    assert r.status_code == 500
    await c.post(admin + "/faults", json={"endpoint": "getconfig", "http_5xx_rate": 1.0})
    r = await http_api.call("ilink/bot/getconfig", {"ilink_user_id": USER}, token)
    assert r.status_code == 500
    assert (await c.delete(admin + "/faults")).json()["ok"]
    body = {"ilink_user_id": USER, "context_token": ctx}
    r = await http_api.call("ilink/bot/getconfig", body, token)
    assert r.json()["ret"] == 0  # a typing ticket needs no open window

    # session expiry
    assert (await c.post(admin + "/session/expire", json={"bot_id": creds["bot_id"]})).json()
    r = await http_api.call("ilink/bot/getconfig", {"ilink_user_id": USER}, token)
    assert r.json()["ret"] == -14
    assert (await c.get(admin + "/bots")).json()[0]["expired"] is True

    assert (await c.get(admin + "/nope")).status_code == 404
    assert (await c.post(admin + "/reset")).json()["ok"]
    assert sb.bots() == [] and sb.violations() == []


async def test_qr_page_buttons(sb: Sandbox, server: SandboxServer, http_api: Api) -> None:
    qr = await http_api.get_qrcode()
    url = qr["qrcode_img_content"]
    r = await http_api.client.post(url + "/scan", follow_redirects=True)
    assert r.status_code == 200 and "scaned" in r.text
    r = await http_api.client.post(
        url + "/confirm", data={"user_id": "web@im.wechat"}, follow_redirects=True
    )
    assert "confirmed" in r.text
    assert sb.bots()[0]["user_id"] == "web@im.wechat"


def raw_request(port: int, head_len_delta: int, token: str) -> tuple[bytes, float]:
    body = dumps({"base_info": BASE_INFO})
    head = (
        "POST /ilink/bot/msg/notifystart HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        "AuthorizationType: ilink_bot_token\r\n"
        f"X-WECHAT-UIN: {new_uin()}\r\n"
        "iLink-App-Id: bot\r\n"
        f"iLink-App-ClientVersion: {VERSION}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Connection: close\r\n"
        f"Content-Length: {len(body) + head_len_delta}\r\n\r\n"
    ).encode()
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head + body)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks), time.monotonic() - t0


async def test_wrong_content_length_over_real_http(
    sb: Sandbox, server: SandboxServer, http_api: Api
) -> None:
    token = (await http_api.login())["bot_token"]
    ok, _ = await asyncio.to_thread(raw_request, server.port, 0, token)
    assert b'{"ret":0}' in ok
    assert sb.bots()[0]["online"] is True
    sb.configure()
    for delta in (+7, -5):
        response, elapsed = await asyncio.to_thread(raw_request, server.port, delta, token)
        assert response.startswith(b"HTTP/1.1 200"), response
        assert response.endswith(b"\r\n\r\n{}"), response
        assert sb.violations()[-1]["rule"] == "header.content_length"
        if delta > 0:
            assert elapsed >= 0.4  # waited body_timeout for the missing bytes
    assert len(sb.violations()) == 2


async def test_keep_alive_and_concurrent_admin_thread(
    sb: Sandbox, server: SandboxServer, http_api: Api
) -> None:
    creds = await http_api.login()
    sb.configure(longpoll_seconds=5)

    def inject() -> None:
        time.sleep(0.2)
        sb.user_says(USER, "from another thread")

    thread = threading.Thread(target=inject)
    thread.start()
    t0 = time.monotonic()
    r = await http_api.call("ilink/bot/getupdates", {"get_updates_buf": ""}, creds["bot_token"])
    thread.join()
    assert time.monotonic() - t0 < 3
    assert r.json()["msgs"][0]["item_list"][0]["text_item"]["text"] == "from another thread"
    # many requests over one pooled connection
    for _ in range(20):
        r = await http_api.call("ilink/bot/msg/notifystart", {}, creds["bot_token"])
        assert r.json() == {"ret": 0}


def test_start_stop_and_context_manager() -> None:
    sb = Sandbox()
    srv = SandboxServer(sb)
    srv.start()
    url = srv.base_url
    assert httpx.get(url + "/_sandbox/state").json()["api_base"] == url
    srv.stop()
    assert sb.api_base == "http://ilink.sandbox"  # the in-process bases are restored
    try:
        httpx.get(url + "/_sandbox/state", timeout=1)
        raise AssertionError("server still answering")
    except httpx.TransportError:
        pass
    with SandboxServer(sb) as srv2:
        assert httpx.get(srv2.base_url + "/_sandbox/").json()["routes"]


def test_python_m_prints_urls_and_exits_cleanly() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ilinkbot.ilink.sandbox", "--port", "0", "--longpoll-seconds", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        urls: dict[str, str] = {}
        for line in lines:
            label, _, value = line.strip().rpartition(": ")
            urls[label] = value
        api = urls["ilink sandbox API base"]
        assert api.startswith("http://127.0.0.1:")
        assert urls["ilink sandbox CDN base"] == api + "/c2c"
        assert urls["ilink sandbox admin"] == api + "/_sandbox/state"
        state: dict[str, Any] = httpx.get(urls["ilink sandbox admin"]).json()
        assert state["api_base"] == api
        assert state["config"]["longpoll_seconds"] == 1
        assert json.dumps(state)
    finally:
        proc.terminate()
        try:
            rc = proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert rc == 0
