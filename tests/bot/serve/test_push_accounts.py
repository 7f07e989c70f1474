"""``POST /push`` with several accounts (issue 13): it never guesses, and text that is not
valid UTF-8 still goes out."""

from __future__ import annotations

import json
from typing import Any

import httpx

from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from ilinkbot.testing import capture_logs, sandbox_login
from tests.conftest import OWNER

from .conftest import AUTH

BOSS = "boss@im.wechat"


async def test_two_accounts_without_account_is_409_unless_a_default_is_set(
    client: httpx.AsyncClient, sb: Sandbox, account: Any, store: Store
) -> None:
    other = await sandbox_login(sb, store, owner=BOSS)
    sb.user_says(OWNER, "hi", bot_id=account.bot_id)
    sb.user_says(BOSS, "hi", bot_id=other.bot_id)

    r = await client.post("/push", content=b"for whom?", headers=AUTH)
    assert r.status_code == 409, r.text
    assert "several accounts" in r.json()["error"]
    assert sb.delivered() == []

    r = await client.post(f"/push?account={account.bot_id}", content=b"named", headers=AUTH)
    assert r.status_code == 200 and r.json()["to"] == OWNER

    store.set_default_account(other.bot_id)
    r = await client.post("/push", content=b"to the default", headers=AUTH)
    assert r.status_code == 200 and r.json()["to"] == BOSS
    assert [(d["bot_id"], d["text"]) for d in sb.delivered()] == [
        (account.bot_id, "named"),
        (other.bot_id, "to the default"),
    ]

    # the default logs out: an error naming it, never the other account
    store.logout(other.bot_id)
    r = await client.post("/push", content=b"not to the owner", headers=AUTH)
    assert r.status_code == 503, r.text
    assert f"default account {other.bot_id} is logged out" in r.json()["error"]
    assert len(sb.delivered()) == 2


async def test_json_body_with_a_lone_surrogate_is_sent_with_a_replacement(
    client: httpx.AsyncClient, sb: Sandbox, account: Any, store: Store
) -> None:
    sb.user_says(OWNER, "hi")
    body = '{"message": "disk \\ud800 full", "title": "web-1"}'
    with capture_logs() as logs:
        r = await client.post(
            "/push", content=body.encode(), headers={**AUTH, "Content-Type": "application/json"}
        )
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "delivered"
    assert sb.delivered(OWNER)[-1]["text"] == "web-1\n\ndisk \ufffd full"
    assert any(e["event"] == "text_not_utf8" for e in logs), logs
    (row,) = store.list_outbox(account.bot_id)
    assert json.dumps(row.payload)  # stored as valid text
