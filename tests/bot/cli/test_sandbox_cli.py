"""``ilinkbot sandbox``: the emulator as a real server, until stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[3]


def test_ilinkbot_sandbox_prints_its_urls_serves_and_stops_cleanly(tmp_path: Path) -> None:
    env = {**os.environ, "ILINKBOT_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ilinkbot.bot.cli", "sandbox", "--port", "0", "--quota", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        api = re.search(r"(http://127\.0\.0\.1:\d+)\s*$", lines[0])
        cdn = re.search(r"(http://127\.0\.0\.1:\d+/c2c)\s*$", lines[1])
        assert api and cdn, lines
        base = api.group(1)
        deadline = time.monotonic() + 10
        while True:
            try:
                state = httpx.get(f"{base}/_sandbox/state", timeout=2).json()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert state["config"]["quota"] == 2
        # a stale token is refused with -14, as the real server does
        from ilinkbot.ilink.wire import client_version, dumps, new_uin

        body = dumps(
            {
                "get_updates_buf": "",
                "base_info": {"channel_version": "2.4.9", "bot_agent": "OpenClaw"},
            }
        )
        r = httpx.post(
            f"{base}/ilink/bot/getupdates",
            content=body,
            headers={
                "Content-Type": "application/json",
                "AuthorizationType": "ilink_bot_token",
                "X-WECHAT-UIN": new_uin(),
                "iLink-App-Id": "bot",
                "iLink-App-ClientVersion": client_version("2.4.9"),
                "Authorization": "Bearer nope",
            },
        )
        assert r.status_code == 200 and r.json()["errcode"] == -14
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
