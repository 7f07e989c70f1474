"""``ilinkbot send`` and ``ilinkbot outbox`` as a user runs them: subprocesses against the
sandbox over real HTTP, exit codes as documented in the README."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from ilinkbot.store import Store
from tests.clirun import run_cli
from tests.processes import env_for, login, start_runner, wait_until, write_config

ROOT = Path(__file__).resolve().parents[3]
OWNER = "owner@im.wechat"


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Sandbox, SandboxServer, Path, Any, dict[str, str]]]:
    sb = Sandbox(longpoll_seconds=0.5, qr_poll_seconds=0.5)
    with SandboxServer(sb) as srv:
        home = tmp_path / "home"
        write_config(home)
        account = login(sb, srv, home)
        yield sb, srv, home, account, env_for(home, srv)


def test_exit_codes_delivered_held_unconfirmed_nocontext(setup: Any) -> None:
    sb, _srv, _home, _account, env = setup
    r = run_cli(env, "send", "nobody wrote yet")
    assert r.code == 5, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ilinkbot: ") and "never written" in last

    sb.user_says(OWNER, "hi")
    r = run_cli(env, "send", "--json", "hello")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["state"] == "delivered" and out["message_ids"][0]
    assert [d["text"] for d in sb.delivered(OWNER)] == ["hello"]

    r = run_cli(env, "send", "-t", "Report", "-", stdin="line 1\nline 2\n")
    assert r.code == 0
    assert sb.delivered(OWNER)[-1]["text"] == "Report\n\nline 1\nline 2\n"

    sb.configure(omit_message_id=True)
    r = run_cli(env, "send", "--json", "maybe")
    assert r.code == 4 and json.loads(r.stdout)["state"] == "unconfirmed"
    sb.configure(omit_message_id=False)

    for i in range(7):  # 3 used so far (incl. the unconfirmed one): fill the quota of 10
        assert run_cli(env, "send", f"fill {i}").code == 0
    r = run_cli(env, "send", "--json", "eleventh")
    assert r.code == 3, r.stderr
    held = json.loads(r.stdout)
    assert held["state"] == "held" and held["message_ids"] == [None]

    r = run_cli(env, "outbox", "--state", "held", "--json")
    rows = json.loads(r.stdout)["rows"]
    assert [row["preview"] for row in rows] == ["eleventh"]

    sb.user_says(OWNER, "back")
    r = run_cli(env, "send", "after")  # its catch-up pass sees the user and releases first
    assert r.code == 0
    assert [d["text"] for d in sb.delivered(OWNER)][-2:] == ["eleventh", "after"]


def test_usage_errors_and_unknown_recipient(setup: Any) -> None:
    sb, _srv, _home, _account, env = setup
    sb.user_says(OWNER, "hi")
    assert run_cli(env, "send", "--to", "nobody", "x").code == 10
    assert run_cli(env, "send", "--image", "/no/such.png").code == 10
    assert run_cli(env, "send", "--bogus").code == 2
    r = run_cli(env, "send", "--account", "nope@im.bot", "x")
    assert r.code == 8 and "no account" in r.stderr
    assert sb.delivered() == []


def cli_login(sb: Sandbox, env: dict[str, str], owner: str = OWNER) -> str:
    """``ilinkbot login`` as a user runs it; the phone confirms. Returns the new bot id."""
    issued = len(sb.qr_codes())
    with ThreadPoolExecutor(1) as pool:  # in-process, beside the phone that confirms
        login_env = {**env, "ILINKBOT_QR_POLL_INTERVAL": "0.05"}
        running = pool.submit(run_cli, login_env, "--json", "login")
        wait_until(lambda: len(sb.qr_codes()) > issued, 30, "a QR code")
        confirmed = sb.confirm(user_id=owner)
        r = running.result(timeout=60)
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "confirmed"
    bot_id: str = confirmed["bot_id"]
    return bot_id


def outbox_rows(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    r = run_cli(env, "outbox", "--json", *args)
    assert r.code == 0, r.stderr
    rows: list[dict[str, Any]] = json.loads(r.stdout)["rows"]
    return rows


def test_a_title_does_not_swallow_the_piped_body(setup: Any) -> None:
    sb, _srv, _home, _account, env = setup
    sb.user_says(OWNER, "hi")
    report = "Filesystem  Size  Use%\n/dev/sda1    40G   91%\n"
    r = run_cli(env, "send", "-t", "disk report", stdin=report)  # df -h | ilinkbot send -t ...
    assert r.code == 0, r.stderr
    assert sb.delivered(OWNER)[-1]["text"] == "disk report\n\n" + report
    r = run_cli(env, "send", "-t", "only a title", stdin="")  # an empty pipe: the title alone
    assert r.code == 0, r.stderr
    assert sb.delivered(OWNER)[-1]["text"] == "only a title"
    assert run_cli(env, "send", stdin="").code == 2  # nothing at all: a usage error


def test_text_that_is_not_utf8_goes_out_with_replacement_characters(setup: Any) -> None:
    sb, _srv, home, account, env = setup
    sb.user_says(OWNER, "hi")
    cmd = [sys.executable.encode(), b"-m", b"ilinkbot.bot.cli", b"send"]
    runs = [
        subprocess.run([*cmd, b"caf\xe9"], env=env, capture_output=True, cwd=ROOT, timeout=90),
        subprocess.run(
            [*cmd, b"-t", b"\xffdisk"],
            input=b"disk \xff full\n",
            env=env,
            capture_output=True,
            cwd=ROOT,
            timeout=90,
        ),
    ]
    for r in runs:
        assert r.returncode == 0, r.stderr
        assert b"text_not_utf8" in r.stderr  # the warning
        assert b"delivered" in r.stdout
    assert [d["text"] for d in sb.delivered(OWNER)] == [
        "caf\ufffd",
        "\ufffddisk\n\ndisk \ufffd full\n",
    ]
    store = Store.open(None, home=home)
    try:
        assert [r.state.value for r in store.list_outbox(account.bot_id)] == ["sent", "sent"]
    finally:
        store.close()


def test_session_expired_keeps_the_message(setup: Any) -> None:
    sb, _srv, home, account, env = setup
    sb.user_says(OWNER, "hi")
    assert run_cli(env, "users", "alias", "boss", OWNER).code == 0
    assert run_cli(env, "send", "first").code == 0
    sb.expire_session()
    r = run_cli(env, "send", "--json", "--to", "boss", "second")  # the cron job meets -14
    assert r.code == 6, r.stderr
    out = json.loads(r.stdout)
    assert out["state"] == "session_expired" and out["exit_code"] == 6
    assert "ilinkbot login" in out["messages"][0]["reason"]
    # the next cron run, with the account now known to be expired: kept too, no network
    r = run_cli(env, "send", "--json", "third")
    assert r.code == 6, r.stderr
    assert json.loads(r.stdout)["state"] == "session_expired"
    # kept, and visible
    rows = outbox_rows(env, "--state", "session_expired")
    assert [(row["preview"], row["account"]) for row in rows] == [
        ("second", account.bot_id),
        ("third", account.bot_id),
    ]
    store = Store.open(None, home=home)
    try:
        assert store.get_account(account.bot_id).state == "expired"
    finally:
        store.close()

    # The owner logs in again: the kept message waits on the new bot, held, with the alias.
    new_bot = cli_login(sb, env)
    assert new_bot != account.bot_id
    rows = outbox_rows(env)
    assert [(row["preview"], row["state"], row["account"]) for row in rows] == [
        ("first", "sent", account.bot_id),
        ("second", "held", new_bot),
        ("third", "held", new_bot),
    ]
    assert sb.delivered(OWNER)[-1]["text"] == "first"
    # the owner writes to the new bot; the next send delivers the kept one first, in order
    sb.user_says(OWNER, "back", bot_id=new_bot)
    r = run_cli(env, "send", "--json", "--to", "boss", "fourth")
    assert r.code == 0, r.stderr
    got = [(d["bot_id"], d["text"]) for d in sb.delivered(OWNER)]
    assert got == [
        (account.bot_id, "first"),
        (new_bot, "second"),
        (new_bot, "third"),
        (new_bot, "fourth"),
    ]
    assert sb.violations() == []


@pytest.mark.parametrize(
    "how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"]
)
def test_an_interrupted_send_does_not_hold_up_the_next_one(setup: Any, how: int) -> None:
    sb, _srv, home, account, env = setup
    write_config(home, send_lease_seconds=60)  # the default lease: nothing waits it out
    sb.user_says(OWNER, "hi")
    assert run_cli(env, "send", "warm up").code == 0
    sb.queue_faults("sendmessage", ["delay:20"])  # the next send hangs on the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "ilinkbot.bot.cli", "send", "slow"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    store = Store.open(None, home=home)
    try:

        def slow_row() -> Any:
            rows = [
                r
                for r in store.list_outbox(account.bot_id)
                if r.payload["item"]["text_item"]["text"] == "slow"
            ]
            return rows[0] if rows else None

        wait_until(lambda: (row := slow_row()) is not None and row.state == "sending", 30, "claim")
        time.sleep(0.3)  # the request is on its way
        proc.send_signal(how)
        _out, err = proc.communicate(timeout=30)
        if how == signal.SIGKILL:
            assert slow_row().state == "sending"  # left claimed: its holder is gone
        else:
            assert proc.returncode == 130, err
            assert "interrupted" in err
            assert slow_row().state == "pending"  # released before exiting
        started = time.monotonic()
        r = run_cli(env, "send", "--json", "next")  # the next cron run
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        store.close()
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "delivered"
    assert took < 15  # no wait for the 60 s lease (was ~33 s, then exit 7)
    texts = [d["text"] for d in sb.delivered(OWNER)]
    assert texts == ["warm up", "slow", "next"]


def test_outbox_retry_and_drop(setup: Any) -> None:
    sb, _srv, _home, _account, env = setup
    sb.user_says(OWNER, "hi")
    sb.queue_faults("sendmessage", ["500"] * 4)
    r = run_cli(env, "send", "--json", "flaky")
    assert r.code == 7
    row_id = json.loads(r.stdout)["messages"][0]["id"]
    assert sb.delivered() == []
    r = run_cli(env, "outbox", "retry", str(row_id), "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "delivered"
    assert [d["text"] for d in sb.delivered()] == ["flaky"]
    assert run_cli(env, "outbox", "retry", "999").code == 10
    sb.queue_faults("sendmessage", ["500"] * 4)
    r = run_cli(env, "send", "--json", "give up")
    row_id = json.loads(r.stdout)["messages"][0]["id"]
    assert run_cli(env, "outbox", "drop", str(row_id)).code == 0
    r = run_cli(env, "outbox", "--json")
    states = {row["preview"]: row["state"] for row in json.loads(r.stdout)["rows"]}
    assert states == {"flaky": "sent", "give up": "dead"}


def test_send_while_a_poller_runs_in_another_process(setup: Any, tmp_path: Path) -> None:
    sb, _srv, home, account, env = setup
    proc = start_runner(env, tmp_path / "runner.log")
    try:
        store = Store.open(None, home=home)
        try:
            wait_until(lambda: store.lease_holder(account.bot_id) is not None, 20, "poller")
            sb.user_says(OWNER, "hello runner")
            wait_until(lambda: len(sb.delivered(OWNER)) == 1, 20, "echo")
        finally:
            store.close()
        r = run_cli(env, "--log-json", "--log-level", "debug", "send", "--json", "from cron")
        assert r.code == 0, r.stderr
        assert json.loads(r.stdout)["state"] == "delivered"
        calls = [
            json.loads(line).get("endpoint")
            for line in r.stderr.splitlines()
            if line.startswith("{") and "ilink_call" in line
        ]
        assert "sendmessage" in calls and "getupdates" not in calls
        sb.user_says(OWNER, "still polled")
        wait_until(lambda: len(sb.delivered(OWNER)) == 3, 20, "second echo")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert [d["text"] for d in sb.delivered(OWNER)] == [
        "echo: hello runner",
        "from cron",
        "echo: still polled",
    ]


def test_send_to_wechat_python_api(setup: Any) -> None:
    sb, _srv, _home, _account, env = setup
    sb.user_says(OWNER, "hi")
    code = (
        "import json; from ilinkbot import send_to_wechat\n"
        "r = send_to_wechat('from python', title='T')\n"
        "print(json.dumps(r.to_dict()))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["state"] == "delivered"
    assert sb.delivered(OWNER)[-1]["text"] == "T\n\nfrom python"
    time.sleep(0)


def test_send_media_files_arrive_byte_for_byte(setup: Any, tmp_path: Path) -> None:
    import hashlib

    sb, _srv, home, account, env = setup
    sb.user_says(OWNER, "hi")
    image = tmp_path / "chart.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    doc = tmp_path / "report.pdf"
    doc.write_bytes(b"%PDF-1.4 " + b"x" * 5000)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"v" * 3000)
    assert run_cli(env, "send", "--image", str(image), "--caption", "today").code == 0
    assert run_cli(env, "send", "--file", str(doc)).code == 0
    r = run_cli(env, "send", "--json", "--video", str(video))
    assert r.code == 0, r.stderr
    got = sb.delivered(OWNER)
    assert [d["kind"] for d in got] == ["text", "image", "file", "video"]
    assert got[0]["text"] == "today"
    for d, f in zip(got[1:], (image, doc, video), strict=True):
        assert d["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    assert got[2]["file_name"] == "report.pdf"
    assert sb.violations() == []
    # the upload result is kept with the row, without the key appearing in any output
    store = Store.open(None, home=home)
    try:
        rows = store.list_outbox(account.bot_id)
    finally:
        store.close()
    uploads = [r.payload["media"]["upload"] for r in rows if "media" in r.payload]
    assert len(uploads) == 3 and all(uploads)
    for up in uploads:
        key = next(v for k, v in up.items() if "key" in k and isinstance(v, str))
        assert key not in r.stdout + r.stderr
