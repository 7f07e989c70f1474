"""500 pushes through a server that fails a third of the time: exactly 500 deliveries.

The sandbox (real HTTP on 127.0.0.1) injects, on sendmessage, 20 % HTTP 500, 10 %
connection resets (half of them after the server processed and delivered the message)
and 5 % answers slower than the client's send timeout. Seeded, so every run sees the
same faults in the same order.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ilinkbot.bot.config import Config
from ilinkbot.bot.outbox import Outbox
from ilinkbot.bot.push import PushRequest, catch_up, push
from ilinkbot.bot.service import Service
from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from ilinkbot.store import Store
from ilinkbot.testing import no_real_waiting, sandbox_login
from tests.processes import OWNER

N = 500
USERS = [f"user{u}@im.wechat" for u in range(5)]


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_500_sends_under_faults_end_as_exactly_500_deliveries(
    server: tuple[Sandbox, SandboxServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb, srv = server
    # "slow": 0.8 s answers against a 0.4 s client timeout, so the client gives up and
    # retries while the server still delivers the first attempt
    monkeypatch.setattr("ilinkbot.ilink.client.SEND_TIMEOUT", 0.4)
    home = tmp_path / "home"
    store = Store.open(None, home=home)
    account = await sandbox_login(sb, store, owner=OWNER, base_url=srv.base_url)
    for u in USERS:
        sb.user_says(u, "hi", bot_id=account.bot_id)
    config = Config(
        home=home, base_url=srv.base_url, cdn_base_url=srv.cdn_base_url, reply_quota=1_000_000
    )
    svc = Service(config, store=store)
    outbox = Outbox(svc)
    states: Counter[str] = Counter()
    try:
        with no_real_waiting():
            assert await catch_up(outbox, account, seconds=1) == len(USERS)
            # 5 % of all requests slow: the delay is drawn among the 70 % not failed
            sb.set_faults(
                "sendmessage",
                http_5xx_rate=0.20,
                reset_rate=0.10,
                reset_after_processing=0.5,
                delay_rate=0.05 / 0.70,
                delay_seconds=0.8,
                seed=20240501,
            )
            results = []
            for i in range(N):
                r = await push(
                    svc, PushRequest(f"alert {i}"), to=USERS[i % len(USERS)], catch_up_seconds=0
                )
                states[r.state] += 1
                results.append(r)
            # what a pass could not deliver stays pending; later passes (the runner
            # drains every 15 s) deliver it with the same client_id
            for _ in range(10):
                if not store.list_outbox(account.bot_id, state="pending"):
                    break
                await outbox.drain(account)
    finally:
        sb.clear_faults()
        await svc.aclose()

    fired = Counter(f["fault"] for f in sb.faults_fired())
    assert fired["500"] >= 50 and fired["reset_after"] >= 10 and fired["reset_before"] >= 10
    assert fired["delay"] >= 10, fired
    assert sb.violations() == []

    delivered = [d for d in sb.delivered() if d["text"] != "hi"]
    texts = Counter(d["text"] for d in delivered)
    dupes = {t: c for t, c in texts.items() if c > 1}
    assert not dupes, f"users saw duplicates: {dupes}"
    assert len(delivered) == N, f"{len(delivered)} delivered of {N}; outcomes {states}"
    assert set(texts) == {f"alert {i}" for i in range(N)}
    assert len({d["client_id"] for d in delivered}) == N
    # order per user is kept, retries included
    for k, u in enumerate(USERS):
        got = [d["text"] for d in delivered if d["user_id"] == u]
        assert got == [f"alert {i}" for i in range(k, N, len(USERS))], u
    # the store agrees with the server, message ids included
    rows = store.list_outbox(account.bot_id, limit=10 * N)
    assert Counter(r.state for r in rows) == Counter({"sent": N})
    by_client = {d["client_id"]: d["message_id"] for d in delivered}
    assert all(by_client[r.client_id] == r.message_id for r in rows)
    # a push reported delivered was delivered
    for r in results:
        for m in r.messages:
            if m.state == "delivered":
                assert by_client[m.client_id] == m.message_id
    store.close()
