"""What ntfy clients send: Apprise's ``ntfy://host:port/topic`` publishes JSON at the root,
and a high priority is visible in the message."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from tests.conftest import OWNER

from .conftest import AUTH

ALICE = "alice@im.wechat"


async def test_apprise_ntfy_publishes_json_at_the_root_with_the_topic_in_the_body(
    client: httpx.AsyncClient, sb: Sandbox, account: Any, store: Store
) -> None:
    sb.user_says(ALICE, "hi")
    store.set_alias(account.bot_id, ALICE, "alice")
    # what Apprise's ntfy plugin posts for ntfy://TOKEN@host:port/alice
    payload = {"topic": "alice", "title": "Disk", "message": "91% full", "priority": 3}
    r = await client.post("/", json=payload, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["to"] == ALICE
    assert sb.delivered(ALICE)[-1]["text"] == "Disk\n\n91% full"
    r = await client.post("/", json=payload)
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("how", "value", "mark"),
    [
        ("json", 5, "‼️"),
        ("json", 4, "❗"),
        ("json", "urgent", "‼️"),
        ("header", "high", "❗"),
        ("header", "5", "‼️"),
        ("query", "max", "‼️"),
        ("header", "3", ""),
        ("json", 1, ""),
    ],
)
async def test_a_high_priority_is_marked_in_the_message(
    client: httpx.AsyncClient, sb: Sandbox, account: Any, how: str, value: Any, mark: str
) -> None:
    sb.user_says(OWNER, "hi")
    if how == "json":
        r = await client.post("/push", json={"message": "db down", "priority": value}, headers=AUTH)
    elif how == "header":
        r = await client.post("/push", content=b"db down", headers={**AUTH, "Priority": value})
    else:
        r = await client.post(f"/push?priority={value}", content=b"db down", headers=AUTH)
    assert r.status_code == 200, r.text
    assert sb.delivered(OWNER)[-1]["text"] == (f"{mark} db down" if mark else "db down")
