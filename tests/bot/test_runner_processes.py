"""``ilinkbot run`` as real processes against the sandbox over HTTP: crashes (SIGKILL),
clean shutdown (SIGTERM) and two runners sharing one PostgreSQL store."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from ilinkbot.store import Store
from tests.processes import ECHO_BOT, env_for, login, start_runner, wait_until, write_config
from tests.store.conftest import pg_url  # noqa: F401  (fixture)


@pytest.fixture
def server() -> Iterator[tuple[Sandbox, SandboxServer]]:
    sb = Sandbox(longpoll_seconds=0.5, qr_poll_seconds=0.5)
    with SandboxServer(sb) as srv:
        yield sb, srv


@pytest.mark.slow
def test_200_messages_two_sigkills_each_echo_once_in_order(
    server: tuple[Sandbox, SandboxServer], tmp_path: Path
) -> None:
    sb, srv = server
    home = tmp_path / "home"
    write_config(home)
    account = login(sb, srv, home)
    env = env_for(home, srv)
    log = tmp_path / "runner.log"
    users = [f"user{u:02d}@im.wechat" for u in range(20)]
    expected = {u: [f"echo: {u[:6]} m{i}" for i in range(10)] for u in users}

    def echoes() -> int:
        return len(sb.delivered())

    proc = start_runner(env, log)
    try:
        sent = 0
        for round_ in range(3):
            # a third of the messages, then kill while they are being handled
            for i in range(round_ * 4, min(10, round_ * 4 + 4)):
                for u in users:
                    sb.user_says(u, f"{u[:6]} m{i}", bot_id=account.bot_id)
                    sent += 1
            if round_ < 2:
                wait_until(lambda s=sent: echoes() >= s - 40, 60, "some echoes")
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                proc = start_runner(env, log)
        wait_until(lambda: echoes() >= 200, 120, "all 200 echoes")
        time.sleep(1.0)  # anything extra would show up now
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    delivered = sb.delivered()
    assert len(delivered) == 200, "each echo exactly once"
    for u in users:
        got = [d["text"] for d in delivered if d["user_id"] == u]
        assert got == expected[u], f"order or duplicates for {u}"
    store = Store.open(None, home=home)
    try:
        assert store.unhandled(account.bot_id) == []
        assert store.dead_inbox(account.bot_id) == []
    finally:
        store.close()
    assert sb.violations() == []


def test_sigterm_lets_a_slow_handler_finish(
    server: tuple[Sandbox, SandboxServer], tmp_path: Path
) -> None:
    sb, srv = server
    home = tmp_path / "home"
    write_config(home)
    account = login(sb, srv, home)
    log = tmp_path / "runner.log"
    proc = start_runner(env_for(home, srv), log)
    try:
        sb.user_says("owner@im.wechat", "slow 2", bot_id=account.bot_id)
        store = Store.open(None, home=home)
        try:
            wait_until(lambda: len(store.unhandled(account.bot_id)) == 1, 20, "message stored")
            time.sleep(0.5)  # the handler is now sleeping
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
            assert store.unhandled(account.bot_id) == []
        finally:
            store.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [d["text"] for d in sb.delivered()] == ["done slow 2"]
    assert "stopping" in log.read_text()


def test_sigkill_mid_handler_sends_each_reply_once(
    server: tuple[Sandbox, SandboxServer], tmp_path: Path
) -> None:
    sb, srv = server
    home = tmp_path / "home"
    write_config(home)
    account = login(sb, srv, home)
    env = env_for(home, srv)
    log = tmp_path / "runner.log"
    proc = start_runner(env, log)
    try:
        sb.user_says("owner@im.wechat", "steps 2", bot_id=account.bot_id)
        wait_until(lambda: len(sb.delivered()) == 2, 20, "the first two replies")
        proc.send_signal(signal.SIGKILL)  # the handler is asleep before its last reply
        proc.wait(10)
        proc = start_runner(env, log)  # handles the message again from the start
        wait_until(lambda: len(sb.delivered()) >= 3, 30, "the last reply")
        time.sleep(1.0)  # anything extra would show up now
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert [d["text"] for d in sb.delivered()] == [
        "step 1 of steps 2",
        "step 2 of steps 2",
        "done steps 2",
    ]


def test_run_skip_backlog_ignores_what_send_caught_up(
    server: tuple[Sandbox, SandboxServer], tmp_path: Path
) -> None:
    sb, srv = server
    home = tmp_path / "home"
    write_config(home)
    account = login(sb, srv, home)
    env = env_for(home, srv)
    for text in ("old 1", "old 2"):
        sb.user_says("owner@im.wechat", text, bot_id=account.bot_id)
    cli = [sys.executable, "-m", "ilinkbot.bot.cli"]
    sent = subprocess.run([*cli, "send", "from cron"], env=env, capture_output=True, timeout=60)
    assert sent.returncode == 0, sent.stderr  # its catch-up stored the two old messages
    log = tmp_path / "runner.log"
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [*cli, "--log-json", "run", "--skip-backlog", ECHO_BOT], env=env, stdout=fh, stderr=fh
        )
    try:
        wait_until(lambda: "backlog_skipped" in log.read_text(), 20, "the skip")
        sb.user_says("owner@im.wechat", "new", bot_id=account.bot_id)
        wait_until(lambda: len(sb.delivered()) >= 2, 20, "the echo")
        time.sleep(1.0)  # anything extra would show up now
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert [d["text"] for d in sb.delivered()] == ["from cron", "echo: new"]
    (line,) = [ln for ln in log.read_text().splitlines() if "backlog_skipped" in ln]
    assert json.loads(line)["count"] == 2


@pytest.mark.pg
@pytest.mark.slow
def test_two_runners_on_postgresql_failover(
    server: tuple[Sandbox, SandboxServer],
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    sb, srv = server
    home = tmp_path / "home"
    write_config(home)
    account = login(sb, srv, home, pg_url)
    env = env_for(home, srv, pg_url)
    a = start_runner(env, tmp_path / "a.log")
    store = Store.open(pg_url, home=home)
    b = None
    try:
        wait_until(lambda: store.lease_holder(account.bot_id) is not None, 20, "a polls")
        b = start_runner(env, tmp_path / "b.log")
        time.sleep(2)
        holder = store.lease_holder(account.bot_id)
        assert holder is not None and holder.split(":")[1] == str(a.pid)
        sb.user_says("owner@im.wechat", "to a", bot_id=account.bot_id)
        wait_until(lambda: len(sb.delivered()) == 1, 20, "a answers")
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        started = time.monotonic()
        wait_until(
            lambda: (store.lease_holder(account.bot_id) or ":0:").split(":")[1] == str(b.pid),
            60,
            "b takes over",
        )
        assert time.monotonic() - started < 60
        sb.user_says("owner@im.wechat", "to b", bot_id=account.bot_id)
        wait_until(lambda: len(sb.delivered()) == 2, 30, "b answers")
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
        store.close()
    assert [d["text"] for d in sb.delivered()] == ["echo: to a", "echo: to b"]
