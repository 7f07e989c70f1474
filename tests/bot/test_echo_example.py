"""``examples/echo.py`` against the sandbox: media it may not fetch gets its "could not
fetch" answer once, rather than five failed attempts and a dead letter (issue 13)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ilinkbot.bot.config import Config
from ilinkbot.bot.loader import load_bot
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from ilinkbot.testing import no_real_waiting
from tests.conftest import OWNER

from .test_runner import start, wait_for

ECHO = str(Path(__file__).resolve().parents[2] / "examples" / "echo.py")


@pytest.fixture(autouse=True)
def _fast() -> Any:
    with no_real_waiting():
        yield


async def test_echo_example_answers_refused_media_once_and_echoes_the_rest(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    bot = load_bot(ECHO)
    bot.configure(
        config.with_overrides(media_max_bytes=1000), transport=sb.transport(), store=store
    )
    runner, task = await start(bot)
    sb.user_says(OWNER, image=b"\xff\xd8" + b"x" * 5000)  # over the 1000-byte cap
    await wait_for(lambda: len(sb.delivered(OWNER)) == 1)
    sb.user_says(OWNER, file=("notes.txt", b"small enough"))
    await wait_for(lambda: len(sb.delivered(OWNER)) == 2)
    runner.request_stop()
    assert await task == 0
    refused, echoed = sb.delivered(OWNER)
    assert refused["text"] == "I could not fetch that."
    assert echoed["file_name"] == "notes.txt"
    assert store.unhandled(account.bot_id) == []
    assert store.dead_inbox(account.bot_id) == []


async def test_a_transient_cdn_failure_retries_the_handler_instead_of_answering_none(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    bot = load_bot(ECHO)
    bot.configure(config, transport=sb.transport(), store=store)
    sb.queue_faults("cdn_download", ["500"])
    runner, task = await start(bot)
    sb.user_says(OWNER, file=("notes.txt", b"fetched on the second try"))
    await wait_for(lambda: len(sb.delivered(OWNER)) == 1)
    runner.request_stop()
    assert await task == 0
    (echoed,) = sb.delivered(OWNER)
    assert echoed["file_name"] == "notes.txt"
    row = store.get_inbox(1)
    assert row is not None and row.handled and row.attempts == 1  # one failed attempt
