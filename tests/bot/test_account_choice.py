"""With several accounts a push never guesses (issue 13): ``ilinkbot send`` and
``send_to_wechat()`` refuse unless ``--account`` or a stored default names one;
``ilinkbot accounts`` shows and sets that default, and ``status`` shows it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ilinkbot.bot.config import Config
from ilinkbot.bot.errors import AccountError
from ilinkbot.bot.exitcodes import Exit
from ilinkbot.bot.push import send_to_wechat
from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from ilinkbot.store import Store
from ilinkbot.testing import no_real_waiting, sandbox_login
from tests.clirun import run_cli
from tests.processes import env_for, login, write_config

OWNER = "owner@im.wechat"
BOSS = "boss@im.wechat"


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Sandbox, Any, Any, dict[str, str], Path]]:
    """Two logged-in accounts with different owners, both of whom wrote to their bot."""
    sb = Sandbox(longpoll_seconds=0.3, qr_poll_seconds=0.3)
    with SandboxServer(sb) as srv:
        home = tmp_path / "home"
        write_config(home)
        first = login(sb, srv, home)
        store = Store.open(None, home=home)
        try:
            second = asyncio.run(sandbox_login(sb, store, owner=BOSS, base_url=srv.base_url))
        finally:
            store.close()
        sb.user_says(OWNER, "hi", bot_id=first.bot_id)
        sb.user_says(BOSS, "hi", bot_id=second.bot_id)
        yield sb, first, second, env_for(home, srv), home


def delivered(sb: Sandbox) -> list[tuple[str, str, str]]:
    return [(d["bot_id"], d["user_id"], d["text"]) for d in sb.delivered()]


def test_send_refuses_to_guess_until_a_default_is_set(two: Any) -> None:
    sb, first, second, env, _home = two
    r = run_cli(env, "send", "for whom?")
    assert r.code == 8, r.stderr
    assert "several accounts" in r.stderr and "accounts default" in r.stderr
    assert delivered(sb) == []

    r = run_cli(env, "accounts", "--json")
    listed = json.loads(r.stdout)
    assert r.code == 0 and listed["default"] is None
    assert {a["account"] for a in listed["accounts"]} == {first.bot_id, second.bot_id}

    normalised = first.bot_id.replace("@", "-").replace(".", "-")
    r = run_cli(env, "accounts", "default", normalised)
    assert r.code == 0, r.stderr
    assert run_cli(env, "accounts", "default").stdout.strip() == first.bot_id
    r = run_cli(env, "accounts")
    (marked,) = [line for line in r.stdout.splitlines() if line.startswith("*")]
    assert first.bot_id in marked

    assert run_cli(env, "send", "to the default").code == 0
    assert run_cli(env, "send", "--account", second.bot_id, "named").code == 0
    assert delivered(sb) == [
        (first.bot_id, OWNER, "to the default"),
        (second.bot_id, BOSS, "named"),
    ]

    status = json.loads(run_cli(env, "status", "--json").stdout)  # reading lists both
    flags = {a["account"]: a["default"] for a in status["accounts"]}
    assert flags == {first.bot_id: True, second.bot_id: False}
    assert "(default for pushes)" in run_cli(env, "status").stdout

    assert run_cli(env, "accounts", "default", "--clear").code == 0
    assert run_cli(env, "send", "guess again?").code == 8
    assert run_cli(env, "accounts", "default", "nope@im.bot").code == 8
    assert len(delivered(sb)) == 2


def test_a_logged_out_default_is_an_error_not_a_fallback(two: Any) -> None:
    sb, first, second, env, _home = two
    assert run_cli(env, "accounts", "default", first.bot_id).code == 0
    assert run_cli(env, "logout", "--account", first.bot_id, "--yes").code == 0
    r = run_cli(env, "send", "must not reach the boss")
    assert r.code == 8, r.stderr
    assert f"the default account {first.bot_id} is logged out" in r.stderr
    assert delivered(sb) == []
    # pushes the other account by name still work
    assert run_cli(env, "send", "--account", second.bot_id, "ok").code == 0


def test_send_to_wechat_raises_on_ambiguity(sb: Sandbox, config: Config, store: Store) -> None:
    first = asyncio.run(sandbox_login(sb, store, owner=OWNER))
    second = asyncio.run(sandbox_login(sb, store, owner=BOSS))
    sb.user_says(OWNER, "hi", bot_id=first.bot_id)
    sb.user_says(BOSS, "hi", bot_id=second.bot_id)
    with no_real_waiting():
        with pytest.raises(AccountError, match="several accounts"):
            send_to_wechat("for whom?", config=config, transport=sb.transport())
        assert sb.delivered() == []
        store.set_default_account(second.bot_id)
        result = send_to_wechat("to the default", config=config, transport=sb.transport())
    assert result.state == "delivered"
    assert delivered(sb) == [(second.bot_id, BOSS, "to the default")]


def test_an_expired_default_is_a_session_error_naming_it(
    sb: Sandbox, config: Config, store: Store
) -> None:
    first = asyncio.run(sandbox_login(sb, store, owner=OWNER))
    second = asyncio.run(sandbox_login(sb, store, owner=BOSS))
    sb.user_says(OWNER, "hi", bot_id=first.bot_id)
    store.set_default_account(second.bot_id)
    store.set_account_state(second.bot_id, "expired")
    with no_real_waiting(), pytest.raises(AccountError) as caught:
        send_to_wechat("must not reach the owner", config=config, transport=sb.transport())
    assert caught.value.exit_code == Exit.SESSION_EXPIRED
    assert f"the default account {second.bot_id}: the session expired" in str(caught.value)
    assert sb.delivered() == []
