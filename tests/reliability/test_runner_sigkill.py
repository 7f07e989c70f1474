"""500 inbound messages from 50 users while ``ilinkbot run`` is SIGKILLed twice:
every message handled, every reply seen exactly once and in order per user."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from ilinkbot.store import Store
from tests.processes import env_for, login, start_runner, wait_until, write_config

USERS = [f"u{u:02d}@im.wechat" for u in range(50)]
PER_USER = 10


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_500_messages_two_sigkills_each_handled_each_reply_once(
    server: tuple[Sandbox, SandboxServer], tmp_path: Path
) -> None:
    sb, srv = server
    home = tmp_path / "home"
    write_config(home)
    account = login(sb, srv, home)
    env = env_for(home, srv)
    log = tmp_path / "runner.log"
    expected = {u: [f"echo: {u[:3]} m{i}" for i in range(PER_USER)] for u in USERS}
    kills = 0

    def echoes() -> int:
        return len(sb.delivered())

    proc = start_runner(env, log)
    try:
        sent = 0
        waves = [(0, 4), (4, 7), (7, PER_USER)]
        for wave, (lo, hi) in enumerate(waves):
            for i in range(lo, hi):
                for u in USERS:
                    sb.user_says(u, f"{u[:3]} m{i}", bot_id=account.bot_id)
                    sent += 1
            if wave < len(waves) - 1:
                # kill while this wave is being handled: some replies out, some not yet
                target = sent - (hi - lo) * len(USERS) // 2
                wait_until(lambda t=target: echoes() >= t, 90, f"{target} echoes")
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                kills += 1
                assert echoes() < sent, "the kill came too late to test anything"
                proc = start_runner(env, log)
        wait_until(lambda: echoes() >= sent, 120, f"all {sent} echoes")
        time.sleep(1.0)  # a duplicate would show up now
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert kills == 2
    delivered = sb.delivered()
    for u in USERS:
        got = [d["text"] for d in delivered if d["user_id"] == u]
        assert got == expected[u], f"duplicates, losses or disorder for {u}"
    assert len(delivered) == len(USERS) * PER_USER
    store = Store.open(None, home=home)
    try:
        assert store.unhandled(account.bot_id) == []
        assert store.dead_inbox(account.bot_id) == []
    finally:
        store.close()
    assert sb.violations() == []
