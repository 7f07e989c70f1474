"""As a library (``send_to_wechat``, ``Bot.run``) ilinkbot never writes to stdout and never
configures logging on import: warnings and errors go to stderr through the standard
``logging`` module, which the caller may configure like any library's."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from tests.processes import OWNER, ROOT, env_for, login, wait_until, write_config


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Sandbox, dict[str, str], Path]]:
    sb = Sandbox(longpoll_seconds=0.2, qr_poll_seconds=0.5)
    with SandboxServer(sb) as srv:
        home = tmp_path / "home"
        write_config(home)
        login(sb, srv, home)
        sb.user_says(OWNER, "hi")
        home.chmod(0o755)  # others may read it: the store warns about that
        yield sb, env_for(home, srv), tmp_path


def python(env: dict[str, str], code: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        **kw,
    )


def test_send_to_wechat_prints_nothing_and_warns_on_stderr(setup: Any) -> None:
    sb, env, _tmp = setup
    r = python(
        env,
        """
        import ilinkbot, structlog, logging
        assert not structlog.is_configured() and not logging.getLogger().handlers
        r = ilinkbot.send_to_wechat("from python", title="T")
        assert r.state == "delivered", r
        assert not structlog.is_configured() and not logging.getLogger().handlers
        """,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert sb.delivered(OWNER)[-1]["text"] == "T\n\nfrom python"
    assert "store_dir_permissive" in r.stderr  # a warning still reaches the user
    assert "store_opened" not in r.stderr and "ilink_call" not in r.stderr  # debug, info


def test_the_caller_configures_the_level_with_standard_logging(setup: Any) -> None:
    _sb, env, _tmp = setup
    r = python(
        env,
        """
        import logging, sys, ilinkbot
        logging.basicConfig(stream=sys.stderr, level=logging.DEBUG, format="LIB %(message)s")
        ilinkbot.send_to_wechat("debugging")
        """,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert "LIB " in r.stderr and "ilink_call" in r.stderr and "Bearer" not in r.stderr


def test_bot_run_prints_nothing(setup: Any) -> None:
    sb, env, tmp = setup
    script = tmp / "mybot.py"
    script.write_text(
        textwrap.dedent(
            """
            from ilinkbot import Bot

            bot = Bot()

            @bot.message()
            async def echo(msg, ctx):
                await msg.reply("echo: " + msg.text)

            raise SystemExit(bot.run())
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sb.user_says(OWNER, "ping")
        wait_until(
            lambda: any(d["text"] == "echo: ping" for d in sb.delivered(OWNER)), 30, "the echo"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out == "", out
    assert "store_dir_permissive" in err
    for line in err.splitlines():  # no info lines (poll started, message handled)
        assert "[info" not in line and '"level": "info"' not in line, err
    json.dumps(err)
