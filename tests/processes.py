"""Helpers for tests that run ilinkbot as real processes against a SandboxServer."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from ilinkbot.store import Store
from ilinkbot.testing import sandbox_login

ROOT = Path(__file__).resolve().parent.parent
ECHO_BOT = str(ROOT / "tests" / "bots" / "echo_bot.py")
OWNER = "owner@im.wechat"


def write_config(home: Path, **extra: Any) -> None:
    """A config with short leases, so takeovers and re-sends happen within a test."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    cfg = {"poll_lease_seconds": 3, "send_lease_seconds": 3, "shutdown_grace_seconds": 10, **extra}
    (home / "config.json").write_text(json.dumps(cfg))


def env_for(home: Path, srv: SandboxServer, db_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILINKBOT_")}
    env.update(
        ILINKBOT_HOME=str(home),
        ILINKBOT_BASE_URL=srv.base_url,
        ILINKBOT_CDN_BASE_URL=srv.cdn_base_url,
        ILINKBOT_NO_REAL_WAIT="1",
        PYTHONPATH=str(ROOT),
    )
    if db_url:
        env["ILINKBOT_DATABASE_URL"] = db_url
    return env


def start_runner(env: dict[str, str], log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``ilinkbot run tests/bots/echo_bot.py`` with its output appended to ``log``."""
    fh = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "ilinkbot.bot.cli", "--log-json", *extra, "run", ECHO_BOT],
        env=env,
        stdout=fh,
        stderr=fh,
        cwd=ROOT,
    )


def login(sb: Sandbox, srv: SandboxServer, home: Path, db_url: str | None = None) -> Any:
    store = Store.open(db_url, home=home)
    try:
        return asyncio.run(sandbox_login(sb, store, owner=OWNER, base_url=srv.base_url))
    finally:
        store.close()


def wait_until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
