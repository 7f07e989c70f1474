"""``GET /metrics``: Prometheus text with the store's counts and this process's numbers."""

from __future__ import annotations

import re
from typing import Any

import httpx

from ilinkbot.ilink.sandbox import Sandbox
from tests.conftest import OWNER

from .conftest import AUTH


def value(text: str, sample: str) -> float:
    m = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    assert m, f"{sample} not in:\n{text}"
    return float(m.group(1))


async def test_metrics_need_the_token_and_count_what_happened(
    client: httpx.AsyncClient, sb: Sandbox, account: Any
) -> None:
    assert (await client.get("/metrics")).status_code == 401
    sb.user_says(OWNER, "hi")
    before = (await client.get("/metrics", headers=AUTH)).text
    r = await client.post("/push", content=b"disk full", headers=AUTH)
    assert r.status_code == 200, r.text
    r = await client.get("/metrics", headers=AUTH)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert "# TYPE ilinkbot_send_seconds histogram" in text
    assert value(text, 'ilinkbot_accounts{state="active"}') == 1
    assert value(text, 'ilinkbot_outbox_messages{state="sent"}') == 1
    sends = value(text, "ilinkbot_send_seconds_count") - value(
        before, "ilinkbot_send_seconds_count"
    )
    assert sends == 1
    assert value(text, 'ilinkbot_send_seconds_bucket{le="+Inf"}') == value(
        text, "ilinkbot_send_seconds_count"
    )
    for name in ("ilinkbot_polls_in_flight", "ilinkbot_handler_failures_total"):
        assert value(text, name) >= 0
