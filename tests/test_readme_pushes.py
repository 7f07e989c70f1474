"""Every ``ilinkbot`` line of the README's "Pushes" section runs as printed (issue 13).

The lines are read from README.md and run by bash against the sandbox, adapted only
through the environment (``ILINKBOT_HOME``, ``ILINKBOT_BASE_URL``, ...): a README example
that does not work, or does something else than it says, fails here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from ilinkbot.bot.payloads import text_payloads
from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from ilinkbot.store import Store

from .processes import OWNER, ROOT, env_for, login, write_config

BOB = "bob@im.wechat"


def pushes_block(kind: str) -> list[str]:
    """The lines of the first ```KIND block under "## Pushes"."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Pushes\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(rf"```{kind}\n(.*?)```", section, re.S)
    assert block, f"the Pushes section has no {kind} block"
    return [ln for ln in block.group(1).splitlines() if ln.strip()]


def pushes_lines() -> list[str]:
    lines = pushes_block("sh")
    assert all("ilinkbot " in ln for ln in lines), lines
    return lines


def shim(bin_dir: Path) -> Path:
    """An ``ilinkbot`` executable that runs this checkout's CLI."""
    bin_dir.mkdir()
    path = bin_dir / "ilinkbot"
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ilinkbot.bot.cli "$@"\n')
    path.chmod(0o755)
    return path


def test_readme_pushes_lines_run_as_printed(tmp_path: Path) -> None:
    lines = pushes_lines()
    sb = Sandbox(longpoll_seconds=0.3, qr_poll_seconds=0.3)
    with SandboxServer(sb) as srv:
        home = tmp_path / "home"
        write_config(home)
        account = login(sb, srv, home)
        sb.user_says(OWNER, "hi")
        sb.user_says(BOB, "hi")
        # `ilinkbot` on PATH is this checkout's CLI; plot.png is in the working directory
        bin_dir = shim(tmp_path / "bin").parent
        work = tmp_path / "work"
        work.mkdir()
        (work / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
        env = {**env_for(home, srv), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

        store = Store.open(None, home=home)
        try:
            store.set_alias(account.bot_id, BOB, "alice")
            outputs: list[str] = []
            for line in lines:
                if "outbox retry 17" in line:
                    _rows_17_and_18_held(store, account.bot_id)
                r = subprocess.run(
                    ["bash", "-c", line],
                    env=env,
                    cwd=work,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert r.returncode == 0, (line, r.stdout, r.stderr)
                outputs.append(r.stdout)
            rows = {r.id: r.state.value for r in store.list_outbox(account.bot_id)}
        finally:
            store.close()

    to_owner = sb.delivered(OWNER)
    texts = [d.get("text") for d in to_owner]
    assert texts[0] == "disk almost full"
    assert [d["text"] for d in sb.delivered(BOB)] == ["CI\n\nbuild #42 red"]
    report = next(t for t in texts if t and t.startswith("disk report"))
    assert report.startswith("disk report\n\nFilesystem"), report  # df's output, not just the title
    assert "today" in texts and [d["kind"] for d in to_owner].count("image") == 1
    sent_json = next(o for o in outputs if o.startswith("{"))
    assert json.loads(sent_json)["state"] == "delivered" and "hi" in texts
    assert texts[-1] == "held 17"  # retried and delivered
    assert rows[17] == "sent" and rows[18] == "dead"


def stored(text: str) -> list[dict[str, object]]:
    return [p.to_json() for p in text_payloads(text)]


def _rows_17_and_18_held(store: Store, bot_id: str) -> None:
    """The state the README's outbox example assumes: rows 17 and 18 held."""
    filler = "carol@im.wechat"
    while max((r.id for r in store.list_outbox(bot_id)), default=0) < 16:
        (row,) = store.enqueue(bot_id, filler, stored("filler"))
        store.drop_outbox(row.id)
    held = store.enqueue(bot_id, OWNER, stored("held 17"), state="held")
    held += store.enqueue(bot_id, OWNER, stored("held 18"), state="held")
    assert [r.id for r in held] == [17, 18]


def test_readme_cron_line_runs_with_the_installed_path(tmp_path: Path) -> None:
    """The cron entry's command, as cron runs it (no terminal, stdin empty); adapted also for
    the two paths the README says are yours: the installed ``ilinkbot`` and the lock file."""
    (entry,) = [ln for ln in pushes_block("cron") if "ilinkbot send" in ln]
    command = entry.split(None, 5)[5]  # after the five schedule fields
    exe = shim(tmp_path / "bin")
    command = command.replace("/home/you/ilinkbot/.venv/bin/ilinkbot", str(exe))
    command = command.replace("/tmp/ilinkbot-report.lock", str(tmp_path / "report.lock"))
    assert str(exe) in command and "flock -n" in command
    sb = Sandbox(longpoll_seconds=0.3, qr_poll_seconds=0.3)
    with SandboxServer(sb) as srv:
        home = tmp_path / "home"
        write_config(home)
        login(sb, srv, home)
        sb.user_says(OWNER, "hi")
        r = subprocess.run(
            ["/bin/sh", "-c", command],
            env=env_for(home, srv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert r.returncode == 0, r.stderr
    assert [d["text"] for d in sb.delivered(OWNER)] == [
        "Daily report\n\nready at https://intranet/report"
    ]
