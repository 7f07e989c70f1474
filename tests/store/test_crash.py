"""Crash safety: SIGKILL a process while it records getupdates batches, then reopen.

The worker (``_workers.crash_worker``) records batches of consecutive message numbers with the
cursor ``msg-<last number of the batch>``. Whatever instant the kill lands on, the reopened store
must hold exactly the messages 0..N where N is the number the cursor names: the cursor never
points past a message that is not in the inbox, and no half batch is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text

from ilinkbot.store import Store
from ilinkbot.store.models import inbox

from ._workers import CRASH_BATCH

ROOT = Path(__file__).resolve().parents[2]
BOT = "crash@im.bot"
ROUNDS = 3


def _kill_mid_batch(url: str, store: Store, min_messages: int, log: Path) -> None:
    with log.open("ab") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.store._workers", "crash", url, BOT],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "ready", or EOF if the worker died
        assert line.strip() == b"ready", log.read_text()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            cursor = store.get_cursor(BOT)
            if cursor and int(cursor.split("-")[1]) + 1 >= min_messages:
                break
            assert proc.poll() is None, log.read_text()
            time.sleep(0.02)
        else:
            pytest.fail("the crash worker made no progress")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_sigkill_while_recording_batches(db_url: str, tmp_path: Path) -> None:
    store = Store.open(db_url)
    try:
        store.save_account(BOT, token="t", base_url=None, owner_user_id=None)
        url = store.engine.url.render_as_string(hide_password=False)
        for round_ in range(1, ROUNDS + 1):
            _kill_mid_batch(url, store, round_ * 30 * CRASH_BATCH, tmp_path / "worker.log")
            reopened = Store.open(url)
            try:
                cursor = reopened.get_cursor(BOT)
                last = int(cursor.split("-")[1])
                with reopened.engine.connect() as conn:
                    ids = conn.execute(
                        select(inbox.c.message_id).where(inbox.c.bot_id == BOT)
                    ).scalars()
                    numbers = sorted(int(i) for i in ids)
                    if reopened.dialect == "sqlite":
                        check = conn.execute(text("PRAGMA integrity_check")).scalar_one()
                        assert check == "ok"
                # every message up to the cursor is there, and nothing beyond it
                assert numbers == list(range(last + 1)), (round_, last, len(numbers))
                assert (last + 1) % CRASH_BATCH == 0
                assert len(reopened.unhandled(BOT)) == last + 1
            finally:
                reopened.close()
    finally:
        store.close()
