"""Status that scales: ``ilinkbot status --summary`` reads the same few aggregates at any
number of accounts, and the full status carries the same summary."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from ilinkbot.store import Store
from tests.clirun import run_cli


def fill(home: Path, accounts: int) -> None:
    with Store.open(None, home=home) as store:
        for i in range(accounts):
            bot = f"bot{i:04d}@im.bot"
            store.save_account(bot, token=f"t{i}", base_url=None, owner_user_id=f"o{i}@im.wechat")
            if i % 3 == 0:
                store.set_account_state(bot, "expired")
        store.acquire_lease("bot0001@im.bot", "host:1:w", 60)
        store.heartbeat_worker("host:1:w", 60)


def run_status(home: Path, *args: str) -> tuple[int, dict[str, Any], int]:
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(Engine, "before_cursor_execute", count)
    try:
        r = run_cli({**os.environ, "ILINKBOT_HOME": str(home)}, "--json", "status", *args)
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    return r.code, json.loads(r.stdout), statements


@pytest.mark.parametrize("n", [10, 300])
def test_summary_counts_with_the_same_reads_at_any_size(tmp_path: Path, n: int) -> None:
    home = tmp_path / f"home{n}"
    fill(home, n)
    code, out, statements = run_status(home, "--summary")
    assert code == 0
    expired = len(range(0, n, 3))
    assert out["summary"]["accounts"] == {"active": n - expired, "expired": expired}
    assert out["summary"]["polled_accounts"] == 1
    assert out["summary"]["workers"] == 1
    assert "accounts" not in out, "no per-account detail with --summary"
    # the same number of statements for 10 and for 300 accounts
    assert statements <= 12


def test_full_status_includes_the_summary(tmp_path: Path) -> None:
    home = tmp_path / "home"
    fill(home, 4)
    code, out, _ = run_status(home)
    assert code == 0
    assert len(out["accounts"]) == 4
    assert out["summary"]["accounts"] == {"active": 2, "expired": 2}
