"""Shared helpers of the fault-injection suite: a sandbox over real HTTP, runner processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.testing import sandbox_login
from ilink.sandbox import Sandbox, SandboxServer
from store import Store

ROOT = Path(__file__).resolve().parents[2]
ECHO_BOT = str(ROOT / "tests" / "bots" / "echo_bot.py")
OWNER = "owner@im.wechat"


@pytest.fixture
def server() -> Iterator[tuple[Sandbox, SandboxServer]]:
    sb = Sandbox(quota=1_000_000, longpoll_seconds=0.5, qr_poll_seconds=0.5)
    with SandboxServer(sb) as srv:
        yield sb, srv


def write_config(home: Path, **extra: Any) -> None:
    home.mkdir(parents=True, exist_ok=True)
    cfg = {"poll_lease_seconds": 3, "send_lease_seconds": 3, "shutdown_grace_seconds": 10,
           **extra}
    (home / "config.json").write_text(json.dumps(cfg))


def env_for(home: Path, srv: SandboxServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILINKBOT_")}
    env.update(ILINKBOT_HOME=str(home), ILINKBOT_BASE_URL=srv.base_url,
               ILINKBOT_CDN_BASE_URL=srv.cdn_base_url, ILINKBOT_NO_REAL_WAIT="1",
               PYTHONPATH=str(ROOT))
    return env


def start_runner(env: dict[str, str], log: Path, *extra: str) -> subprocess.Popen[bytes]:
    fh = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli.main", "--log-json", *extra, "run", ECHO_BOT],
        env=env, stdout=fh, stderr=fh, cwd=ROOT,
    )


def login(sb: Sandbox, srv: SandboxServer, home: Path) -> Any:
    store = Store.open(None, home=home)
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
