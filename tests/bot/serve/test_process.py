"""``ilinkbot serve`` as a real process, and ``ilinkbot users`` in-process, against the
sandbox over HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from ilinkbot.store import Store
from ilinkbot.testing import sandbox_login
from tests.clirun import run_cli
from tests.conftest import OWNER

ROOT = Path(__file__).resolve().parents[3]
ALICE = "alice@im.wechat"


@pytest.fixture
def server() -> Iterator[tuple[Sandbox, SandboxServer]]:
    sb = Sandbox(longpoll_seconds=0.5, qr_poll_seconds=0.5)
    with SandboxServer(sb) as srv:
        yield sb, srv


@pytest.fixture
def env(tmp_path: Path, server: tuple[Sandbox, SandboxServer]) -> dict[str, str]:
    _sb, srv = server
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "config.json").write_text(json.dumps({"poll_lease_seconds": 3}))
    out = {k: v for k, v in os.environ.items() if not k.startswith("ILINKBOT_")}
    out.update(
        ILINKBOT_HOME=str(home),
        ILINKBOT_BASE_URL=srv.base_url,
        ILINKBOT_CDN_BASE_URL=srv.cdn_base_url,
        ILINKBOT_QR_POLL_INTERVAL="0.05",
        PYTHONPATH=str(ROOT),
    )
    return out


def login(sb: Sandbox, srv: SandboxServer, home: Path) -> Any:
    store = Store.open(None, home=home)
    try:
        return asyncio.run(sandbox_login(sb, store, owner=OWNER, base_url=srv.base_url))
    finally:
        store.close()


def wait_until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Serving:
    """``ilinkbot serve --port 0 --json`` in the background; stdout's one JSON object tells
    the address."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ilinkbot.bot.cli", "--json", "serve", "--port", "0", *args],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.stderr: list[bytes] = []
        threading.Thread(target=self._drain, daemon=True).start()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line:
            self.proc.wait(10)
            raise AssertionError(f"serve did not start: {b''.join(self.stderr).decode()}")
        self.info = json.loads(line)
        self.url: str = self.info["url"]

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for chunk in iter(lambda: self.proc.stderr.readline(), b""):  # type: ignore[union-attr]
            self.stderr.append(chunk)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(20)
        assert self.proc.stdout is not None
        rest = self.proc.stdout.read().decode()
        assert rest.strip() == "", f"more than one JSON object on stdout: {rest!r}"
        return code

    def output(self) -> str:
        return b"".join(self.stderr).decode(errors="replace")


def token_of(env: dict[str, str]) -> str:
    r = run_cli(env, "serve", "--show-token", "--json")
    assert r.code == 0, r.stderr
    return str(json.loads(r.stdout)["token"])


def test_show_token_makes_one_0600_token_and_keeps_it(env: dict[str, str]) -> None:
    r = run_cli(env, "serve", "--show-token", "--json")
    assert r.code == 0, r.stderr
    first = json.loads(r.stdout)
    assert first["created"] is True and first["token"].startswith("ilk_")
    path = Path(first["path"])
    assert path.stat().st_mode & 0o777 == 0o600
    again = json.loads(run_cli(env, "serve", "--show-token", "--json").stdout)
    assert again["token"] == first["token"] and again["created"] is False
    human = run_cli(env, "serve", "--show-token")
    assert human.stdout.strip() == first["token"]


def test_users_alias_list_and_unalias(
    env: dict[str, str], server: tuple[Sandbox, SandboxServer]
) -> None:
    sb, srv = server
    home = Path(env["ILINKBOT_HOME"])
    acc = login(sb, srv, home)
    r = run_cli(env, "--json", "users", "alias", "alice", ALICE)
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["alias"] == "alice" and out["user_id"] == ALICE and "not written" in out["note"]
    r = run_cli(env, "--json", "users")
    users = json.loads(r.stdout)["users"]
    assert [(u["alias"], u["user_id"]) for u in users] == [("alice", ALICE)]
    bad = run_cli(env, "--json", "users", "alias", "bob", "bob")
    assert bad.code == 2 and "user ids look like" in json.loads(bad.stdout)["error"]
    bad = run_cli(env, "--json", "users", "alias", "a/b", ALICE)
    assert bad.code == 2
    taken = run_cli(env, "--json", "users", "alias", "alice", "carol@im.wechat")
    assert taken.code == 2 and "already names" in json.loads(taken.stdout)["error"]
    r = run_cli(env, "--json", "users", "--account", acc.bot_id, "unalias", "alice")
    assert r.code == 0 and json.loads(r.stdout)["removed"] is True
    r = run_cli(env, "users", "unalias", "alice")
    assert r.code == 10 and "no alias" in r.stderr


def test_serve_pushes_over_http_and_stops_cleanly(
    env: dict[str, str], server: tuple[Sandbox, SandboxServer]
) -> None:
    sb, srv = server
    home = Path(env["ILINKBOT_HOME"])
    acc = login(sb, srv, home)
    token = token_of(env)
    assert run_cli(env, "users", "alias", "alice", ALICE).code == 0
    sb.user_says(OWNER, "hi")
    sb.user_says(ALICE, "hello")
    serving = Serving(env)
    try:
        assert serving.info["url"].startswith("http://127.0.0.1:")
        assert serving.info["poll"] is False
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=serving.url, timeout=20) as http:
            assert http.post("/push", content=b"no token").status_code == 401
            r = http.post("/push", content=b"build passed", headers={**auth, "Title": "CI"})
            assert r.status_code == 200, r.text
            assert r.json()["state"] == "delivered"
            r = http.put(
                f"/push/alice?auth={token}",
                content=b"col1,col2\n1,2\n",
                headers={"Filename": "data.csv"},
            )
            assert r.status_code == 200, r.text
            r = http.post("/push/nobody", content=b"x", headers=auth)
            assert r.status_code == 404
    finally:
        code = serving.stop()
    assert code == 0, serving.output()
    assert sb.delivered(OWNER)[0]["text"] == "CI\n\nbuild passed"
    (got,) = sb.delivered(ALICE)
    assert got["file_name"] == "data.csv"
    assert got["sha256"] == hashlib.sha256(b"col1,col2\n1,2\n").hexdigest()
    logs = serving.output()
    assert token not in logs and acc.token not in logs
    assert "http_request" in logs


def test_port_in_use_is_a_clear_error(env: dict[str, str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_cli(env, "--json", "serve", "--port", str(port))
    assert r.code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in json.loads(r.stdout)["error"]


@pytest.mark.slow
def test_poll_logs_in_on_the_page_then_receives_and_pushes(
    env: dict[str, str], server: tuple[Sandbox, SandboxServer]
) -> None:
    """One process: web login, then its receive loop stores the user's message, so a push
    goes out without a catch-up pass; a held push is released by the loop when they write."""
    sb, _srv = server
    home = Path(env["ILINKBOT_HOME"])
    (home / "config.json").write_text(json.dumps({"poll_lease_seconds": 3, "reply_quota": 1}))
    token = token_of(env)
    serving = Serving(env, "--poll")
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=serving.url, timeout=20) as http:
            r = http.post("/push", content=b"x", headers=auth)
            assert r.status_code == 503  # nobody logged in yet
            assert http.post("/login/start", headers=auth).status_code == 200
            wait_until(
                lambda: http.get("/login/status", headers=auth).json()["state"] == "wait",
                10,
                "a QR code",
            )
            sb.scan()
            sb.confirm(OWNER)
            status = wait_until(
                lambda: (s := http.get("/login/status", headers=auth).json())["done"] and s,
                10,
                "login done",
            )
            bot_id = status["account"]
            store = Store.open(None, home=home)
            try:
                wait_until(lambda: store.lease_holder(bot_id) is not None, 15, "the poller")
                sb.user_says(OWNER, "hi")
                wait_until(
                    lambda: (p := store.get_peer(bot_id, OWNER)) is not None and p.context_token,
                    10,
                    "the message stored by the poller",
                )
                r = http.post("/push", content=b"one", headers=auth)
                assert r.status_code == 200 and r.json()["state"] == "delivered"
                r = http.post("/push", content=b"two", headers=auth)
                assert r.status_code == 202 and r.json()["state"] == "held"
                sb.user_says(OWNER, "again")  # the receive loop releases the held push
                wait_until(lambda: len(sb.delivered(OWNER)) == 2, 15, "the held push")
            finally:
                store.close()
    finally:
        code = serving.stop()
    assert code == 0, serving.output()
    assert [d["text"] for d in sb.delivered(OWNER)] == ["one", "two"]
    assert token not in serving.output()


@pytest.mark.slow
def test_poll_with_a_bot_runs_its_handlers_next_to_the_gateway(
    env: dict[str, str], server: tuple[Sandbox, SandboxServer]
) -> None:
    sb, srv = server
    login(sb, srv, Path(env["ILINKBOT_HOME"]))
    token = token_of(env)
    serving = Serving(env, "--poll", "--bot", str(ROOT / "tests" / "bots" / "echo_bot.py"))
    try:
        assert serving.info["poll"] is True
        sb.user_says(OWNER, "ping")
        wait_until(
            lambda: [d["text"] for d in sb.delivered(OWNER)] == ["echo: ping"],
            15,
            "the bot's reply",
        )
        with httpx.Client(base_url=serving.url, timeout=20) as http:
            r = http.post(f"/push?auth={token}", content=b"and a push")
            assert r.status_code == 200, r.text
    finally:
        code = serving.stop()
    assert code == 0, serving.output()
    assert [d["text"] for d in sb.delivered(OWNER)] == ["echo: ping", "and a push"]


def test_bot_without_poll_is_a_usage_error(env: dict[str, str]) -> None:
    r = run_cli(env, "--json", "serve", "--bot", "x:bot")
    assert r.code == 2 and "--poll" in json.loads(r.stdout)["error"]
