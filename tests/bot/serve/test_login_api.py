"""The web login's JSON endpoints, in-process against the sandbox (the page drives these)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import pytest

from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from tests.conftest import OWNER

from .conftest import AUTH


@pytest.fixture(autouse=True)
def fast_qr_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ILINKBOT_QR_POLL_INTERVAL", "0.02")


async def wait_for(client: httpx.AsyncClient, *states: str, timeout: float = 10.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        r = await client.get("/login/status", headers=AUTH)
        assert r.status_code == 200
        last = r.json()
        if last["state"] in states:
            return last
        await asyncio.sleep(0.02)
    raise AssertionError(f"login never reached {states}; last status {last}")


async def test_scan_number_confirm_done_and_stored(
    client: httpx.AsyncClient, sb: Sandbox, store: Store
) -> None:
    first = (await client.post("/login/start", headers=AUTH)).json()
    assert first["state"] in ("starting", "wait")
    st = await wait_for(client, "wait")
    assert st["qr_image"].startswith("data:image/png;base64,")
    assert base64.b64decode(st["qr_image"].split(",", 1)[1])[:4] == b"\x89PNG"
    assert st["qr_number"] == 1 and st["qr_url"]
    # a second start while one runs joins it (no second QR code)
    again = (await client.post("/login/start", headers=AUTH)).json()
    assert again["qr_url"] == st["qr_url"]

    sb.scan()
    st = await wait_for(client, "scanned")
    assert "Confirm" in st["message"] and st["qr_image"]
    sb.require_verify_code("4711")
    st = await wait_for(client, "verify_code")
    assert st["needs_code"] is True
    r = await client.post("/login/code", json={"code": "1234"}, headers=AUTH)
    assert r.status_code == 200
    st = await wait_for(client, "verify_code_wrong")
    assert "wrong" in st["message"]
    r = await client.post("/login/code", json={"code": "47 11"}, headers=AUTH)
    assert r.status_code == 200
    await wait_for(client, "scanned")
    sb.confirm(OWNER)
    st = await wait_for(client, "done")
    assert st["done"] is True and st["owner"] == OWNER and st["qr_image"] is None
    (acc,) = store.list_accounts()
    assert acc.bot_id == st["account"] and acc.owner_user_id == OWNER and acc.token
    assert acc.token not in str(st)


async def test_expired_codes_are_refreshed_then_it_fails_and_restarts(
    client: httpx.AsyncClient, sb: Sandbox, store: Store
) -> None:
    await client.post("/login/start", headers=AUTH)
    urls = [(await wait_for(client, "wait"))["qr_url"]]
    for number in (2, 3):
        sb.expire_qr()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            st = (await client.get("/login/status", headers=AUTH)).json()
            if st["state"] == "wait" and st["qr_number"] == number:
                break
            assert loop.time() < deadline, st
            await asyncio.sleep(0.02)
        urls.append(st["qr_url"])
    assert len(set(urls)) == 3
    sb.expire_qr()
    st = await wait_for(client, "failed")
    assert st["reason"] == "expired" and st["ok"] is False and st["qr_image"] is None
    assert store.list_accounts() == []

    r = await client.post("/login/start", json={"restart": True}, headers=AUTH)
    assert r.status_code == 200
    st = await wait_for(client, "wait")
    assert st["qr_number"] == 1 and st["qr_url"] not in urls
    sb.scan()
    sb.confirm(OWNER)
    await wait_for(client, "done")
