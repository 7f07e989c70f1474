"""Figure ``fanout``: one push to N users (1,000; 200 with ``--quick``) with the sandbox
delaying each ``sendmessage`` by 50 ms, like a real round trip to the server. The ideal is
N x 50 ms / ``send_concurrency`` (16); the target is within 1.5x of it. The pacing limit
(``fanout_per_second``) is set out of the way, as the issue asks."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import OWNER, Row, met, sandbox

NAME = "fanout"
TARGET = "within 1.5x of N x 50 ms / 16"
DELAY = 0.05
CONCURRENCY = 16


def measure(quick: bool) -> dict[str, Any]:
    from ilinkbot.bot.config import Config
    from ilinkbot.bot.outbox import Outbox
    from ilinkbot.bot.push import PushRequest, catch_up, push
    from ilinkbot.bot.service import Service
    from ilinkbot.store import Store

    n = 200 if quick else 1000
    users = [f"fan{u:04d}@im.wechat" for u in range(n)]
    with tempfile.TemporaryDirectory(prefix="ilinkbot-bench-") as tmp, sandbox(longpoll=0.5) as sp:
        home = Path(tmp) / "home"
        bot_id, token = sp.login()
        for u in users:
            sp.say(u, "hi", bot_id)
        config = Config(
            home=home,
            base_url=sp.api,
            cdn_base_url=sp.cdn,
            reply_quota=10**6,
            send_concurrency=CONCURRENCY,
            fanout_per_second=10**6,
        )

        async def main() -> float:
            store = Store.open(None, home=home)
            account = store.save_account(bot_id, token=token, base_url=sp.api, owner_user_id=OWNER)
            svc = Service(config, store=store)
            try:
                while len(store.list_peers(bot_id)) < n:  # the users' context tokens
                    await catch_up(Outbox(svc), account, seconds=1)
                sp.post(
                    "faults",
                    {"endpoint": "sendmessage", "delay_rate": 1.0, "delay_seconds": DELAY},
                )
                started = time.perf_counter()
                result = await push(
                    svc, PushRequest("fan-out"), to=users, account=bot_id, catch_up_seconds=0
                )
                elapsed = time.perf_counter() - started
                if not result.ok:
                    raise SystemExit(f"fan-out not delivered: {result.state}")
                return elapsed
            finally:
                await svc.aclose()
                store.close()

        elapsed = asyncio.run(main())
    ideal = n * DELAY / CONCURRENCY
    ratio = elapsed / ideal
    return {
        "users": n,
        "seconds": round(elapsed, 3),
        "ideal_seconds": round(ideal, 3),
        "ratio": round(ratio, 2),
        "target": TARGET,
        "met": ratio <= 1.5,
    }


def rows(result: dict[str, Any]) -> list[Row]:
    return [
        (
            f"fan-out to {result['users']} users, 50 ms a send",
            f"{result['seconds']:.2f} s",
            f"ideal {result['ideal_seconds']:.2f} s",
            f"{result['ratio']:.2f}x",
            met(result["ratio"] <= 1.5),
        )
    ]
