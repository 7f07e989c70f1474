"""One process hosts many bots: 200 accounts in one ``ilinkbot run``, each owner writes once
at the same moment, every reply is delivered exactly once; SIGTERM then ends it cleanly.
(The 1,000-account figures, with timings, are in ``bench/run.py --only accounts``.)"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from ilinkbot.store import Store
from ilinkbot.testing import sandbox_login
from tests.processes import env_for, start_runner, wait_until, write_config

ACCOUNTS = 200


@pytest.fixture
def server() -> Iterator[tuple[Sandbox, SandboxServer]]:
    sb = Sandbox(longpoll_seconds=25.0, qr_poll_seconds=0.5)
    with SandboxServer(sb) as srv:
        yield sb, srv


@pytest.mark.slow
def test_200_accounts_in_one_process_each_reply_once(
    server: tuple[Sandbox, SandboxServer], tmp_path: Path
) -> None:
    sb, srv = server
    home = tmp_path / "home"
    write_config(home, shutdown_grace_seconds=5)
    owners = [f"owner{i:03d}@im.wechat" for i in range(ACCOUNTS)]
    store = Store.open(None, home=home)

    async def login_all() -> list[str]:
        return [
            (await sandbox_login(sb, store, owner=o, base_url=srv.base_url)).bot_id for o in owners
        ]

    try:
        bots = asyncio.run(login_all())
    finally:
        store.close()
    log = tmp_path / "run.log"
    proc = start_runner(env_for(home, srv), log)
    try:
        # every account parked in its long-poll
        wait_until(lambda: sum(1 for b in sb.bots() if b["online"]) >= ACCOUNTS, 60, "polls")
        for owner, bot in zip(owners, bots, strict=True):
            sb.user_says(owner, "ping", bot_id=bot)
        wait_until(lambda: len(sb.delivered()) >= ACCOUNTS, 60, "every reply")
        time.sleep(1.0)  # anything extra would show up now
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5 + 5) == 0, "SIGTERM ends it within shutdown_grace_seconds + 5 s"
    finally:
        if proc.poll() is None:
            proc.kill()
    delivered = Counter((d["user_id"], d["text"]) for d in sb.delivered())
    assert set(delivered) == {(o, "echo: ping") for o in owners}
    assert max(delivered.values()) == 1
    assert sb.violations() == []
