"""``ilinkbot run BOT --sandbox``: the newcomer's first command, fed through a pipe (run
in-process through ``main``)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.clirun import run_cli

ROOT = Path(__file__).resolve().parents[2]


def test_echo_bot_in_the_sandbox_answers_text_images_and_files(tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "red.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(png)
    doc = tmp_path / "notes.txt"
    doc.write_text("hello file")
    env = {**os.environ, "ILINKBOT_HOME": str(tmp_path / "home")}
    lines = f"hello\n/help\n/image {png}\n/file {doc}\nlast words\n"
    proc = run_cli(env, "run", "examples/echo.py", "--sandbox", stdin=lines, cwd=ROOT)
    assert proc.code == 0, proc.stderr
    replies = [line for line in proc.stdout.splitlines() if line.startswith("bot › ")]
    import hashlib

    assert replies[0] == "bot › hello"
    assert replies[1].startswith("bot › I repeat")
    assert (
        replies[2].startswith("bot › [image")
        and hashlib.sha256(png.read_bytes()).hexdigest()[:12] in replies[2]
    )
    assert replies[3].startswith("bot › [file notes.txt")
    assert replies[4] == "bot › last words"
    assert len(replies) == 5
    # the sandbox run leaves nothing in the user's real state directory
    assert not (tmp_path / "home" / "ilinkbot.db").exists()


def test_run_accepts_module_attr_and_examples_load(tmp_path: Path) -> None:
    env = {**os.environ, "ILINKBOT_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = run_cli(env, "run", "tests.bots.echo_bot:bot", "--sandbox", stdin="ping\n", cwd=ROOT)
    assert proc.code == 0, proc.stderr
    assert "bot › echo: ping" in proc.stdout
    from ilinkbot.bot.app import Bot
    from ilinkbot.bot.loader import load_bot

    reminder = load_bot(str(ROOT / "examples" / "reminder.py"))
    assert isinstance(reminder, Bot) and [j.cron for j in reminder.jobs] == ["0 9 * * *"]


def test_run_without_account_is_a_clear_error_not_a_qr(tmp_path: Path) -> None:
    env = {**os.environ, "ILINKBOT_HOME": str(tmp_path), "ILINKBOT_BASE_URL": "http://127.0.0.1:9"}
    proc = run_cli(env, "run", "examples/echo.py", cwd=ROOT)
    assert proc.code == 8
    assert "ilinkbot login" in proc.stderr and "█" not in proc.stdout + proc.stderr
