"""``ilinkbot login | status | logout`` against the sandbox over real HTTP, as a subprocess.

The ``cli`` fixture scans every output and file (except the database) for bot tokens
when each test ends.
"""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ilinkbot.bot.exitcodes import Exit
from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from ilinkbot.store import InboundRecord, Store

from .conftest import Cli, qr_count, wait_qr

pytestmark = pytest.mark.timeout(120)


def open_store(home: Path) -> Store:
    return Store.open(None, home=home)


def login(cli: Cli, sb: Sandbox, user: str = "alice@im.wechat") -> dict[str, Any]:
    """A full login through the CLI; returns the sandbox's confirm result."""
    before = qr_count(sb)
    run = cli.start("--json", "login")
    wait_qr(sb, before + 1)
    run.wait_stderr("QR code link:")
    confirmed = sb.confirm(user_id=user)
    res = run.finish()
    assert res.code == Exit.OK, res.stderr
    out = res.json()
    assert out["status"] in ("confirmed", "already_bound")
    return confirmed


# ---------------------------------------------------------------------------- login


def test_login_confirmed_shows_qr_three_ways_and_stores_credentials(
    cli: Cli, sb: Sandbox, srv: SandboxServer, home: Path
) -> None:
    run = cli.start("login")
    code = wait_qr(sb)
    run.wait_stderr("QR code link:")
    err = run.stderr
    assert f"/_sandbox/qr/{code}" in err  # the URL
    assert "▀" in err or "▄" in err  # the terminal drawing
    png = home / "login-qr.png"
    assert f"QR code image: {png}" in err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    sb.scan()
    run.wait_stderr("Scanned")
    confirmed = sb.confirm(user_id="alice@im.wechat")
    res = run.finish()
    assert res.code == Exit.OK, res.stderr
    assert res.stderr.count("Scanned") == 1
    assert confirmed["bot_id"] in res.stdout
    assert "alice@im.wechat" in res.stdout

    with open_store(home) as st:
        acc = st.get_account(confirmed["bot_id"])
        assert acc is not None
        assert acc.token == confirmed["bot_token"]
        assert acc.base_url == srv.base_url
        assert acc.owner_user_id == "alice@im.wechat"
        assert acc.state == "active"
    db = home / "ilinkbot.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_login_json_prints_one_object(cli: Cli, sb: Sandbox, home: Path) -> None:
    run = cli.start("--json", "login", "--png", str(home / "qr" / "code.png"))
    wait_qr(sb)
    run.wait_stderr("QR code link:")
    assert (home / "qr" / "code.png").is_file()
    confirmed = sb.confirm(user_id="bob@im.wechat")
    res = run.finish()
    assert res.code == Exit.OK, res.stderr
    out = res.json()
    assert out["status"] == "confirmed"
    assert out["account"] == confirmed["bot_id"]
    assert out["owner"] == "bob@im.wechat"


def test_verify_code_typed_on_stdin_with_a_wrong_one_first(cli: Cli, sb: Sandbox) -> None:
    run = cli.start("--json", "login")
    wait_qr(sb)
    run.wait_stderr("QR code link:")
    sb.scan()
    run.wait_stderr("Scanned")
    sb.require_verify_code("4711")
    run.wait_stderr("The phone shows a number")
    run.write("1111\n")
    run.wait_stderr("That number was wrong")
    run.write("\n4711\n")  # an empty line is ignored
    run.wait_stderr("Number accepted")
    confirmed = sb.confirm(user_id="carol@im.wechat")
    res = run.finish()
    assert res.code == Exit.OK, res.stderr
    assert res.json()["account"] == confirmed["bot_id"]


def test_verify_code_eof_keeps_the_login_for_resume(cli: Cli, sb: Sandbox) -> None:
    run = cli.start("--json", "login")
    wait_qr(sb)
    run.wait_stderr("QR code link:")
    sb.scan()
    sb.require_verify_code("2468")
    run.wait_stderr("The phone shows a number")
    run.close_stdin()
    res = run.finish()
    assert res.code == Exit.LOGIN_FAILED
    out = res.json()
    assert out["status"] == "need_verifycode"
    assert "--resume" in out["error"]

    resumed = cli.start("--json", "login", "--resume")
    resumed.wait_stderr("The phone shows a number")
    resumed.write("2468\n")
    resumed.wait_stderr("Number accepted")
    confirmed = sb.confirm(user_id="dave@im.wechat")
    res = resumed.finish()
    assert res.code == Exit.OK, res.stderr
    assert res.json()["account"] == confirmed["bot_id"]
    assert qr_count(sb) == 1


def test_verify_code_blocked_fetches_a_new_code(cli: Cli, sb: Sandbox) -> None:
    run = cli.start("--json", "login")
    wait_qr(sb)
    sb.scan()
    sb.require_verify_code("1357")
    run.wait_stderr("The phone shows a number")
    for n in (1, 2, 3):  # the third wrong number blocks the code
        run.write(f"99{n}\n")
        if n < 3:
            run.wait_stderr("That number was wrong", count=n)
    wait_qr(sb, 2)
    run.wait_stderr("New QR code (2 of 3)")
    assert "Too many wrong numbers" in run.stderr
    confirmed = sb.confirm(user_id="erin@im.wechat")
    res = run.finish()
    assert res.code == Exit.OK, res.stderr
    assert res.json()["account"] == confirmed["bot_id"]


def test_redirect_polls_the_other_host(cli: Cli, sb: Sandbox, srv: SandboxServer) -> None:
    run = cli.start("--json", "login")
    wait_qr(sb)
    run.wait_stderr("QR code link:")
    sb.redirect()
    run.wait_stderr(f"following to http://{srv.redirect_host}")
    # Only the redirect host reports the real status from now on.
    confirmed = sb.confirm(user_id="frank@im.wechat")
    res = run.finish()
    assert res.code == Exit.OK, res.stderr
    assert res.json()["account"] == confirmed["bot_id"]


def test_expired_once_then_confirmed_on_the_second_code(cli: Cli, sb: Sandbox) -> None:
    run = cli.start("--json", "login")
    wait_qr(sb)
    run.wait_stderr("QR code link:")
    sb.expire_qr()
    wait_qr(sb, 2)
    run.wait_stderr("QR code link:", count=2)
    sb.confirm(user_id="gina@im.wechat")
    res = run.finish()
    assert res.code == Exit.OK, res.stderr
    assert res.json()["status"] == "confirmed"


def test_three_expiries_then_failure(cli: Cli, sb: Sandbox) -> None:
    run = cli.start("--json", "login")
    for n in (1, 2, 3):
        wait_qr(sb, n)
        run.wait_stderr("QR code link:", count=n)
        sb.expire_qr()
    res = run.finish()
    assert res.code == Exit.LOGIN_FAILED
    out = res.json()
    assert out["ok"] is False
    assert out["status"] == "expired"
    assert qr_count(sb) == 3  # never a fourth code


def test_binded_redirect_keeps_existing_credentials(cli: Cli, sb: Sandbox, home: Path) -> None:
    first = login(cli, sb, "hank@im.wechat")
    run = cli.start("--json", "login")
    wait_qr(sb, 2)
    run.wait_stderr("QR code link:")
    again = sb.confirm(user_id="hank@im.wechat")
    assert again["status"] == "binded_redirect"
    res = run.finish()
    assert res.code == Exit.OK, res.stderr
    out = res.json()
    assert out["status"] == "already_bound"
    assert len(sb.bots()) == 1
    with open_store(home) as st:
        accounts = st.list_accounts()
        assert [a.bot_id for a in accounts] == [first["bot_id"]]
        assert accounts[0].token == first["bot_token"]
        assert accounts[0].state == "active"


def test_overall_timeout(cli: Cli, sb: Sandbox) -> None:
    res = cli.run("--json", "login", "--timeout", "1")
    assert res.code == Exit.LOGIN_FAILED
    assert res.json()["status"] == "timeout"


@pytest.mark.parametrize(
    "args",
    [
        ["login", "--timeout", "-3"],
        ["login", "--timeout", "soon"],
        ["login", "--no-wait", "--resume"],
    ],
)
def test_bad_login_arguments(cli: Cli, args: list[str]) -> None:
    res = cli.run(*args)
    assert res.code == Exit.USAGE
    assert "error" in res.stderr


# ---------------------------------------------------------------------------- no-wait / resume


def test_no_wait_then_resume(cli: Cli, sb: Sandbox, home: Path) -> None:
    res = cli.run("--json", "login", "--no-wait")
    assert res.code == Exit.OK, res.stderr
    out = res.json()
    assert out["status"] == "pending"
    assert Path(out["qr_png"]).is_file()
    code = sb.qr_codes()[-1]["qrcode"]
    assert out["qr_url"].endswith(code)
    with open_store(home) as st:
        pending = st.get_pending_login()
        assert pending is not None and pending.qrcode == code

    sb.scan()
    confirmed = sb.confirm(user_id="ivy@im.wechat")
    res = cli.run("--json", "login", "--resume")
    assert res.code == Exit.OK, res.stderr
    out = res.json()
    assert out == {
        **out,
        "status": "confirmed",
        "account": confirmed["bot_id"],
        "owner": "ivy@im.wechat",
    }
    with open_store(home) as st:
        assert st.get_pending_login() is None
    # Nothing left to resume.
    res = cli.run("--json", "login", "--resume")
    assert res.code == Exit.NOT_FOUND
    assert res.json()["status"] == "no_pending_login"


def test_resume_waits_for_the_scan(cli: Cli, sb: Sandbox) -> None:
    assert cli.run("login", "--no-wait").code == Exit.OK
    run = cli.start("--json", "login", "--resume")
    run.wait_stderr("Resuming")
    sb.scan()
    run.wait_stderr("Scanned")
    sb.confirm(user_id="jack@im.wechat")
    res = run.finish()
    assert res.code == Exit.OK, res.stderr
    assert res.json()["owner"] == "jack@im.wechat"


def test_pending_login_expires_after_five_minutes(cli: Cli, sb: Sandbox, home: Path) -> None:
    assert cli.run("login", "--no-wait").code == Exit.OK
    with open_store(home) as st:
        p = st.get_pending_login()
        assert p is not None
        st.save_pending_login(
            qrcode=p.qrcode,
            qr_url=p.qr_url,
            poll_base=p.poll_base,
            png_path=p.png_path,
            issued_at=datetime.now(UTC) - timedelta(minutes=6),
        )
    res = cli.run("--json", "login", "--resume")
    assert res.code == Exit.LOGIN_FAILED
    assert res.json()["status"] == "expired"
    assert "ilinkbot login" in res.stderr


# ---------------------------------------------------------------------------- status


def test_status_check_after_the_session_expired(cli: Cli, sb: Sandbox, home: Path) -> None:
    confirmed = login(cli, sb, "kate@im.wechat")
    res = cli.run("--json", "status", "--check")
    assert res.code == Exit.OK, res.stderr
    acc = res.json()["accounts"][0]
    assert acc["check"] == "ok" and acc["state"] == "active"

    sb.expire_session(confirmed["bot_id"])
    res = cli.run("status", "--check")
    assert res.code == Exit.SESSION_EXPIRED
    assert "ilinkbot login" in res.stdout
    res = cli.run("--json", "status")
    assert res.code == Exit.OK
    assert res.json()["accounts"][0]["state"] == "expired"
    with open_store(home) as st:
        acc2 = st.get_account(confirmed["bot_id"])
        assert acc2 is not None and acc2.state == "expired"


def test_status_lists_users_with_token_age_and_window(cli: Cli, sb: Sandbox, home: Path) -> None:
    confirmed = login(cli, sb, "liam@im.wechat")
    bot_id = confirmed["bot_id"]
    with open_store(home) as st:
        st.record_batch(
            bot_id,
            [
                InboundRecord(
                    message_id="1",
                    user_id="liam@im.wechat",
                    context_token="ctx-secret-123456",
                    raw={"message_id": 1, "from_user_id": "liam@im.wechat"},
                )
            ],
            "cursor-1",
        )
    res = cli.run("--json", "status")
    assert res.code == Exit.OK, res.stderr
    acc = res.json()["accounts"][0]
    assert acc["account"] == bot_id and acc["owner"] == "liam@im.wechat"
    (user,) = acc["users"]
    assert user["user_id"] == "liam@im.wechat"
    assert 0 <= user["context_token_age_seconds"] < 60
    assert user["window_messages_left"] == 10
    assert 86300 < user["window_seconds_left"] <= 86400
    res = cli.run("status")
    assert "liam@im.wechat" in res.stdout and "10 messages" in res.stdout
    assert "ctx-secret-123456" not in res.stdout + res.stderr


def test_status_without_accounts(cli: Cli) -> None:
    res = cli.run("--json", "status")
    assert res.code == Exit.NO_ACCOUNT
    assert res.json()["accounts"] == []


# ---------------------------------------------------------------------------- logout


def test_logout_asks_unless_yes_and_keeps_history(cli: Cli, sb: Sandbox, home: Path) -> None:
    confirmed = login(cli, sb, "mia@im.wechat")
    bot_id = confirmed["bot_id"]
    with open_store(home) as st:
        st.set_alias(bot_id, "mia@im.wechat", "mia")

    for answer in ("n\n", ""):  # refused, then no answer at all (EOF)
        res = cli.run("logout", input=answer)
        assert res.code == Exit.USAGE
        assert "cancelled" in res.stderr
        with open_store(home) as st:
            acc = st.get_account(bot_id)
            assert acc is not None and acc.state == "active" and acc.token

    res = cli.run("--json", "logout", input="y\n")
    assert res.code == Exit.OK, res.stderr
    assert res.json()["status"] == "logged_out"
    with open_store(home) as st:
        acc = st.get_account(bot_id)
        assert acc is not None and acc.state == "logged_out" and acc.token is None
        assert st.resolve_alias(bot_id, "mia") == "mia@im.wechat"  # history kept
        assert st.local_tokens() == []
    res = cli.run("status")
    assert "logged_out" in res.stdout


def test_logout_yes(cli: Cli, sb: Sandbox, home: Path) -> None:
    confirmed = login(cli, sb, "noah@im.wechat")
    res = cli.run("logout", "--yes", input=None)
    assert res.code == Exit.OK, res.stderr
    assert confirmed["bot_id"] in res.stdout
    res = cli.run("--json", "logout", "--yes")
    assert res.code == Exit.NO_ACCOUNT  # nothing left to log out


# ---------------------------------------------------------------------------- accounts


def test_two_accounts(cli: Cli, sb: Sandbox, home: Path) -> None:
    a = login(cli, sb, "olga@im.wechat")
    b = login(cli, sb, "paul@im.wechat")
    assert a["bot_id"] != b["bot_id"]
    res = cli.run("--json", "status")
    accounts = {x["account"]: x for x in res.json()["accounts"]}
    assert set(accounts) == {a["bot_id"], b["bot_id"]}
    assert accounts[a["bot_id"]]["owner"] == "olga@im.wechat"

    # Destructive and ambiguous: refuse to guess.
    res = cli.run("--json", "logout", "--yes")
    assert res.code == Exit.NO_ACCOUNT
    assert "--account" in res.json()["error"]

    norm = a["bot_id"].replace("@im.bot", "-im-bot")
    res = cli.run("--json", "status", "--account", norm)
    assert [x["account"] for x in res.json()["accounts"]] == [a["bot_id"]]
    res = cli.run("--json", "logout", "--account", norm, "--yes")
    assert res.code == Exit.OK, res.stderr
    assert res.json()["account"] == a["bot_id"]
    with open_store(home) as st:
        state = {x.bot_id: x.state for x in st.list_accounts()}
    assert state == {a["bot_id"]: "logged_out", b["bot_id"]: "active"}

    res = cli.run("logout", "--account", "nobody@im.bot", "--yes")
    assert res.code == Exit.NO_ACCOUNT
    assert "nobody@im.bot" in res.stderr


def test_same_owner_login_again_logs_the_older_bot_out(cli: Cli, sb: Sandbox, home: Path) -> None:
    first = login(cli, sb, "zoe@im.wechat")["bot_id"]
    sb.expire_session(first)  # a live token would be recognised: binded_redirect
    second = login(cli, sb, "zoe@im.wechat")["bot_id"]
    assert first != second
    store = open_store(home)
    try:
        states = {a.bot_id: a.state for a in store.list_accounts()}
    finally:
        store.close()
    assert states[second] == "active"
    assert states[first] == "logged_out"
