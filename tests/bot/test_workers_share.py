"""Several ``ilinkbot run`` processes on one PostgreSQL store share the accounts: each polls
its fair share, a SIGKILLed worker's accounts are polled elsewhere within
``poll_lease_seconds`` + 5 s, and every reply is delivered exactly once."""

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
from tests.store.conftest import pg_url  # noqa: F401  (fixture)

ACCOUNTS = 30
WORKERS = 3
LEASE = 3  # poll_lease_seconds in write_config


@pytest.fixture
def server() -> Iterator[tuple[Sandbox, SandboxServer]]:
    sb = Sandbox(longpoll_seconds=1.0, qr_poll_seconds=0.5)
    with SandboxServer(sb) as srv:
        yield sb, srv


def holders(store: Store, bots: list[str]) -> Counter[str]:
    """How many accounts each worker process (by pid) polls now."""
    found = (store.lease_holder(b) for b in bots)
    return Counter(h.split(":")[1] for h in found if h)


@pytest.mark.pg
@pytest.mark.slow
def test_three_workers_share_the_accounts_and_survive_a_sigkill(
    server: tuple[Sandbox, SandboxServer],
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    sb, srv = server
    home = tmp_path / "home"
    write_config(home)
    store = Store.open(pg_url, home=home)
    owners = [f"owner{i:02d}@im.wechat" for i in range(ACCOUNTS)]

    async def login_all() -> list[str]:
        return [(await sandbox_login(sb, store, owner=o)).bot_id for o in owners]

    bots = asyncio.run(login_all())
    env = env_for(home, srv, pg_url)
    procs = [start_runner(env, tmp_path / f"w{i}.log") for i in range(WORKERS)]
    try:
        # each polls its share: 10 each (the fair share, with the first rounding up)
        wait_until(
            lambda: sorted(holders(store, bots).values()) == [10, 10, 10], 60, "an even share"
        )
        for owner, bot in zip(owners, bots, strict=True):
            sb.user_says(owner, "first", bot_id=bot)
        wait_until(lambda: len(sb.delivered()) >= ACCOUNTS, 60, "every first reply")
        victim = procs[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed_at = time.monotonic()
        survivors = {str(p.pid) for p in procs[1:]}
        wait_until(
            lambda: (
                set(holders(store, bots)) == survivors
                and sum(holders(store, bots).values()) == ACCOUNTS
            ),
            LEASE + 30,
            "the survivors poll every account",
        )
        took = time.monotonic() - killed_at
        assert took < LEASE + 5 + 2, f"takeover took {took:.1f} s"  # +2: this test's polling
        for owner, bot in zip(owners, bots, strict=True):
            sb.user_says(owner, "second", bot_id=bot)
        wait_until(lambda: len(sb.delivered()) >= 2 * ACCOUNTS, 60, "every second reply")
        time.sleep(1.5)  # anything extra would show up now
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
        store.close()
    delivered = Counter((d["user_id"], d["text"]) for d in sb.delivered())
    expected = {(o, f"echo: {t}") for o in owners for t in ("first", "second")}
    assert set(delivered) == expected
    assert max(delivered.values()) == 1, "no reply sent twice"
    assert sb.violations() == []
