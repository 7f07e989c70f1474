"""``ilinkbot run mybot:bot`` and ``serve --bot mybot:bot`` import ``mybot`` from the
current directory, as ``python -m`` and uvicorn do (issue 13), without ``PYTHONPATH``."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from tests.processes import OWNER, env_for, login, wait_until, write_config

MYBOT = """
from ilinkbot import Bot, filters

bot = Bot()


@bot.message(filters.text)
async def shout(msg, ctx):
    await msg.reply(msg.text.upper())
"""


def console_script() -> str:
    """The installed ``ilinkbot`` command: unlike ``python -m``/``-c`` it does not put the
    current directory on ``sys.path`` by itself."""
    beside = Path(sys.executable).with_name("ilinkbot")
    found = str(beside) if beside.is_file() else shutil.which("ilinkbot")
    assert found, "the ilinkbot command is not installed"
    return found


@pytest.fixture
def server() -> Iterator[tuple[Sandbox, SandboxServer]]:
    sb = Sandbox(longpoll_seconds=0.5, qr_poll_seconds=0.5)
    with SandboxServer(sb) as srv:
        yield sb, srv


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory holding ``mybot.py``, as a user's project would."""
    d = tmp_path / "project"
    d.mkdir()
    (d / "mybot.py").write_text(MYBOT)
    return d


def test_run_imports_a_module_from_the_current_directory(
    server: tuple[Sandbox, SandboxServer], tmp_path: Path, project: Path
) -> None:
    sb, srv = server
    home = tmp_path / "home"
    write_config(home)
    account = login(sb, srv, home)
    env = env_for(home, srv)
    del env["PYTHONPATH"]
    proc = subprocess.Popen(
        [console_script(), "run", "mybot:bot"],
        env=env,
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        sb.user_says(OWNER, "hello", bot_id=account.bot_id)
        wait_until(lambda: sb.delivered() or proc.poll() is not None, 30, "a reply")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert [d["text"] for d in sb.delivered()] == ["HELLO"], err.decode()
    assert proc.returncode == 0


def test_serve_loads_bot_from_the_current_directory(
    server: tuple[Sandbox, SandboxServer], tmp_path: Path, project: Path
) -> None:
    _sb, srv = server
    home = tmp_path / "home"
    write_config(home)
    env = env_for(home, srv)
    del env["PYTHONPATH"]
    proc = subprocess.Popen(
        [console_script(), "--json", "serve", "--port", "0", "--poll", "--bot", "mybot:bot"],
        env=env,
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert first["ok"] is True, first
    assert first["poll"] is True
