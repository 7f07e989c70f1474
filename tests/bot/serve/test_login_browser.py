"""The login page in headless Chromium, driven over the DevTools protocol, against
``ilinkbot serve`` and the sandbox over real HTTP.

Skipped when Chromium is missing, unless ``ILINKBOT_TEST_BROWSER_REQUIRED=1``
(``apt-get install chromium``; ``scripts/test.sh`` installs it when it can).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ilinkbot.bot.serve.weblogin import qr_data_url
from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from ilinkbot.store import Store
from tests.conftest import OWNER

from .test_process import Serving, token_of, wait_until

pytestmark: list[pytest.MarkDecorator] = [pytest.mark.slow]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = _chromium()
if CHROMIUM is None and os.environ.get("ILINKBOT_TEST_BROWSER_REQUIRED") != "1":
    pytestmark = [
        pytest.mark.slow,
        pytest.mark.skip(
            reason="chromium is not installed (apt-get install chromium); set "
            "ILINKBOT_TEST_BROWSER_REQUIRED=1 to make this a failure"
        ),
    ]


class Browser:
    """Headless Chromium with one page, spoken to over the DevTools websocket."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                "--window-size=480,820",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        wait_until(
            lambda: port_file.exists() and port_file.read_text().strip(),
            30,
            "chromium's DevTools port",
        )
        port = int(port_file.read_text().split()[0])
        pages = wait_until(
            lambda: [
                t
                for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json()
                if t.get("type") == "page"
            ],
            10,
            "a page target",
        )
        from websockets.sync.client import connect

        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(
            connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        )
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=30))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return dict(reply.get("result") or {})

    def eval(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_state(self, *states: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = self.eval("document.body ? document.body.dataset.state : null")
            if state in states:
                return str(state)
            if time.monotonic() > deadline:
                status = self.eval("document.getElementById('status').textContent")
                raise AssertionError(
                    f"page never reached {states}: state {state!r}, status {status!r}"
                )
            time.sleep(0.05)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def browser() -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.fail("ILINKBOT_TEST_BROWSER_REQUIRED=1 but chromium is not installed")
    profile = Path(tempfile.mkdtemp(prefix="ilinkbot-chromium-"))
    b = Browser(CHROMIUM, profile)
    try:
        yield b
    finally:
        b.close()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def server() -> Iterator[tuple[Sandbox, SandboxServer]]:
    sb = Sandbox(longpoll_seconds=0.5, qr_poll_seconds=0.5)
    with SandboxServer(sb) as srv:
        yield sb, srv


def test_login_page_shows_the_qr_takes_the_number_and_reaches_done(
    browser: Browser, server: tuple[Sandbox, SandboxServer], tmp_path: Path
) -> None:
    sb, srv = server
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILINKBOT_")}
    env.update(
        ILINKBOT_HOME=str(home),
        ILINKBOT_BASE_URL=srv.base_url,
        ILINKBOT_CDN_BASE_URL=srv.cdn_base_url,
        ILINKBOT_QR_POLL_INTERVAL="0.1",
        PYTHONPATH=str(Path(__file__).resolve().parents[3]),
    )
    token = token_of(env)
    serving = Serving(env)
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"{serving.url}/login?auth={token}")
        browser.wait_state("wait")
        wait_until(
            lambda: browser.eval("document.getElementById('qr').naturalWidth") > 100,
            10,
            "the QR image to load",
        )
        (qr,) = sb.qr_codes()
        link = browser.eval("document.getElementById('qrlink').textContent")
        assert qr["qrcode"] in link
        assert browser.eval("document.getElementById('qr').src") == qr_data_url(link)
        assert "auth=" not in browser.eval("location.href")  # the token left the address bar
        shot_qr = browser.screenshot(tmp_path / "login-qr.png")

        sb.scan()
        browser.wait_state("scanned")
        assert "Confirm" in browser.eval("document.getElementById('status').textContent")
        sb.require_verify_code("4711")
        browser.wait_state("verify_code")
        assert browser.eval("document.getElementById('codeform').hidden") is False
        browser.eval("document.getElementById('code').focus()")
        browser.call("Input.insertText", text="4711")  # typed, as a person would
        browser.eval("document.getElementById('codebtn').click()")
        browser.wait_state("scanned")
        sb.confirm(OWNER)
        browser.wait_state("done")
        text = browser.eval("document.getElementById('done').innerText")
        assert "Logged in" in text and OWNER in text
        assert browser.eval("document.getElementById('qrbox').hidden") is True
        shot = browser.screenshot(tmp_path / "login.png")
    finally:
        code = serving.stop()
    assert code == 0, serving.output()
    for path in (shot_qr, shot):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000
    print(f"\nlogin page screenshots: {shot_qr} {shot}")
    store = Store.open(None, home=home)
    try:
        (acc,) = store.list_accounts()
        assert acc.owner_user_id == OWNER and acc.state == "active"
    finally:
        store.close()
    assert token not in serving.output()
