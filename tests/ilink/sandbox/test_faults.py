"""Fault injection: 500, resets before/after processing, delays; in-process and real HTTP."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from ilinkbot.ilink.sandbox import Sandbox, SandboxServer

from .helpers import Api, new_client_id

USER = "u1@im.wechat"
RESET = (httpx.ReadError, httpx.RemoteProtocolError)


async def setup_bot(api: Api, sb: Sandbox) -> tuple[str, str]:
    creds = await api.login()
    return creds["bot_token"], sb.user_says(USER, "hello")["context_token"]


async def test_queued_faults_over_real_http(
    sb: Sandbox, server: SandboxServer, http_api: Api
) -> None:
    token, ctx = await setup_bot(http_api, sb)
    sb.queue_faults("sendmessage", ["500", "reset_before", "reset_after"])

    r = await http_api.send_text(token, USER, ctx, "a")
    assert r.status_code == 500
    assert sb.delivered() == []

    with pytest.raises(RESET):
        await http_api.send_text(token, USER, ctx, "b")
    assert sb.delivered() == []

    cid = new_client_id()
    with pytest.raises(RESET):
        await http_api.send_text(token, USER, ctx, "c", client_id=cid)
    (d,) = sb.delivered()  # processed, then the connection was reset
    assert d["text"] == "c"
    # the client's retry with the same client_id is acknowledged, not delivered twice
    r = await http_api.send_text(token, USER, ctx, "c", client_id=cid)
    assert r.json() == {"ret": 0, "message_id": int(d["message_id"])}
    assert len(sb.delivered()) == 1
    assert [f["fault"] for f in sb.faults_fired()] == ["500", "reset_before", "reset_after"]
    assert sb.violations() == []


async def test_reset_in_process_raises_read_error(api: Api, sb: Sandbox) -> None:
    token, ctx = await setup_bot(api, sb)
    sb.queue_faults("*", ["reset_after"])
    with pytest.raises(httpx.ReadError):
        await api.send_text(token, USER, ctx)
    assert len(sb.delivered()) == 1


async def test_getupdates_reset_after_keeps_batch(api: Api, sb: Sandbox) -> None:
    token, _ = await setup_bot(api, sb)
    sb.queue_faults("getupdates", ["reset_after"])
    with pytest.raises(httpx.ReadError):
        await api.call("ilink/bot/getupdates", {"get_updates_buf": ""}, token)
    r = await api.call("ilink/bot/getupdates", {"get_updates_buf": ""}, token)
    assert len(r.json()["msgs"]) == 1  # the lost answer's cursor was never acknowledged


async def test_delay_and_random_faults(api: Api, sb: Sandbox) -> None:
    token, ctx = await setup_bot(api, sb)
    sb.queue_faults("sendmessage", ["delay:0.3"])
    t0 = time.monotonic()
    assert (await api.send_text(token, USER, ctx)).json()["ret"] == 0
    assert time.monotonic() - t0 >= 0.3
    sb.set_faults("sendmessage", http_5xx_rate=1.0, seed=1)
    assert (await api.send_text(token, USER, ctx)).status_code == 500
    sb.set_faults("sendmessage", reset_rate=1.0, reset_after_processing=0.0, seed=1)
    with pytest.raises(httpx.ReadError):
        await api.send_text(token, USER, ctx)
    sb.clear_faults()
    assert (await api.send_text(token, USER, ctx)).json()["ret"] == 0
    assert len(sb.delivered()) == 2
    # a seeded random mix is reproducible
    outcomes: list[list[str]] = []
    for _ in range(2):
        sb.set_faults("getconfig", http_5xx_rate=0.3, reset_rate=0.3, seed=7)
        run = []
        for _ in range(12):
            try:
                r = await api.call("ilink/bot/getconfig", {"ilink_user_id": USER}, token)
                run.append(str(r.status_code))
            except httpx.ReadError:
                run.append("reset")
        outcomes.append(run)
    assert outcomes[0] == outcomes[1]
    assert {"500", "reset", "200"} <= set(outcomes[0])


async def test_cdn_faults(api: Api, sb: Sandbox) -> None:
    token, _ = await setup_bot(api, sb)
    sb.queue_faults("cdn_upload", ["500"])
    cdn, _, _ = await api.upload(token, USER, b"payload")
    assert cdn.status_code == 500
    sb.queue_faults("cdn_download", ["reset_before"])
    msg: dict[str, Any] = sb.user_says(USER, image=b"img")
    url = msg["item_list"][0]["image_item"]["media"]["full_url"]
    with pytest.raises(httpx.ReadError):
        await api.client.get(url)
    assert (await api.client.get(url)).status_code == 200


def test_fault_names_are_checked(sb: Sandbox) -> None:
    with pytest.raises(ValueError):
        sb.queue_faults("sendmesage", ["500"])
    with pytest.raises(ValueError):
        sb.queue_faults("sendmessage", ["boom"])
    sb.queue_faults("msg/notifystart", ["500"])
